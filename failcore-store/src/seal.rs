//! Signed checkpoints: an Ed25519 signature over the chain head, written into the run every N records or T
//! seconds and before `run_end`, so that a verifier holding the public key detects a recomputed chain.
//!
//! A `checkpoint` record with `seq` = s and `prev` = p in run R carries `key` (the signer's public key, hex)
//! and `sig` (hex), the signature of [`message`]`(R, s, p)`: "record s-1 of run R hashes to p", and through
//! the chain, every record before it. The private key never enters the trace.

use crate::record::Checkpoint;
use crate::StoreError;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the journal writes a checkpoint when no other setting is given: every 1,000 records...
pub const DEFAULT_EVERY_RECORDS: u64 = 1000;
/// ...or at the first record after one second without a checkpoint.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(1);

/// The environment variable that holds a signing key (64 hex digits: the Ed25519 secret seed).
pub const KEY_ENV: &str = "FAILCORE_SIGNING_KEY";
/// The environment variable that names a file holding a signing key.
pub const KEY_FILE_ENV: &str = "FAILCORE_SIGNING_KEY_FILE";

/// The bytes a checkpoint signs: a domain tag, the run id, the checkpoint's seq and its `prev`.
pub fn message(run: &str, seq: u64, prev: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + run.len() + prev.len());
    m.extend_from_slice(b"failcore/checkpoint/v1\0");
    m.extend_from_slice(run.as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev.as_bytes());
    m
}

/// A key that signs checkpoints. Debug output never shows the secret.
#[derive(Clone)]
pub struct SealKey {
    key: SigningKey,
    public_hex: String,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("public", &self.public_hex)
            .finish()
    }
}

impl SealKey {
    /// A key from its 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> SealKey {
        let key = SigningKey::from_bytes(&seed);
        let public_hex = hex(key.verifying_key().as_bytes());
        SealKey { key, public_hex }
    }

    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<SealKey, StoreError> {
        let seed = unhex::<32>(text.trim()).ok_or_else(|| {
            StoreError::Backend(
                "a signing key is 64 hex digits (the 32-byte Ed25519 secret seed)".into(),
            )
        })?;
        Ok(SealKey::from_seed(seed))
    }

    /// A key read from a file holding 64 hex digits.
    pub fn from_file(path: &Path) -> Result<SealKey, StoreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::io(path.display().to_string(), e))?;
        SealKey::from_hex(&text)
            .map_err(|e| StoreError::Backend(format!("signing key file {}: {e}", path.display())))
    }

    /// The key named by `FAILCORE_SIGNING_KEY` (hex) or `FAILCORE_SIGNING_KEY_FILE` (a path), if either is
    /// set; an error if both are, or if the key is malformed.
    pub fn from_env() -> Result<Option<SealKey>, StoreError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var(KEY_ENV), var(KEY_FILE_ENV)) {
            (Some(_), Some(_)) => Err(StoreError::Backend(format!(
                "set {KEY_ENV} or {KEY_FILE_ENV}, not both"
            ))),
            (Some(hex), None) => SealKey::from_hex(&hex)
                .map(Some)
                .map_err(|e| StoreError::Backend(format!("{KEY_ENV}: {e}"))),
            (None, Some(path)) => SealKey::from_file(Path::new(&path)).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The public key, 64 hex digits: what `failcore verify --key` takes.
    pub fn public_hex(&self) -> &str {
        &self.public_hex
    }

    /// The secret seed as 64 hex digits (for writing a new key to a file).
    pub fn secret_hex(&self) -> String {
        hex(self.key.as_bytes())
    }

    /// Signs the checkpoint at `seq` of `run`, whose `prev` is `prev`.
    pub fn checkpoint(&self, run: &str, seq: u64, prev: &str) -> Checkpoint {
        let sig = self.key.sign(&message(run, seq, prev));
        Checkpoint {
            key: self.public_hex.clone(),
            sig: hex(&sig.to_bytes()),
        }
    }
}

/// A public key that checks checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    hex: String,
}

impl PublicKey {
    /// A public key from 64 hex digits, or from a file that holds them.
    pub fn parse(text_or_path: &str) -> Result<PublicKey, StoreError> {
        let text = text_or_path.trim();
        if let Some(key) = PublicKey::from_hex(text) {
            return Ok(key);
        }
        let path = Path::new(text);
        if path.is_file() {
            let content = std::fs::read_to_string(path)
                .map_err(|e| StoreError::io(path.display().to_string(), e))?;
            if let Some(key) = PublicKey::from_hex(content.trim()) {
                return Ok(key);
            }
        }
        Err(StoreError::Backend(format!(
            "{text:?} is not a public key: give 64 hex digits, or a file that holds them"
        )))
    }

    fn from_hex(text: &str) -> Option<PublicKey> {
        let bytes = unhex::<32>(text)?;
        let key = VerifyingKey::from_bytes(&bytes).ok()?;
        Some(PublicKey {
            key,
            hex: text.to_ascii_lowercase(),
        })
    }

