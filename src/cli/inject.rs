//! `pilotfish inject` and `pilotfish uninject`: the sidecar added to (or taken out of) the
//! workloads of a manifest stream, by the same mutation the control plane's admission webhook
//! applies (`pilotfish_control_plane::inject`). No cluster needed: the control plane's
//! address, the image and the proxy's resources have documented defaults. Documents that are
//! not workloads, or need no change, are written back byte for byte ([`super::yaml_stream`]).
//! A `Namespace` in the stream lends its `pilotfish.io/*` annotations to the workloads in it,
//! as the webhook's namespace lookup does in a cluster.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use pilotfish_control_plane::inject::settings::{self, Annotations, Options, Resources};
use pilotfish_control_plane::inject::{self, Outcome};
use serde_json::Value;

use super::yaml_stream::{documents, ordered_like};

/// Where the manifests come from.
#[derive(Debug, clap::Args)]
pub struct Input {
    /// The manifests (multi-document YAML, JSON, or a `List`); `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    injector: InjectorFlags,
}

/// What the sidecar is injected with: the same flags for `pilotfish inject` and for the
/// control plane's webhook.
#[derive(Debug, clap::Args)]
pub struct InjectorFlags {
    /// The control plane's API as the proxies reach it.
    #[arg(long, value_name = "URL", default_value = settings::DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// The Pilotfish image of the proxy and init containers (annotation `pilotfish.io/image`
    /// overrides it per pod).
    #[arg(long, default_value_t = settings::default_image())]
    image: String,
    /// The proxy's CPU request (a Kubernetes quantity; `pilotfish.io/proxy-cpu-request`
    /// overrides it per pod).
    #[arg(long, value_name = "QUANTITY", default_value = settings::DEFAULT_CPU_REQUEST, value_parser = quantity)]
    proxy_cpu_request: String,
    /// The proxy's memory request.
    #[arg(long, value_name = "QUANTITY", default_value = settings::DEFAULT_MEMORY_REQUEST, value_parser = quantity)]
    proxy_memory_request: String,
    /// The proxy's CPU limit (none by default: CPU throttling would show as tail latency).
    #[arg(long, value_name = "QUANTITY", value_parser = quantity)]
    proxy_cpu_limit: Option<String>,
    /// The proxy's memory limit.
    #[arg(long, value_name = "QUANTITY", default_value = settings::DEFAULT_MEMORY_LIMIT, value_parser = quantity)]
    proxy_memory_limit: String,
}

impl InjectorFlags {
    pub fn into_options(self) -> Options {
        Options {
            control_plane: self.control_plane,
            image: self.image,
            resources: Resources {
                cpu_request: Some(self.proxy_cpu_request),
                memory_request: Some(self.proxy_memory_request),
                cpu_limit: self.proxy_cpu_limit,
                memory_limit: Some(self.proxy_memory_limit),
            },
        }
    }
}

fn quantity(text: &str) -> Result<String, String> {
    match settings::is_quantity(text) {
        true => Ok(text.to_owned()),
        false => Err("not a Kubernetes quantity (e.g. 100m, 64Mi, 1Gi)".to_owned()),
    }
}

pub fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let InjectArgs { input, injector } = args;
    let options = injector.into_options();
    edit(&input, |object, kind, namespaces| {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .and_then(|ns| namespaces.get(ns))
            .cloned()
            .unwrap_or_default();
        Ok(match inject::inject(object, kind, &options, &namespace)? {
            Outcome::Injected { warnings } => Some(warnings),
            Outcome::HostNetwork => {
                let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
                eprintln!("Warning: {kind} {name}: {}", inject::HOST_NETWORK);
                None
            }
            Outcome::AlreadyInjected | Outcome::OptedOut | Outcome::NotAWorkload => None,
        })
    })
}

pub fn run_uninject(input: Input) -> anyhow::Result<()> {
    edit(&input, |object, kind, _| Ok(inject::uninject(object, kind)?.then(Vec::new)))
}

/// What one object's edit did: `None` when it left the object alone, or the warnings.
type Edited = Result<Option<Vec<String>>, inject::InjectError>;

/// Reads the stream, edits each object (a `List`'s items one by one) with `edit`, and prints
/// the stream with the edited documents; all or nothing: an error prints nothing.
fn edit(
    input: &Input,
    edit: impl Fn(&mut Value, &str, &BTreeMap<String, Annotations>) -> Edited,
) -> anyhow::Result<()> {
    let text = read(&input.file)?;
    let source = match input.file.as_os_str() == "-" {
        true => "stdin".to_owned(),
        false => input.file.display().to_string(),
    };
    let docs = documents(&text);
    let parsed = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| doc.parse().with_context(|| format!("{source}: document {}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let as_json = |yaml: &serde_yaml_ng::Value| serde_json::to_value(yaml);
    let mut objects = Vec::new();
    for yaml in &parsed {
        objects.push(yaml.as_ref().map(as_json).transpose()?);
    }
    let namespaces = namespace_annotations(objects.iter().flatten());
    let mut out = String::with_capacity(text.len());
    for (i, (doc, (yaml, object))) in docs.iter().zip(parsed.iter().zip(objects)).enumerate() {
        let (Some(yaml), Some(mut object)) = (yaml, object) else {
            out.push_str(doc.separator);
            out.push_str(doc.text);
            continue;
        };
        let mut changed = false;
        for (item, describe) in items(&mut object) {
            let kind = item.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
            let context = format!("{source}: document {}{describe} ({})", i + 1, name(item, &kind));
            if let Some(warnings) = edit(item, &kind, &namespaces).with_context(|| context.clone())? {
                changed = true;
                for warning in warnings {
                    eprintln!("Warning: {context}: {warning}");
                }
            }
        }
        if changed {
            out.push_str(&doc.replaced(&ordered_like(&object, Some(yaml)))?);
        } else {
            out.push_str(doc.separator);
            out.push_str(doc.text);
        }
    }
    print!("{out}");
    Ok(())
}

/// The objects of a document: the document, or the items of a `List` (and of `PodList`,
/// `DeploymentList`..., as the API lists them), each with how to name it in messages.
fn items(object: &mut Value) -> Vec<(&mut Value, String)> {
    let is_list = object.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
        && object.get("items").is_some_and(Value::is_array);
    if is_list {
        let items = object["items"].as_array_mut().expect("checked above");
        return items.iter_mut().enumerate().map(|(i, item)| (item, format!(", item {}", i + 1))).collect();
    }
    vec![(object, String::new())]
}

/// The annotations of each `Namespace` in the stream, by name.
fn namespace_annotations<'a>(objects: impl Iterator<Item = &'a Value>) -> BTreeMap<String, Annotations> {
    let mut namespaces = BTreeMap::new();
    let mut visit = |object: &Value| {
        if object.get("kind").and_then(Value::as_str) != Some("Namespace") {
            return;
        }
        let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else { return };
        let annotations = object
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        namespaces.insert(name.to_owned(), annotations);
    };
    for object in objects {
        match object.get("items").and_then(Value::as_array) {
            Some(items) => items.iter().for_each(&mut visit),
            None => visit(object),
        }
    }
    namespaces
}

/// `Kind namespace/name` of an object, for messages.
fn name(object: &Value, kind: &str) -> String {
    let field = |f: &str| object.pointer(&format!("/metadata/{f}")).and_then(Value::as_str);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_owned(),
    }
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}
