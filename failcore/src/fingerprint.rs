//! Canonical JSON and call fingerprints.
//!
//! Canonical JSON: object keys sorted bytewise at every depth, no insignificant whitespace, numbers as
//! serde_json formats them. It is written by our own serializer, so it does not depend on whether some
//! crate in the build enabled serde_json's `preserve_order`. Non-finite floats are an error, not `null`.
//!
//! Fingerprint: BLAKE3 over length-delimited (`"failcore/fp/v1"`, tool name, tool version, canonical
//! arguments), in hex.

use serde::ser::{self, Serialize};
use serde_json::Value;
use std::fmt;

/// Why a value has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalError(pub String);

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CanonicalError {}

impl ser::Error for CanonicalError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CanonicalError(msg.to_string())
    }
}

/// Serializes `value` as canonical JSON.
///
/// ```
/// # use std::collections::HashMap;
/// let mut m = HashMap::new();
/// m.insert("b", 1);
/// m.insert("a", 2);
/// assert_eq!(failcore::canonical_json(&m).unwrap(), br#"{"a":2,"b":1}"#);
/// assert!(failcore::canonical_json(&f64::NAN).is_err());
/// ```
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(64);
    value.serialize(Canonical {
        out: &mut out,
        sort: true,
    })?;
    strip_markers_in_place(&mut out);
    Ok(out)
}

pub(crate) fn write_canonical<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    value.serialize(Canonical { out, sort: true })
}

/// Written before the `null` of a `Some` whose value serializes as `null`, in what is fingerprinted only.
/// JSON text never holds this byte (control characters in strings are escaped), so the marked form
/// cannot collide with any unmarked one.
pub(crate) const SOME_NULL: u8 = 0x01;

/// Whether `bytes` hold a [`SOME_NULL`] marker.
pub(crate) fn has_markers(bytes: &[u8]) -> bool {
    bytes.contains(&SOME_NULL)
}

/// Removes [`SOME_NULL`] markers, leaving plain JSON; returns whether there were any.
pub(crate) fn strip_markers_in_place(bytes: &mut Vec<u8>) -> bool {
    if !has_markers(bytes) {
        return false;
    }
    bytes.retain(|b| *b != SOME_NULL);
    true
}

/// Serializes a tool's output as JSON in the order the value serializes in (so that a map that keeps its
/// insertion order reads back in it), rejecting what JSON cannot hold. Returns whether the JSON reads back
/// as the value that was written: `false` when a `Some` collapsed into `null` (see [`SOME_NULL`]), which
/// resume then never serves.
pub(crate) fn write_output<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<bool, CanonicalError> {
    value.serialize(Canonical { out, sort: false })?;
    Ok(!strip_markers_in_place(out))
}

/// The fingerprint of a call: hex BLAKE3 of the length-delimited tool name, version and canonical args.
pub fn fingerprint(tool: &str, version: &str, canonical_args: &[u8]) -> String {
    fingerprint_hash(tool, version, canonical_args)
        .to_hex()
        .to_string()
}

/// The key the runtime indexes fingerprints by: their first 128 bits (occurrence counts, the replay index).
pub(crate) fn fp_key(hash: &[u8; 32]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

/// [`fp_key`] of a fingerprint in hex, as traces hold it; `None` if it is not hex of 32 bytes or more.
pub(crate) fn fp_key_hex(hex: &str) -> Option<u128> {
    let digits = hex.as_bytes().get(..32)?;
    let mut first = [0u8; 16];
    for (byte, pair) in first.iter_mut().zip(digits.chunks_exact(2)) {
        let nibble = |c: u8| (c as char).to_digit(16);
        *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
    }
    Some(u128::from_le_bytes(first))
}

/// The fingerprint as a hash, for callers that need its bytes as well as its hex.
pub(crate) fn fingerprint_hash(tool: &str, version: &str, canonical_args: &[u8]) -> blake3::Hash {
    // One buffer, one hash: the same bytes as hashing the parts one by one, at a fraction of the cost for
    // the small inputs most calls have.
    let parts = [
        b"failcore/fp/v1".as_slice(),
        tool.as_bytes(),
        version.as_bytes(),
        canonical_args,
    ];
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
        buf.extend_from_slice(part);
    }
    blake3::hash(&buf)
}

