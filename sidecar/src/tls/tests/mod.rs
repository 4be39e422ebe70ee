//! Tests of mesh mTLS with real certificates (made here with rcgen: roots, intermediates and
//! leaves with SPIFFE URI SANs) over real loopback sockets.

mod credentials;
mod handshake;
mod openssl;
mod peer;
pub(crate) mod pki;
mod sniff;
