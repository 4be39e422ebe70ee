//! The `Rollout` kind (pilotfish.io/v1alpha1): progressive delivery of a canary Service behind an
//! HTTPRoute. The control plane shifts the route's `backendRefs` weights from `stable` to
//! `canary` step by step, judges every analysis interval from the mesh's own telemetry, and on
//! failure compensates the completed steps (see the control plane's `rollout` module for the
//! saga itself).
//!
//! What a step means:
//! - `setWeight: N` gives the canary N% of the route's traffic (the stable Service the rest),
//!   then waits for an interval judged a success; N = 0 is not judged (nothing reaches the canary).
//! - `pause: D` holds the weights for D; the intervals in it are judged all the same.
//!
//! A rollout whose last step is not `setWeight: 100` ends with one: promotion always puts the
//! canary at 100% after an interval judged at that weight, so no data never promotes.

use serde::{Deserialize, Serialize};

use crate::field::FieldError;
use crate::{bounds, Duration};

/// The Gateway API group of the route a rollout shifts.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// Steps of one rollout, at most.
pub const MAX_STEPS: u64 = 1024;
/// The shortest analysis interval: the telemetry's shortest window.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The longest analysis interval: the telemetry's longest window.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The most failed intervals a rollout may be told to tolerate before aborting.
pub const MAX_FAILURE_LIMIT: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The HTTPRoute whose `backendRefs` are shifted.
    pub target_ref: RolloutTarget,
    /// The Service serving now.
    #[schema(min_length = 1)]
    pub stable: String,
    /// The Service being rolled out; a new one on re-apply starts a new rollout.
    #[schema(min_length = 1)]
    pub canary: String,
    /// Each step sets the canary's weight or pauses.
    #[schema(max_items = 1024)]
    pub steps: Vec<RolloutStep>,
    #[serde(default)]
    pub analysis: Analysis,
    #[serde(default)]
    pub rollback: Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub kind: RolloutTargetKind,
    pub name: String,
    /// The route's namespace: the rollout's own (the only one accepted when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a rollout can shift: an HTTPRoute's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RolloutTargetKind {
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
}

/// Exactly one of `setWeight` or `pause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStep {
    /// The canary's share in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub set_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,
}

