//! A workflow for the kill-and-resume test: twenty steps through the process default session
//! (configured only by the environment: FAILCORE_DIR, FAILCORE_RESUME). Each execution of a step's body
//! appends its number to the file named by RESUME_CHILD_LOG, so the test can count real executions.

use std::io::Write;

#[derive(Debug)]
struct StepError(String);
impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<failcore::Error> for StepError {
    fn from(e: failcore::Error) -> Self {
        StepError(e.to_string())
    }
}

#[failcore::tool(effect = "write")]
async fn step(n: u32) -> Result<u32, StepError> {
    let log = std::env::var("RESUME_CHILD_LOG").map_err(|e| StepError(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| StepError(e.to_string()))?;
    writeln!(f, "{n}").map_err(|e| StepError(e.to_string()))?;
    tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    Ok(n * 10)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for n in 0..20 {
        match step(n).await {
            Ok(v) => assert_eq!(v, n * 10),
            Err(e) => {
                eprintln!("step {n}: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = failcore::finish().await {
        eprintln!("finish: {e}");
        std::process::exit(1);
    }
}
