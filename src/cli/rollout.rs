//! `pilotfish rollout status|pause|resume|abort|promote NAME`: progressive delivery from the
//! command line, over `/v1/rollouts`. `status` prints where the saga is — phase, step, the
//! weights it wrote, failures against the limit, why it paused or aborted — and the latest
//! verdicts with the numbers they were judged on; `-o json|yaml` prints the API's status.

use pilotfish_api::client::Client;
use pilotfish_api::wire::{RolloutAction, RolloutStatus, Verdict};

use super::client::{explain, print_sorted, Output};
use super::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Where a rollout is (every rollout without NAME): phase, step, weights, verdicts.
    Status {
        name: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Hold the current step and weights until `resume`.
    Pause(Target),
    /// Go on from a pause (after an abort: run the rollout again from its first step).
    Resume(Target),
    /// Give up: compensate every completed step (`rollback.mode`: at once, or step by step).
    Abort(Target),
    /// Skip the remaining steps and analysis: the canary takes all the traffic now.
    Promote(Target),
}

#[derive(Debug, clap::Args)]
pub struct Target {
    name: String,
    #[arg(short, long, default_value = "default")]
    namespace: String,
}

pub async fn execute(api: &Client, command: RolloutCommand) -> anyhow::Result<()> {
    let (action, target) = match command {
        RolloutCommand::Status { name: Some(name), namespace, output } => {
            let status = api.rollout(&namespace, &name).await.map_err(explain)?;
            return match output {
                Output::Json => print_sorted(&status, false),
                Output::Yaml => print_sorted(&status, true),
                Output::Table => {
                    print!("{}", describe(&status));
                    Ok(())
                }
            };
        }
        RolloutCommand::Status { name: None, output, .. } => {
            let list = api.rollouts().await.map_err(explain)?;
            return match output {
                Output::Json => print_sorted(&list.items, false),
                Output::Yaml => print_sorted(&list.items, true),
                Output::Table => {
                    let mut table =
                        Table::new(&["NAMESPACE", "NAME", "PHASE", "STEP", "STABLE", "CANARY", "MESSAGE"]);
                    for s in &list.items {
                        table.row([
                            s.namespace.clone(),
                            s.name.clone(),
                            format!("{:?}", s.phase),
                            format!("{}/{}", step_shown(s), s.steps),
                            format!("{} {}%", s.stable, s.stable_weight),
                            format!("{} {}%", s.canary, s.canary_weight),
                            s.message.clone(),
                        ]);
                    }
                    print!("{table}");
                    Ok(())
                }
            };
        }
        RolloutCommand::Pause(t) => (RolloutAction::Pause, t),
        RolloutCommand::Resume(t) => (RolloutAction::Resume, t),
        RolloutCommand::Abort(t) => (RolloutAction::Abort, t),
        RolloutCommand::Promote(t) => (RolloutAction::Promote, t),
    };
    let status = api.rollout_action(&target.namespace, &target.name, action).await.map_err(explain)?;
    println!(
        "Rollout {}/{} {}: {:?}, {} {}% / {} {}%",
        status.namespace,
        status.name,
        past(action),
        status.phase,
        status.stable,
        status.stable_weight,
        status.canary,
        status.canary_weight
    );
    Ok(())
}

fn past(action: RolloutAction) -> &'static str {
    match action {
        RolloutAction::Pause => "paused",
        RolloutAction::Resume => "resumed",
        RolloutAction::Abort => "aborted",
        RolloutAction::Promote => "promoted",
    }
}

/// The step as people count: 1-based, and the count once it has ended.
fn step_shown(s: &RolloutStatus) -> u64 {
    (s.step + 1).min(s.steps)
}

/// `status NAME` as text: a few lines, then the verdicts as a table.
fn describe(s: &RolloutStatus) -> String {
    let mut out = format!("Rollout:  {}/{} (route {})\n", s.namespace, s.name, s.route);
    out += &format!("Phase:    {:?}, step {} of {}\n", s.phase, step_shown(s), s.steps);
    out += &format!("Weights:  {} {}%, {} {}%\n", s.stable, s.stable_weight, s.canary, s.canary_weight);
    out += &format!("Failures: {} of {} allowed\n", s.failures, s.failure_limit);
    if !s.message.is_empty() {
        out += &format!("Message:  {}\n", s.message);
    }
    if s.verdicts.is_empty() {
        out += "Verdicts: none yet\n";
        return out;
    }
    out += "Verdicts (latest first):\n";
    let mut table = Table::new(&["AT", "STEP", "RESULT", "REQUESTS", "SUCCESS", "P99", "REASON"]);
    for v in &s.verdicts {
        table.row(verdict_cells(v));
    }
    out + &table.to_string()
}

fn verdict_cells(v: &Verdict) -> [String; 7] {
    [
        v.at.clone(),
        (v.step + 1).to_string(),
        serde_json::to_value(v.result).ok().and_then(|r| r.as_str().map(str::to_owned)).unwrap_or_default(),
        v.requests.to_string(),
        v.success_rate.map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0)),
        v.p99_ms.map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
        v.reason.clone(),
    ]
}
