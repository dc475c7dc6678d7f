//! The hash chain: each record carries the hex BLAKE3 of the previous line's exact bytes.

/// The `prev` of the record with seq 0: the hex BLAKE3 of the run id.
pub fn genesis_hash(run: &str) -> String {
    blake3::hash(run.as_bytes()).to_hex().to_string()
}

/// The hex BLAKE3 of one line's exact bytes (without its newline), the `prev` of the next record.
pub fn line_hash(line: &[u8]) -> String {
    blake3::hash(line).to_hex().to_string()
}

const SEAL_PREFIX: &[u8] = b",\"seal\":\"";
const SEAL_LEN: usize = SEAL_PREFIX.len() + 64 + 2;

/// Appends `"seal": BLAKE3(line)` as the last field of a JSON object line.
pub fn seal_line(line: &mut Vec<u8>) {
    let hash = blake3::hash(line).to_hex();
    if line.pop() != Some(b'}') {
        unreachable_object(line);
        return;
    }
    line.extend_from_slice(SEAL_PREFIX);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
}

// encode_line always ends a line with `}`; if that ever changed, leave the line unsealed (verify reports
// the missing seal) rather than write a malformed one.
fn unreachable_object(line: &mut Vec<u8>) {
    line.push(b'}');
}

/// Checks the seal of a sealed line: `None` if it has none, else whether it matches.
pub fn check_seal(line: &[u8]) -> Option<bool> {
    if line.len() < SEAL_LEN || !line.ends_with(b"\"}") {
        return None;
    }
    let (body, seal) = line.split_at(line.len() - SEAL_LEN);
    let hex = seal.strip_prefix(SEAL_PREFIX)?.strip_suffix(b"\"}")?;
    let mut unsealed = Vec::with_capacity(body.len() + 1);
    unsealed.extend_from_slice(body);
    unsealed.push(b'}');
    Some(blake3::hash(&unsealed).to_hex().as_bytes() == hex)
}
