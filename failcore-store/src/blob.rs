//! Large payloads stored apart from their records, once, by content.
//!
//! A step whose output is larger than its session's blob threshold records the output's BLAKE3 hash and
//! length (`"output_blob": {"blake3": "…", "len": N}`) in place of the output. The payload is stored once
//! per store under its hash ([`crate::TraceStore::put_blob`]), before the record that names it is written;
//! the record is covered by the run's chain, so the hash is, and a payload read back
//! ([`crate::TraceStore::blob`]) is checked against it: a payload that was changed, cut short or lost is
//! an error, never served. A run with hundreds of multi-megabyte outputs is read (and resumed) one small
//! record at a time; each payload is read when a call needs it.

use crate::StoreError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The longest payload a store keeps (1 GiB): a longer one is refused before anything is written.
pub const MAX_BLOB_BYTES: u64 = 1 << 30;

/// The BLAKE3 hash of a payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    /// The hash as 64 lowercase hex digits (the only form a store names a payload by).
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Reads 64 lowercase hex digits; anything else (a path, upper case, a shorter string) is refused, so
    /// that a hash read from a hostile record can never name a file outside a store's blob directory.
    pub fn from_hex(text: &str) -> Option<BlobHash> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let digit = |b: u8| if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
            out[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        Some(BlobHash(out))
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

impl Serialize for BlobHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BlobHash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BlobHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a blob hash is 64 lowercase hex digits"))
    }
}

/// What a record holds of a payload stored apart: its hash and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    pub blake3: BlobHash,
    pub len: u64,
}

impl BlobRef {
    /// The reference of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobRef {
        BlobRef {
            blake3: BlobHash::of(bytes),
            len: bytes.len() as u64,
        }
    }

    /// The record field that names this payload (`{"blake3":"…","len":N}`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"blake3\":\"");
        out.extend_from_slice(self.blake3.to_hex().as_bytes());
        out.extend_from_slice(b"\",\"len\":");
        out.extend_from_slice(self.len.to_string().as_bytes());
        out.push(b'}');
    }

    /// Checks a payload read back against this reference: the bytes a record names, or an error saying how
    /// they differ. `store` names where they were read, for the message.
    pub fn check(&self, store: &str, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if bytes.len() as u64 != self.len {
            return Err(self.wrong_len(store, bytes.len() as u64));
        }
        if BlobHash::of(&bytes) != self.blake3 {
            return Err(StoreError::Blob {
                store: store.to_owned(),
                blob: self.blake3,
                reason: "its bytes do not hash to its name: it was changed".into(),
            });
        }
        Ok(bytes)
    }

    /// The error for a payload of `held` bytes where the record says another length.
    pub fn wrong_len(&self, store: &str, held: u64) -> StoreError {
        StoreError::Blob {
            store: store.to_owned(),
            blob: self.blake3,
            reason: format!("it holds {held} bytes where its record says {}", self.len),
        }
    }

    /// The error for a payload a store does not hold.
    pub fn missing(&self, store: &str) -> StoreError {
        StoreError::Blob {
            store: store.to_owned(),
            blob: self.blake3,
            reason: "the store does not hold it (it was deleted, or the run was copied without it)"
                .into(),
        }
    }

    /// Refuses a length over [`MAX_BLOB_BYTES`] before it is read or written.
    pub fn check_len(len: u64, store: &str) -> Result<(), StoreError> {
        if len > MAX_BLOB_BYTES {
            return Err(StoreError::TooLarge {
                what: format!("a payload for {store}"),
                bytes: len as usize,
                limit: MAX_BLOB_BYTES as usize,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_reads_back_from_its_hex_and_nothing_else_is_a_hash() {
        let h = BlobHash::of(b"payload");
        assert_eq!(BlobHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(h.to_hex(), blake3::hash(b"payload").to_hex().as_str());
        for bad in [
            "",
            "../../etc/passwd",
            &h.to_hex().to_uppercase(),
            &h.to_hex()[..63],
            &format!("{}0", h.to_hex()),
            &format!("{}/", &h.to_hex()[..63]),
        ] {
            assert_eq!(BlobHash::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_reference_encodes_as_it_decodes_and_checks_its_bytes() {
        let r = BlobRef::of(b"0123456789");
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(serde_json::from_slice::<BlobRef>(&out).unwrap(), r);
        assert_eq!(serde_json::to_vec(&r).unwrap(), out);
        assert_eq!(r.check("s", b"0123456789".to_vec()).unwrap(), b"0123456789");
        let short = r.check("s", b"012345678".to_vec()).unwrap_err().to_string();
        assert!(
            short.contains("9 bytes where its record says 10"),
            "{short}"
        );
        let changed = r
            .check("s", b"0123456780".to_vec())
            .unwrap_err()
            .to_string();
        assert!(changed.contains("was changed"), "{changed}");
        let extra = br#"{"blake3":"00","len":1}"#;
        assert!(serde_json::from_slice::<BlobRef>(extra).is_err());
    }
}
