//! How often the secret scanner fires on text that holds no secret: reads the files named on the command
//! line, splits each into paragraphs (blank-line separated), scans every paragraph as the scrubber would
//! scan a recorded string, and prints each finding with its context and the count of paragraphs with one.
//!
//! ```sh
//! cargo run --release --example secret_scan_rate -- docs/*.md /usr/lib/python3*/*.py
//! ```
//!
//! docs/SECRETS.md gives the figure measured on a corpus of documentation and source files.

fn main() {
    let (mut paragraphs, mut flagged, mut files) = (0usize, 0usize, 0usize);
    for path in std::env::args().skip(1) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipped {path}: not readable as UTF-8 text");
            continue;
        };
        files += 1;
        for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            paragraphs += 1;
            let findings = failcore::secrets::find_secrets(paragraph);
            if findings.is_empty() {
                continue;
            }
            flagged += 1;
            for f in findings {
                let mut start = f.span.start.saturating_sub(40);
                while !paragraph.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (f.span.end + 10).min(paragraph.len());
                while !paragraph.is_char_boundary(end) {
                    end += 1;
                }
                println!(
                    "{path}: [{}] {:?}",
                    f.rule,
                    paragraph[start..end].replace('\n', " ")
                );
            }
        }
    }
    println!("{flagged} of {paragraphs} paragraphs in {files} files had a finding");
}
