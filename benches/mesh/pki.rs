//! The mesh certificates, made with `openssl` as the control plane would issue them: one CA and
//! a leaf per side, ECDSA P-256, the SPIFFE ID as the only name, usable as client and server.
//! Every proxy's mTLS pair uses the same two leaves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

pub const TRUST_DOMAIN: &str = "pilotfish.local";

/// The caller's side (`sa/client`) and the callee's (`sa/backend`).
pub struct Pki {
    pub ca: PathBuf,
    pub client: Leaf,
    pub backend: Leaf,
}

pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key in one file, as HAProxy's `crt` takes them.
    pub combined: PathBuf,
    pub identity: String,
}

impl Pki {
    pub fn create(dir: &Path) -> Result<Pki> {
        let ca = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(
            &format!("req -x509 {ec} -days 2 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"),
            &["-subj", "/CN=bench root", "-keyout", path(&ca_key), "-out", path(&ca)],
        )?;
        let leaf = |name: &str, account: &str| -> Result<Leaf> {
            let (key, csr, ext, cert) = (
                dir.join(format!("{name}.key")),
                dir.join(format!("{name}.csr")),
                dir.join(format!("{name}.ext")),
                dir.join(format!("{name}.pem")),
            );
            openssl(&format!("req {ec} -subj /"), &["-keyout", path(&key), "-out", path(&csr)])?;
            let identity = format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{account}");
            std::fs::write(
                &ext,
                format!("subjectAltName=critical,URI:{identity}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"),
            )?;
            let [csr, ca, ca_key, ext, out] = [&csr, &ca, &ca_key, &ext, &cert].map(|f| path(f));
            openssl(
                "x509 -req -CAcreateserial -days 1",
                &["-in", csr, "-CA", ca, "-CAkey", ca_key, "-extfile", ext, "-out", out],
            )?;
            let combined = dir.join(format!("{name}.combined.pem"));
            std::fs::write(&combined, [std::fs::read(&cert)?, std::fs::read(&key)?].concat())?;
            Ok(Leaf { cert, key, combined, identity })
        };
        Ok(Pki { client: leaf("client", "client")?, backend: leaf("backend", "backend")?, ca })
    }
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("the scratch directory's path is UTF-8")
}

/// `openssl` with the space-separated `words`, then `args` (which may hold spaces).
fn openssl(words: &str, args: &[&str]) -> Result<()> {
    let out =
        Command::new("openssl").args(words.split_whitespace()).args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("openssl {words}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
