//! What an agent's own code does between tool calls, made deterministic: the clock, randomness, UUIDs and
//! sleeps as small steps of the run, and a stable idempotency key inside a tool body.
//!
//! A program that stamps a file name with the time, backs off for a random delay or makes a UUID for a
//! request computes something else on resume: the next tool call's arguments differ, its fingerprint
//! misses, and it executes again. Called inside a session scope, [`now`], [`random`], [`uuid`] and
//! [`sleep`] are each a call of a built-in pure tool (`failcore.now`, `failcore.random`, `failcore.uuid`,
//! `failcore.sleep`, one record each): recorded when the run is live, served from the trace on resume and
//! offline, in the order they were made within their scope. A resumed run therefore sees the same times,
//! numbers and UUIDs as the run it resumes, and a sleep that had begun before a crash waits on resume only
//! for what remained of it (its deadline is what is recorded). Outside a session scope they are the plain
//! functions: [`std::time::SystemTime::now`], fresh random bytes, [`tokio::time::sleep`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), failcore::Error> {
//! let session = failcore::Session::from_env()?.open()?;
//! session
//!     .scope(async {
//!         let stamp = failcore::now().await?; // the same on resume
//!         let request_id = failcore::uuid().await?; // the same on resume
//!         failcore::sleep(std::time::Duration::from_secs(30)).await?; // only what remains, on resume
//!         # let _ = (stamp, request_id);
//!         Ok::<_, failcore::Error>(())
//!     })
//!     .await?;
//! session.finish().await?;
//! # Ok(()) }
//! ```

use crate::{DynamicTool, Effect, Error};
pub use failcore_store::Landed;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ORIGIN: &str = "failcore";

/// Whether the caller runs inside a session scope (not the default session's implicit one).
fn in_scope() -> bool {
    crate::session::CONTEXT.try_with(|_| ()).is_ok()
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The built-in tools, interned once each: a call in a loop takes no lock of the dynamic tool table.
#[derive(Clone, Copy)]
enum Builtin {
    Now,
    Random,
    Uuid,
    Sleep,
}

impl Builtin {
    fn tool(self) -> Result<DynamicTool, Error> {
        static TOOLS: [OnceLock<DynamicTool>; 4] = [const { OnceLock::new() }; 4];
        let name = match self {
            Builtin::Now => "failcore.now",
            Builtin::Random => "failcore.random",
            Builtin::Uuid => "failcore.uuid",
            Builtin::Sleep => "failcore.sleep",
        };
        let slot = &TOOLS[self as usize];
        if let Some(tool) = slot.get() {
            return Ok(*tool);
        }
        let tool = DynamicTool::new(name, ORIGIN, Effect::Pure)?;
        Ok(*slot.get_or_init(|| tool))
    }
}

/// Calls a built-in tool with `arguments`: recorded live, served on resume and offline.
async fn step(
    builtin: Builtin,
    arguments: Value,
    body: impl FnOnce() -> Value + Send + 'static,
) -> Result<Value, Error> {
    builtin
        .tool()?
        .call(&arguments, Box::pin(async move { Ok(body()) }))
        .await
}

/// What is left of a sleep whose deadline is `deadline`, at `now` (nothing once it has passed), never
/// more than the sleep asked for.
fn remaining(deadline: SystemTime, now: SystemTime, asked: Duration) -> Duration {
    deadline
        .duration_since(now)
        .map_or(Duration::ZERO, |left| left.min(asked))
}

fn field(value: &Value, name: &str, tool: &str) -> Result<u64, Error> {
    value.get(name).and_then(Value::as_u64).ok_or_else(|| {
        Error::Config(format!(
            "the recorded output of `{tool}` has no `{name}` number: {value}"
        ))
    })
}

/// The wall-clock time, recorded: the same on resume and offline as when the run was live.
pub async fn now() -> Result<SystemTime, Error> {
    if !in_scope() {
        return Ok(SystemTime::now());
    }
    let out = step(
        Builtin::Now,
        json!({}),
        || json!({ "unix_nanos": unix_nanos(SystemTime::now()) }),
    )
    .await?;
    Ok(UNIX_EPOCH + Duration::from_nanos(field(&out, "unix_nanos", "failcore.now")?))
}

fn fresh_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: a hash of the time and a counter is still different per call.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_nanos(SystemTime::now()));
        return h.finish();
    }
    u64::from_le_bytes(bytes)
}

/// A random 64-bit number, recorded: the same on resume and offline.
pub async fn random() -> Result<u64, Error> {
    if !in_scope() {
        return Ok(fresh_u64());
    }
    let out = step(
        Builtin::Random,
        json!({}),
        || json!({ "value": fresh_u64() }),
    )
    .await?;
    field(&out, "value", "failcore.random")
}

