//! `failcore export` and `failcore import`: copy runs between any two stores, byte for byte.
//!
//! `export --to <STORE> [RUN...]` copies from the store of `--store` to `<STORE>`; `import --from <STORE>
//! [RUN...]` copies from `<STORE>` into the store of `--store`. Lines keep their exact bytes, so a copied
//! run verifies wherever it lands. A run that already exists in the destination is an error unless
//! `--skip-existing` is given. A torn tail (bytes of a write cut off by a crash, which are not a record) is
//! left behind and reported.

use crate::common::{open_existing, open_store, print_json, resolve, schema, Result};
use crate::term::safe;
use failcore::store::{BlobRef, Chunk, Line, TraceStore};
use failcore::Error;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;

/// How much a batch gathers before it is appended to the destination.
const BATCH_LINES: usize = 1000;
const BATCH_BYTES: usize = 8 << 20;

/// The two commands, flattened into the top level of `failcore`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy runs from the store (`--store`) to another store, byte for byte.
    Export {
        /// The destination: `jsonl:<dir>`, `sqlite:<file>`, `postgres://...`.
        #[arg(long, value_name = "STORE")]
        to: String,
        #[command(flatten)]
        common: Common,
    },
    /// Copy runs from another store into the store (`--store`), byte for byte.
    Import {
        /// The source: `jsonl:<dir>`, `sqlite:<file>`, `postgres://...`.
        #[arg(long, value_name = "STORE")]
        from: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// Runs to copy: ids, unique prefixes or `last` (default: every run).
    runs: Vec<String>,
    /// Skip runs that already exist in the destination instead of failing.
    #[arg(long)]
    skip_existing: bool,
    /// Print a JSON object of what was copied instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

pub fn run(store: Option<&str>, command: Command) -> Result<ExitCode> {
    // The source must exist; the destination is created as runs are written to it.
    let (name, from, to, args) = match command {
        Command::Export { to, common } => (
            "export",
            open_existing(store)?,
            failcore::store_from_spec(&to)?,
            common,
        ),
        Command::Import { from, common } => (
            "import",
            open_existing(Some(&from))?,
            open_store(store)?,
            common,
        ),
    };
    let runs = if args.runs.is_empty() {
        from.runs()?
    } else {
        args.runs
            .iter()
            .map(|r| resolve(from.as_ref(), r))
            .collect::<Result<Vec<_>>>()?
    };
    let existing = to.runs()?;
    let bar = progress(runs.len() as u64);
    let mut copied = Vec::new();
    let mut skipped = Vec::new();
    let mut torn = serde_json::Map::new();
    for run in &runs {
        if existing.contains(run) {
            if args.skip_existing {
                skipped.push(run.clone());
                bar.inc(1);
                continue;
            }
            bar.finish_and_clear();
            return Err(Error::Config(format!(
                "run {run} already exists in {}: pass --skip-existing to leave it as it is",
                to.location()
            )));
        }
        let report = copy_run(from.as_ref(), to.as_ref(), run, &bar)?;
        if report.torn_bytes > 0 {
            torn.insert(run.clone(), report.torn_bytes.into());
            bar.suspend(|| {
                eprintln!(
                    "failcore: {run}: left behind a torn tail of {} bytes (a write cut off by a crash)",
                    report.torn_bytes
                )
            });
        }
        copied.push(run.clone());
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.json {
        print_json(&serde_json::json!({
            "schema": schema(name), "from": from.location(), "to": to.location(),
            "copied": copied, "skipped": skipped, "torn_bytes": torn,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "copied {} run{} from {} to {}{}",
        copied.len(),
        if copied.len() == 1 { "" } else { "s" },
        safe(&from.location()),
        safe(&to.location()),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({} already there, skipped)", skipped.len())
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// A bar on a terminal (stderr), nothing otherwise.
fn progress(runs: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(runs), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} runs {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What copying one run did.
pub struct CopyReport {
    /// Outputs stored apart that were copied with the records naming them.
    pub blobs: u64,
    pub lines: u64,
    pub bytes: u64,
    pub torn_bytes: usize,
}

/// Copies one run's lines, in order and byte for byte, then makes them durable in the destination.
pub fn copy_run(
    from: &dyn TraceStore,
    to: &dyn TraceStore,
    run: &str,
    bar: &ProgressBar,
) -> Result<CopyReport> {
    let mut source = from.lines(run)?;
    let mut writer = to.create(run)?;
    let mut report = CopyReport {
        blobs: 0,
        lines: 0,
        bytes: 0,
        torn_bytes: 0,
    };
    let mut batch: Vec<Line> = Vec::with_capacity(BATCH_LINES);
    let mut batch_bytes = 0usize;
    while let Some(chunk) = source.next_chunk()? {
        match chunk {
            Chunk::Line(bytes) => {
                // The outputs it names that are stored apart go first: a copied record never names a
                // payload its new store lacks.
                if let Some(blob) = blob_of(&bytes) {
                    to.put_blob(&from.blob(&blob)?)?;
                    report.blobs += 1;
                }
                batch_bytes += bytes.len();
                let seq = seq_of(&bytes).unwrap_or(report.lines);
                batch.push(Line { seq, bytes });
                report.lines += 1;
            }
            Chunk::Unterminated(bytes) => report.torn_bytes += bytes.len(),
        }
        if batch.len() >= BATCH_LINES || batch_bytes >= BATCH_BYTES {
            writer.append(&batch)?;
            report.bytes += batch_bytes as u64;
            batch.clear();
            batch_bytes = 0;
            bar.set_message(format!("{run}: {} lines", report.lines));
        }
    }
    writer.append(&batch)?;
    report.bytes += batch_bytes as u64;
    writer.sync()?;
    Ok(report)
}

/// The output stored apart that a line's outcome names (a `step_end`'s, or a `call`'s `end`), if any.
fn blob_of(bytes: &[u8]) -> Option<BlobRef> {
    #[derive(serde::Deserialize)]
    struct End {
        output_blob: Option<BlobRef>,
    }
    #[derive(serde::Deserialize)]
    struct Outcome {
        output_blob: Option<BlobRef>,
        end: Option<End>,
    }
    // Most lines name none: only a line that mentions the field is decoded.
    if !bytes.windows(13).any(|w| w == b"\"output_blob\"") {
        return None;
    }
    let o = serde_json::from_slice::<Outcome>(bytes).ok()?;
    o.output_blob.or(o.end.and_then(|e| e.output_blob))
}

/// The `seq` a line declares, if it parses.
fn seq_of(bytes: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: Option<u64>,
    }
    serde_json::from_slice::<Seq>(bytes).ok()?.seq
}