struct Canonical<'a> {
    out: &'a mut Vec<u8>,
    /// Sort object keys (canonical form); `false` keeps the order the value serializes in.
    sort: bool,
}

fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<(), CanonicalError> {
    serde_json::to_writer(out, v).map_err(|e| CanonicalError(e.to_string()))
}

fn float(out: &mut Vec<u8>, v: f64) -> Result<(), CanonicalError> {
    if !v.is_finite() {
        return Err(CanonicalError(format!(
            "{v} has no JSON form: use a finite number or an Option"
        )));
    }
    json(out, &v)
}

impl<'a> ser::Serializer for Canonical<'a> {
    type Ok = ();
    type Error = CanonicalError;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), CanonicalError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), CanonicalError> {
        if !v.is_finite() {
            return float(self.out, f64::from(v));
        }
        json(self.out, &v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), CanonicalError> {
        float(self.out, v)
    }
    fn serialize_char(self, v: char) -> Result<(), CanonicalError> {
        json(self.out, &v)
    }
    fn serialize_str(self, v: &str) -> Result<(), CanonicalError> {
        json(self.out, v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), CanonicalError> {
        json(self.out, v)
    }
    fn serialize_none(self) -> Result<(), CanonicalError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), CanonicalError> {
        let start = self.out.len();
        let sort = self.sort;
        v.serialize(Canonical {
            out: &mut *self.out,
            sort,
        })?;
        if self.out[start..] == *b"null" {
            // `Some` of a value written as `null` (`Some(None)`, `Some(())`) reads back as `None`:
            // marked, so that it never shares a fingerprint with `None` nor is served as one.
            self.out.insert(start, SOME_NULL);
        }
        Ok(())
    }
    fn serialize_unit(self) -> Result<(), CanonicalError> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), CanonicalError> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), CanonicalError> {
        json(self.out, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.out.push(b'{');
        json(self.out, variant)?;
        self.out.push(b':');
        v.serialize(Canonical {
            out: &mut *self.out,
            sort: self.sort,
        })?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, CanonicalError> {
        self.out.push(b'[');
        Ok(Seq {
            out: self.out,
            sort: self.sort,
            first: true,
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Seq<'a>, CanonicalError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Seq<'a>, CanonicalError> {
        self.out.push(b'{');
        json(self.out, variant)?;
        self.out.extend_from_slice(b":[");
        Ok(Seq {
            out: self.out,
            sort: self.sort,
            first: true,
            variant: Some(()),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Object<'a>, CanonicalError> {
        Ok(Object {
            out: self.out,
            sort: self.sort,
            entries: Vec::with_capacity(len.unwrap_or(4)),
            key: None,
            variant: false,
            raw: false,
        })
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Object<'a>, CanonicalError> {
        let mut object = self.serialize_map(Some(len))?;
        object.raw = name == RAW_VALUE;
        Ok(object)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Object<'a>, CanonicalError> {
        self.out.push(b'{');
        json(self.out, variant)?;
        self.out.push(b':');
        Ok(Object {
            out: self.out,
            sort: self.sort,
            entries: Vec::with_capacity(len),
            key: None,
            variant: true,
            raw: false,
        })
    }
}

#[doc(hidden)]
pub struct Seq<'a> {
    out: &'a mut Vec<u8>,
    sort: bool,
    first: bool,
    variant: Option<()>,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.push(b',');
        }
        v.serialize(Canonical {
            out: self.out,
            sort: self.sort,
        })
    }
    fn close(self) -> Result<(), CanonicalError> {
        self.out.push(b']');
        if self.variant.is_some() {
            self.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}
impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}
impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}
impl ser::SerializeTupleVariant for Seq<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        self.element(v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

/// Gathers (key, value) pairs, then writes them sorted by key.
#[doc(hidden)]
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    sort: bool,
    entries: Vec<(String, Vec<u8>)>,
    key: Option<String>,
    variant: bool,
    /// A [`serde_json::value::RawValue`]: its one field is JSON text, written as it is.
    raw: bool,
}

/// The struct name serde_json gives a [`serde_json::value::RawValue`] when it serializes one.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

impl Object<'_> {
    fn entry<T: Serialize + ?Sized>(&mut self, key: String, v: &T) -> Result<(), CanonicalError> {
        if self.raw {
            let text = match serde_json::to_value(v) {
                Ok(Value::String(text)) => text,
                _ => return Err(CanonicalError("raw JSON that is not text".into())),
            };
            let value = if self.sort {
                // Fingerprinted: the canonical form of the JSON it holds.
                let parsed: Value =
                    serde_json::from_str(&text).map_err(|e| CanonicalError(e.to_string()))?;
                let mut out = Vec::new();
                parsed.serialize(Canonical {
                    out: &mut out,
                    sort: true,
                })?;
                out
            } else {
                // Recorded: the bytes as they were, only line breaks between tokens taken out (a record
                // is one line).
                one_line(text.into_bytes())
            };
            self.entries.push((key, value));
            return Ok(());
        }
        let mut value = Vec::new();
        v.serialize(Canonical {
            out: &mut value,
            sort: self.sort,
        })?;
        self.entries.push((key, value));
        Ok(())
    }
    fn close(mut self) -> Result<(), CanonicalError> {
        if self.raw {
            if let Some((_, text)) = self.entries.pop() {
                self.out.extend_from_slice(&text);
            }
            return Ok(());
        }
        if self.sort {
            self.entries
                .sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if let Some(w) = self.entries.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(CanonicalError(format!(
                    "duplicate key {:?} in a map",
                    w[0].0
                )));
            }
        }
        self.out.push(b'{');
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            json(self.out, k.as_str())?;
            self.out.push(b':');
            self.out.extend_from_slice(v);
        }
        self.out.push(b'}');
        if self.variant {
            self.out.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), CanonicalError> {
        self.key = Some(key.serialize(MapKey)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), CanonicalError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| CanonicalError("map value without a key".into()))?;
        self.entry(key, v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}
impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.entry(key.to_owned(), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}
impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = CanonicalError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), CanonicalError> {
        self.entry(key.to_owned(), v)
    }
    fn end(self) -> Result<(), CanonicalError> {
        self.close()
    }
}

