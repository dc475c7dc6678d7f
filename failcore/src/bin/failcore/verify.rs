//! `failcore verify <run|file>`.

use crate::common::{open_existing, resolve, schema, Result};
use crate::term::{self, safe, Out};
use failcore::store::seal::PublicKey;
use failcore::store::{
    verify_with, Fault, FaultKind, JsonlStore, RunReader, TraceStore, VerifyOptions, VerifyReport,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), `last`, or the path of a trace file.
    target: String,
    /// Print the report as JSON (it always holds the chain head and the seal).
    #[arg(long)]
    json: bool,
    /// The public key (64 hex digits, or a file holding them) that must have signed the run's checkpoints.
    #[arg(long, value_name = "PUBLIC_KEY")]
    key: Option<String>,
    /// A chain head pinned earlier (as `verify --json` prints it): it must be the hash of a record of the run.
    #[arg(long, value_name = "HEX")]
    expect_head: Option<String>,
    /// The run id the records must belong to (by default: the run asked for, or for a file named
    /// `runs/<run>.jsonl`, that run).
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let path = Path::new(&args.target);
    let (reader, expected, blobs) = if args.target.ends_with(".jsonl") || path.is_file() {
        // A file in a store's `runs/` directory: its outputs stored apart are in that store's `blobs/`.
        let store = run_of_file(path)
            .and(path.parent())
            .and_then(Path::parent)
            .map(|dir| Arc::new(JsonlStore::new(dir)) as Arc<dyn TraceStore>);
        (
            RunReader::new(failcore::store::open_file(path)?),
            run_of_file(path),
            store,
        )
    } else {
        let store = open_existing(store)?;
        let run = resolve(store.as_ref(), &args.target)?;
        (
            RunReader::open(store.as_ref(), &run)?,
            Some(run),
            Some(store),
        )
    };
    let options = VerifyOptions {
        run: args.run.or(expected),
        head: args.expect_head,
        key: args.key.as_deref().map(PublicKey::parse).transpose()?,
        blobs,
    };
    let report = verify_with(reader, &options);
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["schema"] = schema("verify").into();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        let out = Out::stdout();
        println!("{}", text(&report, &out));
        if let Some(head) = &report.head {
            println!("head {}", safe(head));
        }
        match &report.signed {
            Some(s) => println!(
                "signed through seq {} ({} checkpoints) by key {}{}",
                s.signed_through,
                s.checkpoints,
                safe(&s.key),
                if s.trusted {
                    ", the key given"
                } else {
                    " (not checked against a trusted key: pass --key)"
                }
            ),
            None => println!("no signed checkpoint"),
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report's first line: OK in green, FAIL in red, the fault in plain words, said once.
fn text(report: &VerifyReport, out: &Out) -> String {
    let source = safe(&report.source);
    match &report.fault {
        None => format!(
            "{} {source}: run {}, {} records, chain intact, run complete",
            out.paint(term::OK, "OK"),
            safe(report.run.as_deref().unwrap_or("?")),
            report.records
        ),
        Some(fault) => format!(
            "{} {source}: {}",
            out.paint(term::BAD_BOLD, "FAIL"),
            safe(&fault_text(report, fault))
        ),
    }
}

fn fault_text(report: &VerifyReport, fault: &Fault) -> String {
    let at = fault
        .line
        .map(|l| format!("line {l}: "))
        .unwrap_or_default();
    // A read error's message names the file and line again: keep only its reason.
    let reason = crate::common::json_reason(
        fault
            .message
            .split_once(" is corrupt: ")
            .map_or(fault.message.as_str(), |(_, r)| r),
    );
    let before = match report.records {
        0 => String::new(),
        n => format!(" ({n} records verified before it)"),
    };
    match fault.kind {
        // Nothing verified and the first line is no record (read as a torn tail when it is the
        // only line): the file is not a trace at all.
        FaultKind::TornTail if report.records == 0 && fault.line == Some(1) => {
            "not a FailCore trace (line 1 is not a trace record)".to_owned()
        }
        FaultKind::Corrupt if fault.line == Some(1) => {
            format!("not a FailCore trace (line 1 is not a trace record: {reason})")
        }
        FaultKind::Corrupt => format!("{at}corrupt record: {reason}{before}"),
        FaultKind::Seq => format!("{at}sequence broken: {reason}{before}"),
        FaultKind::Chain => format!("{at}hash chain broken: {reason}{before}"),
        FaultKind::Seal => format!("{at}seal broken: {reason}{before}"),
        FaultKind::Summary => format!("{at}summary wrong: {reason}{before}"),
        FaultKind::TornTail => format!("{reason}{before}"),
        // Its message already counts the records.
        FaultKind::Incomplete => reason,
        // The others (head, signature, run, ...) keep their kind's name, a word scripts match on.
        _ => format!("{at}{reason} ({}){before}", fault.kind.as_str()),
    }
}

/// The run a trace file must hold when its path says so: `.../runs/<run>.jsonl`, as in a store.
fn run_of_file(path: &Path) -> Option<String> {
    let parent = path.parent()?.file_name()?;
    if parent != "runs" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    failcore::store::check_run_id(stem).ok()?;
    Some(stem.to_owned())
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The file to write the secret key to (created, never overwritten; mode 0600). Point
    /// FAILCORE_SIGNING_KEY_FILE at it.
    secret: std::path::PathBuf,
}

/// `failcore keygen <file>`: a new Ed25519 key; the secret goes to the file, the public key to stdout.
pub fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| failcore::Error::Config(format!("no randomness for a key: {e}")))?;
    let key = failcore::store::seal::SealKey::from_seed(seed);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |e: std::io::Error| {
        failcore::Error::Config(format!("signing key {}: {e}", args.secret.display()))
    };
    let mut file = options.open(&args.secret).map_err(io)?;
    std::io::Write::write_all(&mut file, format!("{}\n", key.secret_hex()).as_bytes())
        .map_err(io)?;
    println!("{}", key.public_hex());
    Ok(ExitCode::SUCCESS)
}
