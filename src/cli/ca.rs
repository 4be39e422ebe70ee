//! `pilotfish ca`: the mesh CA as the operator sees it — `status` (trust domain, certificate
//! lifetime, the roots with their fingerprints and expiry, the issuer's expiry) and `bundle`
//! (the roots' PEM, e.g. for `openssl verify -CAfile`).

use pilotfish_api::client::{Client, ClientError};

use super::table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum CaAction {
    /// The trust domain, the certificates' lifetime, the roots and when each expires.
    Status,
    /// The PEM certificates of every root the mesh trusts (to stdout).
    Bundle,
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
            let mut table = Table::new(&["ROOT (SHA-256)", "EXPIRES"]);
            for root in status.roots {
                table.row([root.fingerprint, root.not_after]);
            }
            print!("{table}");
        }
        CaAction::Bundle => print!("{}", api.ca_bundle().await?),
    }
    Ok(())
}