/// A step as the saga runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SetWeight(u32),
    Pause(Duration),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct Analysis {
    /// How long each judged interval is: 5s to 1h (the telemetry's windows).
    #[serde(default = "thirty_seconds")]
    #[schema(default = thirty_seconds)]
    pub interval: Duration,
    #[serde(default)]
    pub success_rate: SuccessRate,
    /// The canary's p99 latency over an interval must not be above this (absent: not judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<LatencyP99>,
    /// Requests per interval below which the interval has no data.
    #[serde(default = "twenty")]
    #[schema(default = twenty, minimum = 0, maximum = 1_000_000)]
    pub min_requests: u32,
    /// Failed intervals that abort the rollout.
    #[serde(default = "two")]
    #[schema(default = two, minimum = 1, maximum = 1000)]
    pub failure_limit: u32,
    /// What an interval without data does; no data never promotes.
    #[serde(default)]
    pub on_no_data: OnNoData,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: thirty_seconds(),
            success_rate: SuccessRate::default(),
            latency_p99: None,
            min_requests: twenty(),
            failure_limit: two(),
            on_no_data: OnNoData::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct SuccessRate {
    /// Percent of non-5xx responses at the canary, at least.
    #[schema(minimum = 0, maximum = 100)]
    pub min: f64,
}

impl Default for SuccessRate {
    fn default() -> Self {
        Self { min: 99.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyP99 {
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnNoData {
    /// Pause the rollout until someone resumes (or aborts) it.
    #[default]
    Pause,
    /// Abort the rollout, as failed analysis does.
    Abort,
    /// Stay on the step and judge the next interval.
    Continue,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(default)]
pub struct Rollback {
    #[serde(default)]
    pub mode: RollbackMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RollbackMode {
    /// All traffic back to the stable Service at once.
    #[default]
    Immediate,
    /// The completed weight steps undone in reverse, one analysis interval apart.
    Gradual,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn twenty() -> u32 {
    20
}

fn two() -> u32 {
    2
}

impl RolloutStep {
    /// The step, once validated (exactly one of the two is set).
    pub fn step(&self) -> Step {
        match (self.set_weight, self.pause) {
            (Some(weight), _) => Step::SetWeight(weight),
            (None, pause) => Step::Pause(pause.unwrap_or_default()),
        }
    }
}

impl RolloutSpec {
    pub fn validate(&self) -> Result<(), FieldError> {
        let t = &self.target_ref;
        if t.group.as_deref().is_some_and(|g| g != GATEWAY_GROUP) {
            return Err(FieldError::new(
                "spec.targetRef.group",
                format!(
                    "a rollout shifts an HTTPRoute of {GATEWAY_GROUP}; leave the group out or write that"
                ),
            ));
        }
        crate::document::validate_name(&t.name).map_err(|r| FieldError::new("spec.targetRef.name", r))?;
        if let Some(namespace) = &t.namespace {
            crate::document::validate_name(namespace)
                .map_err(|r| FieldError::new("spec.targetRef.namespace", r))?;
        }
        crate::document::validate_name(&self.stable).map_err(|r| FieldError::new("spec.stable", r))?;
        crate::document::validate_name(&self.canary).map_err(|r| FieldError::new("spec.canary", r))?;
        if self.stable == self.canary {
            return Err(FieldError::new(
                "spec.canary",
                format!("is the stable Service {:?} too: name the Service being rolled out", self.stable),
            ));
        }
        if self.steps.is_empty() {
            return Err(FieldError::new("spec.steps", "at least one step: setWeight or pause"));
        }
        if self.steps.len() as u64 > MAX_STEPS {
            let reason = format!("at most {MAX_STEPS} steps, not {}", self.steps.len());
            return Err(FieldError::new("spec.steps", reason));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("spec.steps[{i}]");
            match (step.set_weight, step.pause) {
                (Some(weight), None) => bounds::count(&format!("{field}.setWeight"), weight.into(), 0, 100)?,
                (None, Some(pause)) => bounds::duration(
                    &format!("{field}.pause"),
                    pause,
                    bounds::MIN_DURATION,
                    bounds::MAX_DURATION,
                )?,
                (Some(_), Some(_)) => {
                    return Err(FieldError::new(
                        field,
                        "either setWeight or pause, not both: make them two steps",
                    ))
                }
                (None, None) => return Err(FieldError::new(field, "a step needs setWeight or pause")),
            }
        }
        let a = &self.analysis;
        bounds::duration("spec.analysis.interval", a.interval, MIN_INTERVAL, MAX_INTERVAL)?;
        let min = a.success_rate.min;
        if !(0.0..=100.0).contains(&min) {
            return Err(FieldError::new(
                "spec.analysis.successRate.min",
                format!("must be 0-100 (percent), not {min}"),
            ));
        }
        if let Some(p99) = &a.latency_p99 {
            bounds::duration(
                "spec.analysis.latencyP99.max",
                p99.max,
                bounds::MIN_DURATION,
                bounds::MAX_DURATION,
            )?;
        }
        bounds::count("spec.analysis.minRequests", a.min_requests.into(), 0, bounds::MAX_COUNT)?;
        bounds::count("spec.analysis.failureLimit", a.failure_limit.into(), 1, MAX_FAILURE_LIMIT)?;
        Ok(())
    }

    /// What the spec must agree with in the rollout's own `namespace`: the route is there.
    pub fn validate_in(&self, namespace: &str) -> Result<(), FieldError> {
        match &self.target_ref.namespace {
            Some(other) if other != namespace => Err(FieldError::new(
                "spec.targetRef.namespace",
                format!(
                    "{other:?} is not the rollout's own namespace {namespace:?}: a rollout shifts a route \
                     of its own namespace; leave the field out or apply the rollout in {other:?}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The steps as the saga runs them: ending with the canary at 100%.
    pub fn plan(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self.steps.iter().map(RolloutStep::step).collect();
        let last_weight = steps.iter().rev().find_map(|s| match s {
            Step::SetWeight(w) => Some(*w),
            Step::Pause(_) => None,
        });
        if last_weight != Some(100) {
            steps.push(Step::SetWeight(100));
        }
        steps
    }

    /// The namespace of the route, for a rollout in `namespace`.
    pub fn route_namespace<'a>(&'a self, namespace: &'a str) -> &'a str {
        self.target_ref.namespace.as_deref().unwrap_or(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_stream, Resource};

    const EXAMPLE: &str = include_str!("../../examples/rollout.yaml");

    fn doc(spec: &str) -> String {
        format!(
            "apiVersion: pilotfish.io/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  targetRef: {{kind: HTTPRoute, name: web}}\n  stable: web-v1\n  canary: web-v2\n{spec}"
        )
    }

    #[test]
    fn the_example_parses_with_its_numbers() {
        let resources = parse_stream("rollout.yaml", EXAMPLE).unwrap();
        let Resource::Rollout(r) = &resources[0] else { panic!("{resources:?}") };
        let a = &r.spec.analysis;
        assert_eq!(a.interval, Duration::from_secs(10));
        assert_eq!((a.success_rate.min, a.min_requests, a.failure_limit), (99.0, 20, 2));
        assert_eq!(a.latency_p99.as_ref().map(|l| l.max), Some(Duration::from_millis(500)));
        assert_eq!(a.on_no_data, OnNoData::Pause);
        assert_eq!(r.spec.rollback.mode, RollbackMode::Immediate);
        assert_eq!(r.spec.steps[1].step(), Step::Pause(Duration::from_secs(30)));
        // Round trip through the stored JSON.
        let again = parse_stream("stored", &resources[0].to_json().to_string()).unwrap();
        assert_eq!(again, resources);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let resources = parse_stream("f", &doc("  steps: [{setWeight: 50}]\n")).unwrap();
        let Resource::Rollout(r) = &resources[0] else { panic!() };
        assert_eq!(r.spec.analysis, Analysis::default());
        assert_eq!(r.spec.analysis.interval, Duration::from_secs(30));
        assert_eq!(r.spec.analysis.on_no_data, OnNoData::Pause);
        assert_eq!(r.spec.rollback.mode, RollbackMode::Immediate);
    }

    #[test]
    fn the_plan_always_ends_with_the_canary_at_100() {
        let plan = |steps: &str| {
            let resources = parse_stream("f", &doc(&format!("  steps: {steps}\n"))).unwrap();
            let Resource::Rollout(r) = &resources[0] else { panic!() };
            r.spec.plan()
        };
        assert_eq!(plan("[{setWeight: 10}]"), [Step::SetWeight(10), Step::SetWeight(100)]);
        assert_eq!(plan("[{setWeight: 100}]"), [Step::SetWeight(100)]);
        let pause = Step::Pause(Duration::from_secs(5));
        assert_eq!(plan("[{setWeight: 100}, {pause: 5s}]"), [Step::SetWeight(100), pause]);
        assert_eq!(plan("[{pause: 5s}]"), [pause, Step::SetWeight(100)]);
        assert_eq!(
            plan("[{setWeight: 100}, {setWeight: 0}]"),
            [Step::SetWeight(100), Step::SetWeight(0), Step::SetWeight(100)]
        );
    }

    #[test]
    fn each_mistake_is_refused_naming_its_field() {
        let cases = [
            ("  steps: []\n", "spec.steps", "at least one"),
            ("  steps: [{setWeight: 101}]\n", "spec.steps[0].setWeight", "0-100, not 101"),
            ("  steps: [{setWeight: -1}]\n", "spec.steps[0].setWeight", ""),
            ("  steps: [{setWeight: 10, pause: 1s}]\n", "spec.steps[0]", "not both"),
            ("  steps: [{}]\n", "spec.steps[0]", "setWeight or pause"),
            ("  steps: [{pause: 0s}]\n", "spec.steps[0].pause", "between 1ms and 24h"),
            ("  steps: [{pause: 25h}]\n", "spec.steps[0].pause", "between 1ms and 24h"),
            ("  steps: [{pause: 30}]\n", "spec.steps[0].pause", ""),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {interval: 4999ms}\n",
                "spec.analysis.interval",
                "between 5s and 1h",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {interval: 3601s}\n",
                "spec.analysis.interval",
                "between 5s and 1h",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {successRate: {min: 100.01}}\n",
                "spec.analysis.successRate.min",
                "0-100",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {successRate: {min: -0.1}}\n",
                "spec.analysis.successRate.min",
                "0-100",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {successRate: {min: .nan}}\n",
                "spec.analysis.successRate.min",
                "0-100",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {successRate: {minimum: 99}}\n",
                "spec.analysis.successRate",
                "",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {latencyP99: {max: 0ms}}\n",
                "spec.analysis.latencyP99.max",
                "between 1ms",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {latencyP99: {max: 25h}}\n",
                "spec.analysis.latencyP99.max",
                "between 1ms",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {minRequests: 1000001}\n",
                "spec.analysis.minRequests",
                "0-1000000",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {failureLimit: 0}\n",
                "spec.analysis.failureLimit",
                "1-1000, not 0",
            ),
            (
                "  steps: [{setWeight: 1}]\n  analysis: {failureLimit: 1001}\n",
                "spec.analysis.failureLimit",
                "1-1000",
            ),
            ("  steps: [{setWeight: 1}]\n  analysis: {onNoData: promote}\n", "spec.analysis.onNoData", ""),
            ("  steps: [{setWeight: 1}]\n  rollback: {mode: slow}\n", "spec.rollback.mode", ""),
        ];
        for (spec, field, reason) in cases {
            let err = parse_stream("f", &doc(spec)).unwrap_err();
            assert_eq!(err.field, field, "{spec}: {err}");
            assert!(err.reason.contains(reason), "{spec}: {err}");
            assert_eq!(err.object.as_deref(), Some("Rollout default/web"), "{err}");
        }
        let many = vec!["{setWeight: 1}"; 1025].join(", ");
        let err = parse_stream("f", &doc(&format!("  steps: [{many}]\n"))).unwrap_err();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("spec.steps", "at most 1024 steps, not 1025"));

        let whole =
            |from: &str, to: &str| parse_stream("f", &doc("  steps: [{setWeight: 1}]\n").replace(from, to));
        let err = whole("canary: web-v2", "canary: web-v1").unwrap_err();
        assert_eq!(err.field, "spec.canary", "{err}");
        let err = whole("canary: web-v2", "canary: Web").unwrap_err();
        assert_eq!(err.field, "spec.canary", "{err}");
        let err = whole("kind: HTTPRoute", "kind: Service").unwrap_err();
        assert_eq!(err.field, "spec.targetRef.kind", "{err}");
        let err = whole("kind: HTTPRoute,", "kind: HTTPRoute, group: example.com,").unwrap_err();
        assert_eq!(err.field, "spec.targetRef.group", "{err}");
        let err = whole("name: web}\n  stable", "name: web, namespace: shop}\n  stable").unwrap_err();
        assert_eq!(err.field, "spec.targetRef.namespace", "{err}");
        assert!(err.reason.contains("\"shop\" is not the rollout's own namespace \"default\""), "{err}");
        assert_eq!(err.object.as_deref(), Some("Rollout default/web"), "{err}");
        whole("name: web}\n  stable", "name: web, namespace: default}\n  stable").unwrap();
        let in_shop = doc("  steps: [{setWeight: 1}]\n")
            .replace("metadata: {name: web}", "metadata: {name: web, namespace: shop}")
            .replace("name: web}\n  stable", "name: web, namespace: shop}\n  stable");
        parse_stream("f", &in_shop).unwrap();
        let err = whole("  stable: web-v1\n", "").unwrap_err();
        assert!(err.reason.contains("stable"), "{err}");
    }

    #[test]
    fn the_edges_of_each_range_are_accepted() {
        let many = vec!["{setWeight: 0}"; 1024].join(", ");
        for spec in [
            "  steps: [{setWeight: 0}, {setWeight: 100}, {pause: 1ms}, {pause: 24h}]\n  analysis: {interval: 5s, successRate: {min: 0}, latencyP99: {max: 1ms}, minRequests: 0, failureLimit: 1, onNoData: abort}\n".to_owned(),
            "  steps: [{setWeight: 1}]\n  analysis: {interval: 1h, successRate: {min: 100}, latencyP99: {max: 24h}, minRequests: 1000000, failureLimit: 1000, onNoData: continue}\n  rollback: {mode: gradual}\n".to_owned(),
            format!("  steps: [{many}]\n"),
        ] {
            parse_stream("f", &doc(&spec)).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
    }
}