    /// The key as 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `cp` is this key's valid signature of the checkpoint at `seq` of `run` with `prev`.
    pub fn check(&self, run: &str, seq: u64, prev: &str, cp: &Checkpoint) -> bool {
        cp.key.eq_ignore_ascii_case(&self.hex) && signature_valid(&self.key, run, seq, prev, cp)
    }
}

/// Whether `cp` is a valid signature by the key it names itself (no trust in that key implied).
pub(crate) fn self_consistent(run: &str, seq: u64, prev: &str, cp: &Checkpoint) -> bool {
    match PublicKey::from_hex(&cp.key) {
        Some(key) => signature_valid(&key.key, run, seq, prev, cp),
        None => false,
    }
}

fn signature_valid(key: &VerifyingKey, run: &str, seq: u64, prev: &str, cp: &Checkpoint) -> bool {
    let Some(sig) = unhex::<64>(&cp.sig) else {
        return false;
    };
    key.verify(&message(run, seq, prev), &Signature::from_bytes(&sig))
        .is_ok()
}

/// Decides when the journal writes a checkpoint, and signs it. The journal asks [`Sealer::due`] before it
/// numbers each record and, when it answers yes, writes [`Sealer::checkpoint`] first.
#[derive(Debug)]
pub struct Sealer {
    key: SealKey,
    every_records: u64,
    every: Duration,
    since: u64,
    last: Instant,
    any: bool,
}

impl Sealer {
    /// A sealer that checkpoints every [`DEFAULT_EVERY_RECORDS`] records or [`DEFAULT_EVERY`].
    pub fn new(key: SealKey) -> Sealer {
        Sealer::with_interval(key, DEFAULT_EVERY_RECORDS, DEFAULT_EVERY)
    }

    /// A sealer that checkpoints after `every_records` records, or at the first record once `every` has
    /// passed since the last checkpoint, whichever comes first.
    pub fn with_interval(key: SealKey, every_records: u64, every: Duration) -> Sealer {
        Sealer {
            key,
            every_records: every_records.max(1),
            every,
            since: 0,
            last: Instant::now(),
            any: false,
        }
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> &str {
        self.key.public_hex()
    }

    /// Whether a checkpoint must be written before the record numbered `seq` (a `run_end` when
    /// `run_end`). The first checkpoint follows the first record, so that a run written with a key is
    /// signed from its start.
    pub fn due(&self, seq: u64, run_end: bool) -> bool {
        if seq == 0 {
            return false;
        }
        run_end
            || !self.any
            || self.since >= self.every_records
            || (self.since > 0 && self.last.elapsed() >= self.every)
    }

    /// Signs the checkpoint numbered `seq`, chained to `prev`, and restarts the count.
    pub fn checkpoint(&mut self, run: &str, seq: u64, prev: &str) -> Checkpoint {
        self.since = 0;
        self.any = true;
        self.last = Instant::now();
        self.key.checkpoint(run, seq, prev)
    }

    /// When records written since the last checkpoint are due to be signed by time alone (also if no
    /// other record comes): `None` when every record written is signed.
    pub fn idle_deadline(&self) -> Option<Instant> {
        (self.since > 0).then(|| self.last + self.every)
    }

    /// Counts a record written (other than a checkpoint).
    pub fn wrote(&mut self) {
        self.since += 1;
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::from_seed([7; 32])
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let cp = key().checkpoint("r1", 5, &"ab".repeat(32));
        let public = PublicKey::parse(key().public_hex()).unwrap();
        assert!(public.check("r1", 5, &"ab".repeat(32), &cp));
        assert!(!public.check("r2", 5, &"ab".repeat(32), &cp), "another run");
        assert!(!public.check("r1", 6, &"ab".repeat(32), &cp), "another seq");
        assert!(
            !public.check("r1", 5, &"cd".repeat(32), &cp),
            "another head"
        );
        let other = PublicKey::parse(SealKey::from_seed([8; 32]).public_hex()).unwrap();
        assert!(!other.check("r1", 5, &"ab".repeat(32), &cp), "another key");
    }

    #[test]
    fn keys_round_trip_through_hex_and_malformed_keys_are_refused() {
        let k = key();
        let again = SealKey::from_hex(&format!(" {}\n", k.secret_hex())).unwrap();
        assert_eq!(again.public_hex(), k.public_hex());
        assert!(SealKey::from_hex("abc").is_err());
        assert!(PublicKey::parse("zz").is_err());
        assert!(!format!("{k:?}").contains(&k.secret_hex()));
    }

    #[test]
    fn the_sealer_checkpoints_after_the_first_record_every_n_and_before_run_end() {
        let mut s = Sealer::with_interval(key(), 3, Duration::from_secs(3600));
        assert!(!s.due(0, false), "never before run_start");
        assert!(s.due(1, false), "right after run_start");
        s.checkpoint("r", 1, "x");
        for seq in 2..5 {
            assert!(!s.due(seq, false));
            s.wrote();
        }
        assert!(s.due(5, false), "after 3 records");
        s.checkpoint("r", 5, "x");
        assert!(s.due(6, true), "before run_end");
    }
}
