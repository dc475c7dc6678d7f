//! Where the redaction key comes from: never from the store it protects.
//!
//! In order: the builder ([`SessionBuilder::redact_key`](crate::SessionBuilder::redact_key) or
//! [`redact_key_file`](crate::SessionBuilder::redact_key_file)), `FAILCORE_REDACT_KEY` (64 hex digits),
//! `FAILCORE_REDACT_KEY_FILE`, else the per-user key file `$XDG_CONFIG_HOME/failcore/redact.key`
//! (`~/.config/failcore/redact.key` when `XDG_CONFIG_HOME` is unset), created on first use with mode 0600.

use crate::Error;
use std::path::{Path, PathBuf};

/// The name of the key file in the per-user configuration directory.
pub const KEY_FILE: &str = "redact.key";

/// Where a key was given.
pub(crate) enum KeySource {
    Bytes([u8; 32]),
    File(PathBuf),
}

/// The per-user key file: `$XDG_CONFIG_HOME/failcore/redact.key`, else `$HOME/.config/failcore/redact.key`.
pub fn default_key_file() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| h.join(".config")))
        .map(|base| base.join("failcore").join(KEY_FILE))
}

/// Resolves the session's key, and the file it came from (where the default vault goes beside it).
/// `store_dir`: the directory of a JSONL store, which must not hold it.
pub(crate) fn resolve(
    given: Option<KeySource>,
    store_dir: Option<&Path>,
) -> Result<([u8; 32], Option<PathBuf>), Error> {
    if let Some(dir) = store_dir {
        refuse_legacy_key(dir)?;
    }
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let source = match given {
        Some(s) => s,
        None => match (var("FAILCORE_REDACT_KEY"), var("FAILCORE_REDACT_KEY_FILE")) {
            (Some(hex), _) => KeySource::Bytes(parse_hex(hex.trim()).ok_or_else(|| {
                Error::Config("FAILCORE_REDACT_KEY must be 64 hex digits (32 bytes)".into())
            })?),
            (None, Some(file)) => KeySource::File(PathBuf::from(file)),
            (None, None) => match default_key_file() {
                Some(file) => KeySource::File(file),
                None => {
                    tracing::warn!(
                        "no HOME or XDG_CONFIG_HOME and no redaction key given: this session uses a \
                         random key, so its redacted values cannot be compared with other runs' and \
                         its sealed outputs cannot be replayed by another process"
                    );
                    return Ok((random_key(), None));
                }
            },
        },
    };
    match source {
        KeySource::Bytes(k) => Ok((k, None)),
        KeySource::File(file) => {
            if let Some(dir) = store_dir {
                refuse_inside(&file, dir)?;
            }
            Ok((load_or_create(&file)?, Some(file)))
        }
    }
}

/// The key that older versions kept beside `runs/`: whoever copied the directory copied it too.
fn refuse_legacy_key(dir: &Path) -> Result<(), Error> {
    let legacy = dir.join(KEY_FILE);
    if legacy.exists() {
        let home = default_key_file()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "$XDG_CONFIG_HOME/failcore/redact.key".into());
        return Err(Error::Config(format!(
            "{} is a redaction key kept inside the trace store, where anyone who copies the store \
             copies it too. Move it out (`mv {} {home}`, which keeps the hashes of earlier runs \
             comparable), or delete it to start a new key; FailCore no longer reads a key from the \
             store. See docs/SECRETS.md.",
            legacy.display(),
            legacy.display(),
        )));
    }
    Ok(())
}

fn refuse_inside(file: &Path, dir: &Path) -> Result<(), Error> {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .ok()
            .map(|a| a.canonicalize().unwrap_or(a))
    };
    let in_store = match (file.parent().and_then(abs), abs(dir)) {
        (Some(parent), Some(dir)) => parent.starts_with(&dir),
        _ => false,
    };
    if in_store {
        return Err(Error::Config(format!(
            "the redaction key file {} is inside the trace store {}: keep it apart from the traces \
             it protects (see docs/SECRETS.md)",
            file.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

fn to_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a key file (64 hex digits, or 32 raw bytes), creating it (mode 0600, its directory 0700) when it
/// does not exist.
fn load_or_create(path: &Path) -> Result<[u8; 32], Error> {
    let io = |e: std::io::Error| Error::Config(format!("redaction key {}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(bytes) => {
            if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(raw);
            }
            return std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| parse_hex(s.trim()))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "redaction key {} must hold 64 hex digits (or 32 raw bytes)",
                        path.display()
                    ))
                });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent).map_err(io)?;
    }
    let key = random_key();
    // Written whole under a temporary name, then linked into place (which fails if another process got
    // there first): a reader never sees a half-written key.
    let tmp = path.with_file_name(format!(
        ".{KEY_FILE}.{}.{:x}.tmp",
        std::process::id(),
        u64::from_le_bytes(random_key()[..8].try_into().unwrap_or([0; 8]))
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = opts.open(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, format!("{}\n", to_hex(&key)).as_bytes())?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(file = %path.display(), "created a redaction key");
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
        Err(e) => Err(io(e)),
    }
}

pub(crate) fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        key = *blake3::hash(
            format!("{:?}{}", std::time::Instant::now(), std::process::id()).as_bytes(),
        )
        .as_bytes();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("cfg/failcore/redact.key");
        let a = load_or_create(&file).unwrap();
        let b = load_or_create(&file).unwrap();
        assert_eq!(a, b);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(parse_hex(text.trim()), Some(a));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&file, "not a key").unwrap();
        assert!(load_or_create(&file).is_err());
    }

    #[test]
    fn a_key_in_the_store_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        let err = resolve(Some(KeySource::File(store.join("k.key"))), Some(&store)).unwrap_err();
        assert!(err.to_string().contains("inside the trace store"), "{err}");
        std::fs::write(store.join(KEY_FILE), [1u8; 32]).unwrap();
        let err = resolve(Some(KeySource::Bytes([1; 32])), Some(&store)).unwrap_err();
        assert!(err.to_string().contains("Move it out"), "{err}");
    }
}