fn format_uuid(hi: u64, lo: u64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random (version 4) UUID, recorded: the same on resume and offline.
pub async fn uuid() -> Result<String, Error> {
    if !in_scope() {
        return Ok(format_uuid(fresh_u64(), fresh_u64()));
    }
    let out = step(
        Builtin::Uuid,
        json!({}),
        || json!({ "uuid": format_uuid(fresh_u64(), fresh_u64()) }),
    )
    .await?;
    out.get("uuid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Config(format!("the recorded output of `failcore.uuid` is {out}")))
}

/// Sleeps for `duration`, durably: the deadline is recorded when the sleep begins, so a resumed run waits
/// only for what remained of it when the run died (nothing, if it had elapsed), and an offline replay
/// waits for nothing that is already past.
pub async fn sleep(duration: Duration) -> Result<(), Error> {
    if !in_scope() {
        tokio::time::sleep(duration).await;
        return Ok(());
    }
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let out = step(Builtin::Sleep, json!({ "ms": ms }), move || {
        let deadline = SystemTime::now() + duration;
        json!({ "deadline_unix_nanos": unix_nanos(deadline) })
    })
    .await?;
    let deadline =
        UNIX_EPOCH + Duration::from_nanos(field(&out, "deadline_unix_nanos", "failcore.sleep")?);
    let left = remaining(deadline, SystemTime::now(), duration);
    if !left.is_zero() {
        tokio::time::sleep(left).await;
    }
    Ok(())
}

/// A key for the provider of a side effect (a payment, a message) to deduplicate by, inside a tool body:
/// the same for the same call across a crash and its re-execution on resume (derived from the first run
/// of the resume chain, the call's identity and its occurrence), different for distinct calls. 64 hex
/// digits. Outside a tool body there is no call to key: an error.
pub fn idempotency_key() -> Result<String, Error> {
    let ctx = crate::session::CONTEXT
        .try_with(Clone::clone)
        .map_err(|_| Error::Config("idempotency_key() is called outside a tool body".into()))?;
    let Some((key, occurrence)) = ctx.scope else {
        return Err(Error::Config(
            "idempotency_key() is called outside a tool body".into(),
        ));
    };
    let inner = &ctx.session.inner;
    let lineage = inner
        .replay
        .as_ref()
        .map_or(inner.run.as_str(), |r| r.first_run());
    let mut h = blake3::Hasher::new_derive_key("failcore idempotency key v1");
    h.update(lineage.as_bytes());
    h.update(&[0]);
    h.update(&key.to_le_bytes());
    h.update(&occurrence.to_le_bytes());
    Ok(h.finalize().to_hex().to_string())
}

/// Reports, from inside a tool body that is about to fail, whether the effect it asked for could have
/// taken place: [`Landed::No`] when the provider refused the request before acting on it (safe to run
/// again), [`Landed::Unknown`] when the request was sent and no verdict came back (a timeout, a dropped
/// connection, a provider that failed mid-way). The last report wins; it is recorded on the failed (or
/// cancelled) call as `"landed"` and ignored if the call succeeds.
///
/// On resume, a call that failed with its effect unknown is recovered as a call in flight at a crash is:
/// as its tool declares (`recovery = "retry" | "reconcile" | "block"`), else as the session says
/// (`on_in_flight`: run again, or refuse a `write` or `exec` call so that a person can check it).
///
/// ```no_run
/// #[failcore::tool(effect = "write")]
/// async fn charge(cents: u64) -> Result<String, failcore::ToolError> {
///     // ... the request was sent; the connection dropped before the answer:
///     failcore::report_landed(failcore::Landed::Unknown)?;
///     Err("the payment provider did not answer".into())
/// }
/// ```
///
/// # Errors
/// [`Error::Config`] outside a tool body: there is no call to report on.
pub fn report_landed(landed: Landed) -> Result<(), Error> {
    let noted = crate::session::CONTEXT.try_with(|ctx| match ctx.parent {
        Some(step) => {
            ctx.session.inner.landed.note(step, |_| landed);
            true
        }
        None => false,
    });
    match noted {
        Ok(true) => Ok(()),
        _ => Err(Error::Config(
            "report_landed() is called outside a tool body: there is no call to report on".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_waits_only_for_what_is_left_of_its_deadline() {
        let t = UNIX_EPOCH + Duration::from_secs(1_000);
        let asked = Duration::from_secs(30);
        assert_eq!(remaining(t + asked, t, asked), asked);
        assert_eq!(
            remaining(t + asked, t + Duration::from_secs(20), asked),
            Duration::from_secs(10)
        );
        assert_eq!(
            remaining(t + asked, t + Duration::from_secs(31), asked),
            Duration::ZERO
        );
        // A deadline further than asked (a clock set back) waits no longer than the sleep.
        assert_eq!(remaining(t + Duration::from_secs(3_600), t, asked), asked);
    }

    #[test]
    fn uuids_are_version_4_and_well_formed() {
        let u = format_uuid(u64::MAX, 0);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_eq!(u.matches('-').count(), 4);
    }
}