/// JSON text without the whitespace outside its strings when it spans several lines (JSON strings hold
/// no raw line breaks); else unchanged.
fn one_line(text: Vec<u8>) -> Vec<u8> {
    if !text.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return text;
    }
    let (mut in_string, mut escaped) = (false, false);
    let mut out = Vec::with_capacity(text.len());
    for b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            continue;
        }
        out.push(b);
    }
    out
}

/// Map keys become strings, as serde_json makes them: strings, chars, integers and bools.
struct MapKey;

fn key_error() -> CanonicalError {
    CanonicalError("a map key must be a string, a char, an integer or a bool".into())
}

impl ser::Serializer for MapKey {
    type Ok = String;
    type Error = CanonicalError;
    type SerializeSeq = ser::Impossible<String, CanonicalError>;
    type SerializeTuple = ser::Impossible<String, CanonicalError>;
    type SerializeTupleStruct = ser::Impossible<String, CanonicalError>;
    type SerializeTupleVariant = ser::Impossible<String, CanonicalError>;
    type SerializeMap = ser::Impossible<String, CanonicalError>;
    type SerializeStruct = ser::Impossible<String, CanonicalError>;
    type SerializeStructVariant = ser::Impossible<String, CanonicalError>;

    fn serialize_bool(self, v: bool) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _: f32) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_f64(self, _: f64) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_char(self, v: char) -> Result<String, CanonicalError> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String, CanonicalError> {
        Ok(v.to_owned())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, CanonicalError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<String, CanonicalError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, CanonicalError> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, CanonicalError> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, CanonicalError> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, CanonicalError> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, CanonicalError> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, CanonicalError> {
        Err(key_error())
    }
}

/// A hasher for keys that are already hashes: it passes their low bits through.
#[derive(Default)]
pub(crate) struct PrehashedKey(u64);

