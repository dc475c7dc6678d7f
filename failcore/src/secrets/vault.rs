//! The sealed-output store: the clear outputs of calls whose recorded output was redacted, encrypted
//! with the user's key (XChaCha20-Poly1305), so that replay can serve the exact value.
//!
//! An entry is found by a keyed hash of the *recorded* (redacted) output, so any trace that holds that
//! record (a resumed run, an exported copy) finds it; without the key neither the name nor the content of
//! an entry says anything. One file per entry, written to a temporary name and renamed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"FCS1";
const NONCE: usize = 24;

pub(crate) struct Vault {
    dir: PathBuf,
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
}

impl Vault {
    pub fn new(dir: PathBuf, master: &[u8; 32]) -> Vault {
        let enc = blake3::derive_key("failcore 2026-11 sealed outputs: encryption", master);
        let id_key = blake3::derive_key("failcore 2026-11 sealed outputs: entry names", master);
        Vault {
            dir,
            cipher: XChaCha20Poly1305::new(&enc.into()),
            id_key,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn id(&self, recorded: &[u8]) -> String {
        blake3::keyed_hash(&self.id_key, recorded).to_hex()[..40].to_owned()
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(&id[..2]).join(format!("{id}.sealed"))
    }

    /// Keeps `clear`, the output whose recorded form is `recorded`. Blocking I/O.
    pub fn put(&self, recorded: &[u8], clear: &[u8]) -> Result<(), String> {
        let id = self.id(recorded);
        let path = self.path(&id);
        if path.exists() {
            return Ok(());
        }
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: clear,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_owned())?;
        let parent = path.parent().unwrap_or(&self.dir);
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let tmp = parent.join(format!(".{id}.{}.tmp", std::process::id()));
        let mut bytes = Vec::with_capacity(MAGIC.len() + NONCE + sealed.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", path.display())
        })
    }

    /// The clear output whose recorded form is `recorded`, if this vault keeps it and it opens with this
    /// key. Blocking I/O.
    pub fn get(&self, recorded: &[u8]) -> Option<Vec<u8>> {
        let id = self.id(recorded);
        let path = self.path(&id);
        let bytes = std::fs::read(&path).ok()?;
        let body = bytes.strip_prefix(MAGIC.as_slice())?;
        if body.len() < NONCE {
            return None;
        }
        let (nonce, sealed) = body.split_at(NONCE);
        match self.cipher.decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: id.as_bytes(),
            },
        ) {
            Ok(clear) => Some(clear),
            Err(_) => {
                tracing::warn!(file = %path.display(), "a sealed output does not open with this key (another key, or tampered): the call executes instead");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_round_trip_only_with_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let v = Vault::new(tmp.path().to_path_buf(), &[5; 32]);
        v.put(b"\"[redacted:jwt:00]\"", b"\"eyJ.secret\"").unwrap();
        assert_eq!(v.get(b"\"[redacted:jwt:00]\"").unwrap(), b"\"eyJ.secret\"");
        assert!(v.get(b"\"other\"").is_none());
        let other = Vault::new(tmp.path().to_path_buf(), &[6; 32]);
        assert!(other.get(b"\"[redacted:jwt:00]\"").is_none());
        // Nothing in the directory is the clear value.
        for entry in walk(tmp.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(!bytes.windows(6).any(|w| w == b"secret"));
        }
        // A flipped byte does not open.
        let file = walk(tmp.path()).pop().unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        assert!(v.get(b"\"[redacted:jwt:00]\"").is_none());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
