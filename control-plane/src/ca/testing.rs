//! A CA for the tests of what sits on it: generated in memory, never stored.

use super::{generate, Ca, Keystore};

pub fn ca() -> Ca {
    let new = generate::generate().expect("a CA generates");
    let chain = new.issuer_cert + &new.root_cert;
    Ca::from_pem("a test CA", chain.as_bytes(), new.issuer_key.as_bytes(), Keystore::Supplied)
        .expect("a new CA opens")
}