impl std::hash::Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn raw_json_is_recorded_as_it_came_and_fingerprinted_canonically() {
        let text = r#"{"z":123456789012345678901234567890,"a":1e2,"s":"\u00e9\n"}"#;
        let raw = serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
        let mut out = Vec::new();
        assert!(write_output(&raw, &mut out).unwrap());
        assert_eq!(String::from_utf8(out).unwrap(), text);
        let canonical = String::from_utf8(canonical_json(&raw).unwrap()).unwrap();
        assert_eq!(
            canonical,
            r#"{"a":100.0,"s":"é\n","z":1.2345678901234568e+29}"#
        );
        // Inside other values too; a text on several lines is made one line, its strings untouched.
        let spread = "{\n  \"k\" : [1,\r\n 2],\n \"t\": \"a b\\\" c\"\n}";
        let raw = serde_json::value::RawValue::from_string(spread.to_owned()).unwrap();
        let mut out = Vec::new();
        write_output(&vec![raw], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"k":[1,2],"t":"a b\" c"}]"#
        );
    }

    #[derive(Serialize)]
    struct Zig {
        zeta: u8,
        alpha: Vec<Inner>,
        #[serde(skip_serializing_if = "Option::is_none")]
        gone: Option<u8>,
    }
    #[derive(Serialize)]
    enum Inner {
        Unit,
        New(i32),
        Tuple(u8, u8),
        Named { y: u8, x: u8 },
    }

    fn s<T: Serialize + ?Sized>(v: &T) -> String {
        String::from_utf8(canonical_json(v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_keys_at_every_depth_and_encodes_enums_as_serde_json_does() {
        let v = Zig {
            zeta: 1,
            alpha: vec![
                Inner::Unit,
                Inner::New(-2),
                Inner::Tuple(3, 4),
                Inner::Named { y: 5, x: 6 },
            ],
            gone: None,
        };
        let expected =
            r#"{"alpha":["Unit",{"New":-2},{"Tuple":[3,4]},{"Named":{"x":6,"y":5}}],"zeta":1}"#;
        assert_eq!(s(&v), expected);
        // Same bytes as serde_json's own encoding once reparsed and sorted.
        let reparsed: serde_json::Value = serde_json::from_str(expected).unwrap();
        assert_eq!(reparsed, serde_json::to_value(&v).unwrap());
    }

    #[test]
    fn maps_are_canonical_whatever_their_iteration_order() {
        let mut h = HashMap::new();
        let mut b = BTreeMap::new();
        for i in 0..50 {
            h.insert(format!("k{i}"), i);
            b.insert(format!("k{i}"), i);
        }
        assert_eq!(s(&h), s(&b));
        let mut ints = HashMap::new();
        ints.insert(10, "a");
        ints.insert(9, "b");
        assert_eq!(s(&ints), r#"{"10":"a","9":"b"}"#);
    }

    #[test]
    fn numbers_and_strings_match_serde_json() {
        let v = (
            1.5f64,
            1e300,
            -0.0f64,
            u64::MAX,
            i64::MIN,
            "é\"\\\n\u{1}",
            'x',
            0.1f32,
        );
        assert_eq!(s(&v), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn non_finite_floats_are_errors() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(canonical_json(&vec![v]).is_err());
        }
        assert!(canonical_json(&f32::NAN).is_err());
        let mut m = HashMap::new();
        m.insert(vec![1], 1);
        assert!(
            canonical_json(&m).is_err(),
            "non-string map keys are refused"
        );
    }

    #[test]
    fn keys_from_bytes_and_from_hex_agree() {
        let hash = fingerprint_hash("t", "1", b"{}");
        assert_eq!(
            fp_key(hash.as_bytes()),
            fp_key_hex(hash.to_hex().as_str()).unwrap()
        );
        assert_eq!(fp_key_hex("not hex"), None);
        assert_eq!(fp_key_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn fingerprints_separate_their_fields() {
        let a = fingerprint("ab", "c", b"{}");
        let b = fingerprint("a", "bc", b"{}");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint("ab", "c", b"{}"));
    }
}

#[cfg(test)]
mod pinned {
    /// The same value and expected hex as the root package's golden test, which is built with serde_json's
    /// `preserve_order` on; this crate's unit tests are built with it off. Both must agree.
    #[test]
    fn fingerprint_is_pinned_without_preserve_order() {
        let v = serde_json::json!({"b": {"y": 1, "x": [1.5, "s"]}, "a": null});
        let canonical = super::canonical_json(&v).unwrap();
        assert_eq!(
            super::fingerprint("t", "1", &canonical),
            "56af37e8d3813fb29d5096fb449a74cb7078490ee3f05b3de702dfaf1178d973"
        );
    }
}
