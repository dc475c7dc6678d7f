//! A rig agent beneath FailCore: its model calls and its tool calls are steps of the run, so a second run
//! replays the whole agent offline, with no request to the model.
//!
//! ```sh
//! cargo run --example agent
//! ```
//!
//! The model is a scripted OpenAI-compatible server started here on 127.0.0.1 (no key, no network). With a
//! real provider, build `OpenAIConfig::new(key)` without `with_base_url` and keep the rest.

#[path = "../tests/support/scripted_llm.rs"]
mod scripted_llm;

use failcore::model::{Models, Price};
use failcore::Session;

use failcore::ToolError;

/// Looks up the forecast of a city.
#[failcore::tool(effect = "network")]
async fn forecast(city: String) -> Result<String, ToolError> {
    Ok(format!("{city}: 21 C"))
}

/// Adds two integers.
#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(a + b)
}

async fn ask(session: &Session, models: &Models, base_url: &str) -> Result<String, String> {
    let openai = rig_agent::core::providers::openai::OpenAIConfig::new("no-key")
        .with_base_url(base_url)
        .connect(rig_reqwest::ReqwestClient::default());
    // The one change to an ordinary rig agent: its model goes through `failcore::rig::record`, and its
    // tools are FailCore tools.
    let model = failcore::rig::record(openai.chat(scripted_llm::MODEL), models, Some(session));
    let agent = rig_agent::AgentBuilder::new(model)
        .preamble("You plan with tools.")
        .dynamic_tools(failcore::rig::tools_in(session))
        .build();
    session
        .scope(
            agent
                .prompt("Forecast for Lisbon, plus four?")
                .max_turns(5)
                .run(),
        )
        .await
        .map(|r| r.output())
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = scripted_llm::Scripted::start().await;
    let models = || {
        Models::new()
            .price(
                scripted_llm::MODEL,
                Price::per_million(2.0, 8.0).cached(0.5),
            )
            .max_cost(1.0)
    };

    // Record.
    let recording = models();
    // The store of FAILCORE_DIR (default .failcore), as every FailCore program.
    let session = Session::from_env()?.guard(recording.policy()).open()?;
    let answer = ask(&session, &recording, &server.url()).await?;
    let run = session.run_id().to_owned();
    session.finish().await?;
    let spent = recording.spent();
    println!("recorded run {run}: {answer}");
    println!(
        "  {} model calls, {} tokens ({} cached), cost {:.6}; {} requests reached the model",
        spent.calls,
        spent.usage.total(),
        spent.usage.cached,
        spent.cost,
        server.requests()
    );

    // Replay offline: the model is not asked again, the tools do not run again.
    let before = server.requests();
    let replaying = models();
    let session = Session::from_env()?
        .offline(run.clone())
        .guard(replaying.policy())
        .open()?;
    let again = ask(&session, &replaying, &server.url()).await?;
    let replay = session.run_id().to_owned();
    session.finish().await?;
    println!("offline run {replay}: {again}");
    println!(
        "  {} requests reached the model; tokens spent {}",
        server.requests() - before,
        replaying.spent().usage.total()
    );
    assert_eq!(answer, again);
    println!("\nsee it with: cargo failcore stats {replay}");
    Ok(())
}
