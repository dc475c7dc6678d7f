//! Run ids: 26 characters of Crockford base32, a 48-bit millisecond timestamp then 80 random bits, so
//! ids sort by creation time and are unique across machines without coordination.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The last id made in this process: ids made within one millisecond still increase.
static LAST: Mutex<u128> = Mutex::new(0);

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

pub(crate) fn new_run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut random = [0u8; 10];
    if getrandom::fill(&mut random).is_err() {
        // No OS randomness: fall back to hashing what differs between processes and calls.
        let seed = format!(
            "{:?}{}{:?}",
            SystemTime::now(),
            std::process::id(),
            std::thread::current().id()
        );
        random.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..10]);
    }
    let mut value: u128 = (ms & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if value <= *last {
            // Same millisecond (or a clock that went back): the next id after the last one.
            value = last.wrapping_add(1);
        }
        *last = value;
    }
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (5 * i)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_sortable_and_valid() {
        let a = super::new_run_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_run_id();
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} < {b}");
        failcore_store::check_run_id(&a).unwrap();
    }

    #[test]
    fn ids_increase_within_one_millisecond() {
        let ids: Vec<String> = (0..10_000).map(|_| super::new_run_id()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
    }
}
