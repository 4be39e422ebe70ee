//! `pilotfish ca`: the mesh CA as the operator sees it — `status` (trust domain, certificate
//! lifetime, the roots with their fingerprints and expiry, the issuer's expiry, a rotation under
//! way), `bundle` (the roots' PEM, e.g. for `openssl verify -CAfile`) and `rotate` (a new root,
//! with no failed request; `--wait` follows it to the end).

use std::time::Duration;

use pilotfish_api::client::{Client, ClientError};
use pilotfish_api::wire::{CaStatus, RotateRequest, RotationPhase};

use super::table::Table;

/// How often `ca rotate --wait` looks at the rotation.
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Subcommand)]
pub enum CaAction {
    /// The trust domain, the certificates' lifetime, the roots and when each expires.
    Status,
    /// The PEM certificates of every root the mesh trusts (to stdout).
    Bundle,
    /// Rotate the root: add a new root, switch issuing to it once every sidecar trusts it, and
    /// retire the old root once every sidecar renewed and the overlap passed.
    Rotate {
        /// How long both roots stay trusted after the switch of issuer, at least (e.g. `10m`).
        #[arg(long)]
        overlap: Option<pilotfish_api::Duration>,
        /// Follow the rotation until the old root is retired, printing each phase.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn execute(api: &Client, action: CaAction) -> Result<(), ClientError> {
    match action {
        CaAction::Status => {
            let status = api.ca_status().await?;
            println!("trust domain:     {}", status.trust_domain);
            println!("certificate TTL:  {}s", status.cert_ttl_seconds);
            let authz_default = format!("{:?}", status.authz_default).to_lowercase();
            println!("authz default:    {authz_default}");
            println!("issuer expires:   {}", status.issuer_not_after);
            if let Some(rotation) = &status.rotation {
                println!("rotation:         {} since {}", phase(rotation.phase), rotation.phase_since);
                println!("  waiting for:    {}", rotation.waiting_for);
            }
            let mut table = Table::new(&["ROOT (SHA-256)", "EXPIRES", "ISSUING"]);
            for root in status.roots {
                table.row([root.fingerprint, root.not_after, if root.active { "yes" } else { "no" }.into()]);
            }
            print!("{table}");
        }
        CaAction::Bundle => print!("{}", api.ca_bundle().await?),
        CaAction::Rotate { overlap, wait } => {
            let status = api.ca_rotate(&RotateRequest { overlap }).await?;
            let Some(rotation) = &status.rotation else {
                println!("the rotation already ended");
                return Ok(());
            };
            println!("rotating to root {}", rotation.new_root);
            if wait {
                follow(api, status).await?;
            } else {
                println!("follow it with `pilotfish ca status`");
            }
        }
    }
    Ok(())
}

/// Prints each phase of the rotation and what it waits for, until it ends.
async fn follow(api: &Client, mut status: CaStatus) -> Result<(), ClientError> {
    let mut shown = None;
    while let Some(rotation) = &status.rotation {
        let now = (rotation.phase, rotation.waiting_for.clone());
        if shown.as_ref() != Some(&now) {
            println!("{}: waiting for {}", phase(rotation.phase), rotation.waiting_for);
            shown = Some(now);
        }
        tokio::time::sleep(POLL).await;
        status = api.ca_status().await?;
    }
    let root = status.roots.iter().find(|r| r.active).map_or("?", |r| r.fingerprint.as_str());
    println!("rotation done: every sidecar trusts and presents root {root}");
    Ok(())
}

fn phase(phase: RotationPhase) -> &'static str {
    match phase {
        RotationPhase::Distributing => "distributing the new root",
        RotationPhase::Renewing => "renewing under the new root",
    }
}
