//! The CA's directory (`<data-dir>/ca/`): `root.pem`, `root.key`, `issuer.pem`, `issuer.key`.
//!
//! Keys are mode 0600 from the moment they exist, in a directory of mode 0700. A new CA is
//! written whole into a staging directory beside the final one and renamed into place, so a
//! crash leaves either no CA or a complete one, and of two processes starting at once exactly
//! one CA wins (the loser reads the winner's). The root key is kept so that the issuer can be
//! re-signed under the same root; neither key is ever served.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::CaError;
use super::generate::NewCa;

pub const ROOT_CERT: &str = "root.pem";
pub const ROOT_KEY: &str = "root.key";
pub const ISSUER_CERT: &str = "issuer.pem";
pub const ISSUER_KEY: &str = "issuer.key";

/// The stored issuer: its chain up to the root (PEM) and its key (PEM).
pub struct Stored {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

/// The CA stored in `dir`, or `None` when there is none yet (no directory, or an empty one).
pub fn read(dir: &Path) -> Result<Option<Stored>, CaError> {
    let empty = match fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => true,
        Err(e) => return Err(CaError::io(dir)(e)),
        Ok(mut entries) => entries.next().is_none(),
    };
    if empty {
        return Ok(None);
    }
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(CaError::io(path))
    };
    let mut chain = read(ISSUER_CERT)?;
    chain.extend(read(ROOT_CERT)?);
    Ok(Some(Stored { chain, key: read(ISSUER_KEY)? }))
}

/// Stores `ca` as `dir`, unless another process stored one first (then `Ok(false)`).
pub fn write_new(dir: &Path, ca: &NewCa) -> Result<bool, CaError> {
    let staging = staging_path(dir);
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(CaError::io(parent))?;
    }
    DirBuilder::new().mode(0o700).create(&staging).map_err(CaError::io(&staging))?;
    for (name, contents, mode) in [
        (ROOT_CERT, &ca.root_cert, 0o644),
        (ISSUER_CERT, &ca.issuer_cert, 0o644),
        (ROOT_KEY, &ca.root_key, 0o600),
        (ISSUER_KEY, &ca.issuer_key, 0o600),
    ] {
        write_file(&staging.join(name), contents.as_bytes(), mode)?;
    }
    sync_dir(&staging)?;
    match fs::rename(&staging, dir) {
        Ok(()) => {}
        // Another process renamed its CA into place first: keep that one.
        Err(e) if dir.is_dir() => {
            tracing::debug!(error = %e, dir = %dir.display(), "another process stored the CA first");
            fs::remove_dir_all(&staging).map_err(CaError::io(&staging))?;
            return Ok(false);
        }
        Err(e) => return Err(CaError::io(dir)(e)),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(true)
}

/// Unique per attempt, so two starting at once never write into each other's files.
fn staging_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", uuid::Uuid::new_v4()));
    dir.with_file_name(name)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(CaError::io(path))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(CaError::io(path))
}

fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(CaError::io(dir))
}
