//! The control plane's CA as the renew loop's [`Certify`]: `POST /v1/ca/certify` with this
//! sidecar's credentials, one replica per attempt, moving to the next after a failure (the
//! loop's backoff paces the attempts).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use pilotfish_api::client::{Client, ClientError, SharedClientCert, SharedRoots};
use pilotfish_api::wire::{CertifyRequest, CertifyResponse};

use super::renew::Certify;
use crate::source::managed::Managed;

/// The CA of every control-plane replica, tried in turn.
pub struct ControlPlaneCa {
    clients: Vec<Client>,
    next: AtomicUsize,
}

impl ControlPlaneCa {
    /// `roots` and `cert` as [`Managed::clients`].
    pub fn new(managed: &Managed, roots: &SharedRoots, cert: &SharedClientCert) -> ControlPlaneCa {
        ControlPlaneCa { clients: managed.clients(roots, cert), next: AtomicUsize::new(0) }
    }
}

impl Certify for ControlPlaneCa {
    type Error = ClientError;

    fn certify(&self, csr_pem: String) -> impl Future<Output = Result<CertifyResponse, ClientError>> + Send {
        let server = self.next.load(Ordering::Relaxed) % self.clients.len();
        let client = self.clients[server].clone();
        async move {
            let answer = client.certify(&CertifyRequest::new(csr_pem)).await;
            if answer.is_err() {
                self.next.store(server + 1, Ordering::Relaxed);
            }
            answer
        }
    }
}
