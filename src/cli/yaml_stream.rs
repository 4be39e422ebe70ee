//! A multi-document YAML (or JSON) stream edited document by document: the text is split on
//! its document separators here, so a document nobody changes is written back byte for byte
//! (comments, quoting, layout), and only a changed one is serialized again — in the key order
//! it was written in, with new keys after the old ones (or in the place of a key they
//! replace), so the change reads as a change and undoing it gives back the same text.

use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};

/// One document of a stream.
pub struct Document<'a> {
    /// The separator line's `---` (empty for a first document without one).
    pub separator: &'a str,
    /// The rest: the text after `---` (the end of its line, usually) up to the next separator.
    pub text: &'a str,
}

impl Document<'_> {
    /// The document's value: `None` for one with no content (comments only, or empty).
    pub fn parse(&self) -> Result<Option<Yaml>, serde_yaml_ng::Error> {
        let value: Yaml = serde_yaml_ng::from_str(self.text)?;
        Ok((!value.is_null()).then_some(value))
    }

    /// The document with its content replaced by `value`, written in the document's own
    /// format: JSON if it was JSON, YAML otherwise.
    pub fn replaced(&self, value: &Yaml) -> Result<String, serde_json::Error> {
        let json = self.text.trim_start().starts_with('{');
        let body = if json {
            serde_json::to_string_pretty(value)? + "\n"
        } else {
            serde_yaml_ng::to_string(value).map_err(serde::ser::Error::custom)?
        };
        Ok(match self.separator {
            "" => body,
            separator => format!("{separator}\n{body}"),
        })
    }
}

/// The documents of `text`, in order: concatenating each one's separator and text gives
/// `text` back.
pub fn documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let (mut separator, mut start) = ("", 0);
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            if offset > 0 {
                documents.push(Document { separator, text: &text[start..offset] });
            }
            separator = &text[offset..offset + 3];
            start = offset + 3;
        }
        offset += line.len();
    }
    if offset > 0 {
        documents.push(Document { separator, text: &text[start..] });
    }
    documents
}

/// `new` as YAML, its mappings in the key order of the same mappings in `old`: keys `old`
/// has first, in its order (a key `old` has and `new` has not leaves its place to the first
/// key `new` adds), then the keys `new` adds (`name` first). Items of a list are matched by their `name`
/// where they have one (containers, volumes, env), by position otherwise.
pub fn ordered_like(new: &Json, old: Option<&Yaml>) -> Yaml {
    match new {
        Json::Object(fields) => {
            let old = old.and_then(Yaml::as_mapping);
            let known = |key: &str| old.is_some_and(|o| o.contains_key(key));
            // A new object reads as Kubernetes writes them: its `name` first.
            let name = fields.keys().filter(|k| *k == "name");
            let mut added = name.chain(fields.keys().filter(|k| *k != "name")).filter(|k| !known(k));
            let mut out = Mapping::new();
            for key in old.into_iter().flat_map(|o| o.keys()).filter_map(Yaml::as_str) {
                let key = match fields.contains_key(key) {
                    true => key,
                    false => match added.next() {
                        Some(replacing) => replacing,
                        None => continue,
                    },
                };
                let before = old.and_then(|o| o.get(key));
                out.insert(key.into(), ordered_like(&fields[key], before));
            }
            for key in added {
                out.insert(key.as_str().into(), ordered_like(&fields[key], None));
            }
            Yaml::Mapping(out)
        }
        Json::Array(items) => {
            let old = old.and_then(Yaml::as_sequence);
            let counterpart = |index: usize, item: &Json| {
                let old = old?;
                match item.get("name").and_then(Json::as_str) {
                    Some(name) => old.iter().find(|o| o.get("name").and_then(Yaml::as_str) == Some(name)),
                    None => old.get(index),
                }
            };
            Yaml::Sequence(
                items.iter().enumerate().map(|(i, item)| ordered_like(item, counterpart(i, item))).collect(),
            )
        }
        scalar => serde_yaml_ng::to_value(scalar).expect("a JSON scalar is a YAML scalar"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn documents_put_back_together_give_the_text_back() {
        for text in [
            "",
            "a: 1\n",
            "---\na: 1\n---\nb: 2\n",
            "# lead\na: 1\n--- # two\nb: 2\n---\n\n...\n",
            "a: |\n  ---x\n---b: not a separator\n--- {c: 3}\n",
        ] {
            let docs = documents(text);
            let joined: String = docs.iter().map(|d| format!("{}{}", d.separator, d.text)).collect();
            assert_eq!(joined, text);
        }
        let docs = documents("# lead\na: 1\n--- # two\nb: 2\n--- {c: 3}\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1].text, " # two\nb: 2\n");
        assert_eq!(docs[2].parse().unwrap().unwrap()["c"], 3);
        assert_eq!(documents("---\n# nothing\n")[0].parse().unwrap(), None);
    }

    #[test]
    fn a_changed_document_keeps_its_key_order_and_a_replaced_key_its_place() {
        let old: Yaml =
            serde_yaml_ng::from_str("name: web\nprobe:\n  tcpSocket: {port: 80}\n  period: 3\nimage: web\n")
                .unwrap();
        let new =
            json!({"name": "web", "image": "web", "probe": {"period": 3, "httpGet": {"port": 1}}, "env": []});
        let yaml = serde_yaml_ng::to_string(&ordered_like(&new, Some(&old))).unwrap();
        assert_eq!(yaml, "name: web\nprobe:\n  httpGet:\n    port: 1\n  period: 3\nimage: web\nenv: []\n");
    }

    #[test]
    fn list_items_are_matched_by_name() {
        let old: Yaml = serde_yaml_ng::from_str("- {name: a, x: 1, b: 2}\n").unwrap();
        let new = json!([{"name": "new", "z": 1, "a": 2}, {"name": "a", "b": 2, "x": 1}]);
        let yaml = serde_yaml_ng::to_string(&ordered_like(&new, Some(&old))).unwrap();
        assert_eq!(yaml, "- name: new\n  a: 2\n  z: 1\n- name: a\n  x: 1\n  b: 2\n");
    }
}
