//! `cargo run --example sample`: FailCore's ten-step demo workflow.
//!
//! The workflow and its tools live in `failcore/src/bin/failcore/sample.rs`, shared with the
//! `failcore sample` command; read it there.

#[path = "../failcore/src/bin/failcore/sample.rs"]
mod sample;

fn main() -> std::process::ExitCode {
    sample::run()
}
