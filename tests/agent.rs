//! A real rig agent (rig-agent's loop, rig's OpenAI Chat Completions provider, its reqwest HTTP client) with
//! its model wrapped by `failcore::rig::record` and FailCore tools, against a scripted OpenAI-compatible
//! server in this process. The agent runs in a child process that is killed (SIGKILL) while its third model
//! call is in flight; the resumed run is served both model steps and both tool steps from the trace and sends
//! only the third model call; an offline replay of the resumed run sends nothing at all. The requests are
//! counted on the server side.

#[path = "support/scripted_llm.rs"]
mod scripted_llm;

use failcore::model::{Models, Price};
use failcore::store::{JsonlStore, RunReader, Status, TraceStore};
use failcore::Session;
use scripted_llm::{usage_of_turn, Scripted, MODEL};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use failcore::ToolError;

/// Looks up the forecast of a city.
#[failcore::tool(effect = "network")]
async fn forecast(city: String) -> Result<String, ToolError> {
    log_execution("forecast");
    Ok(format!("{city}: 21 C"))
}

/// Adds two integers.
#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    log_execution("add");
    Ok(a + b)
}

/// Where the tools log their executions in this process, and the runs whose executions are logged (the
/// other tests of this binary run tools too). The child logs every execution to `AGENT_TOOL_LOG`.
static TOOL_LOG: std::sync::Mutex<Option<(std::path::PathBuf, Vec<String>)>> =
    std::sync::Mutex::new(None);

/// Appends a line to the tool log: each time a tool body really runs.
fn log_execution(tool: &str) {
    let here = TOOL_LOG.lock().unwrap().clone().and_then(|(path, runs)| {
        let run = failcore::current()?.run_id().to_owned();
        runs.contains(&run).then_some(path)
    });
    if let Some(path) = here.or_else(|| std::env::var_os("AGENT_TOOL_LOG").map(Into::into)) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{tool}").unwrap();
    }
}

fn price() -> Price {
    Price::per_million(2.0, 8.0).cached(0.5)
}

fn models() -> Models {
    Models::new().price(MODEL, price()).allow([MODEL])
}

/// One agent run in `session`: the answer, or the error.
async fn run_agent(session: &Session, base_url: &str) -> Result<String, String> {
    let http = rig_reqwest::ReqwestClient::default();
    let openai = rig_agent::core::providers::openai::OpenAIConfig::new("no-key")
        .with_base_url(base_url)
        .connect(http);
    let models = models();
    let model = failcore::rig::record(openai.chat(MODEL), &models, Some(session));
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

/// The child: records a run in `FAILCORE_DIR` against `AGENT_BASE_URL`, until it is killed.
#[test]
fn agent_child_process() {
    let Ok(base_url) = std::env::var("AGENT_BASE_URL") else {
        return; // Not the child: only the test below runs it.
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = Session::from_env().unwrap().open().unwrap();
        let out = run_agent(&session, &base_url).await;
        println!("child finished: {out:?}");
        session.finish().await.unwrap();
    });
}

fn executions(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// (tool, status) of each step of a run, in order of their ends.
fn steps(store: &dyn TraceStore, run: &str) -> Vec<(String, Status)> {
    let mut tools = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in RunReader::open(store, run).unwrap() {
        let body = r.unwrap().record.body;
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            out.push((tools[&e.step].clone(), e.status));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_rig_agent_resumes_from_its_model_and_tool_steps_and_replays_offline() {
    let server = Scripted::start().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let log = dir.path().join("tools.log");

    // Run 1, in a child process, killed while its third model call is in flight.
    server.hold_request(3);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["agent_child_process", "--exact", "--nocapture"])
        .env("AGENT_BASE_URL", server.url())
        .env("AGENT_TOOL_LOG", &log)
        .env("FAILCORE_DIR", &traces)
        .env_remove("FAILCORE_RESUME")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), server.held())
        .await
        .expect("the agent never made its third model call");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(server.requests(), 3);
    assert_eq!(executions(&log), ["forecast", "add"]);

    let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(&traces));
    let first = store.resolve("last").unwrap();
    let recorded = steps(store.as_ref(), &first);
    assert_eq!(
        recorded,
        [
            (format!("model:{MODEL}"), Status::Ok),
            ("forecast".into(), Status::Ok),
            (format!("model:{MODEL}"), Status::Ok),
            ("add".into(), Status::Ok),
        ],
        "the third model call was in flight when the child died"
    );

    // Run 2: resume. Model and tool steps come from the trace; only the third model call is sent.
    let session = Session::builder()
        .store(store.clone())
        .resume(first.clone())
        .guard(models().policy())
        .open()
        .unwrap();
    *TOOL_LOG.lock().unwrap() = Some((log.clone(), vec![session.run_id().to_owned()]));
    let answer = run_agent(&session, &server.url()).await.unwrap();
    let second = session.run_id().to_owned();
    session.finish().await.unwrap();
    assert_eq!(answer, "Done: Lisbon: 21 C; 25.");
    assert_eq!(
        server.requests(),
        4,
        "one request: the call that was in flight"
    );
    assert_eq!(executions(&log), ["forecast", "add"], "no tool ran again");
    assert_eq!(
        steps(store.as_ref(), &second),
        [
            (format!("model:{MODEL}"), Status::Replayed),
            ("forecast".into(), Status::Replayed),
            (format!("model:{MODEL}"), Status::Replayed),
            ("add".into(), Status::Replayed),
            (format!("model:{MODEL}"), Status::Ok),
        ]
    );

    // Run 3: offline from the resumed run. Not one request reaches the server.
    let session = Session::builder()
        .store(store.clone())
        .offline(second.clone())
        .open()
        .unwrap();
    TOOL_LOG
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .1
        .push(session.run_id().to_owned());
    let offline_answer = run_agent(&session, "http://127.0.0.1:9/v1").await.unwrap();
    session.finish().await.unwrap();
    assert_eq!(offline_answer, answer);
    assert_eq!(server.requests(), 4, "offline sent nothing");
    assert_eq!(executions(&log), ["forecast", "add"]);

    // The usage recorded and replayed is the script's.
    let mut saved = failcore::model::Usage::default();
    let mut saved_cost = 0.0;
    for r in RunReader::open(store.as_ref(), &second).unwrap() {
        let rec = r.unwrap().record;
        if let Some(e) = rec.body.end() {
            if e.status == Status::Replayed {
                if let Some((u, c)) = e
                    .output
                    .as_ref()
                    .and_then(|o| failcore::model::recorded_usage(&format!("model:{MODEL}"), o))
                {
                    saved.input += u.input;
                    saved.output += u.output;
                    saved.cached += u.cached;
                    saved_cost += c.unwrap();
                }
            }
        }
    }
    let (p0, c0, k0) = usage_of_turn(0);
    let (p1, c1, k1) = usage_of_turn(1);
    assert_eq!(
        saved,
        failcore::model::Usage {
            input: p0 + p1,
            output: c0 + c1,
            cached: k0 + k1,
            ..failcore::model::Usage::default()
        }
    );
    let expected = price().cost(failcore::model::Usage {
        input: p0,
        output: c0,
        cached: k0,
        ..failcore::model::Usage::default()
    }) + price().cost(failcore::model::Usage {
        input: p1,
        output: c1,
        cached: k1,
        ..failcore::model::Usage::default()
    });
    assert!(
        (saved_cost - expected).abs() < 1e-12,
        "{saved_cost} vs {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_off_the_allow_list_is_refused_before_anything_is_sent_and_recorded_as_a_block() {
    let server = Scripted::start().await;
    let store = Arc::new(failcore::store::MemoryStore::new());
    let models = Models::new().allow(["another-model"]);
    let session = Session::builder()
        .store(store.clone())
        .guard(models.policy())
        .open()
        .unwrap();
    let http = rig_reqwest::ReqwestClient::default();
    let openai = rig_agent::core::providers::openai::OpenAIConfig::new("no-key")
        .with_base_url(server.url())
        .connect(http);
    let model = failcore::rig::record(openai.chat(MODEL), &models, Some(&session));
    let agent = rig_agent::AgentBuilder::new(model).build();
    let err = session
        .scope(agent.prompt("hello").max_turns(1).run())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("model.allow"), "{err}");
    assert_eq!(server.requests(), 0);
    let run = session.run_id().to_owned();
    session.finish().await.unwrap();
    let blocked: Vec<_> = RunReader::open(store.as_ref(), &run)
        .unwrap()
        .filter_map(|r| {
            r.unwrap()
                .record
                .body
                .start()
                .map(|s| s.decision.rule.clone())
        })
        .collect();
    assert_eq!(blocked, [Some("model.allow".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_budget_refuses_the_call_after_it_is_spent() {
    let server = Scripted::start().await;
    let store = Arc::new(failcore::store::MemoryStore::new());
    // The first turn uses 110 tokens: the second call is refused.
    let models = Models::new().max_tokens(100);
    let session = Session::builder()
        .store(store)
        .guard(models.policy())
        .open()
        .unwrap();
    let http = rig_reqwest::ReqwestClient::default();
    let openai = rig_agent::core::providers::openai::OpenAIConfig::new("no-key")
        .with_base_url(server.url())
        .connect(http);
    let model = failcore::rig::record(openai.chat(MODEL), &models, Some(&session));
    let agent = rig_agent::AgentBuilder::new(model)
        .dynamic_tools(failcore::rig::tools_in(&session))
        .build();
    let err = session
        .scope(agent.prompt("go").max_turns(5).run())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("model.tokens"), "{err}");
    assert_eq!(server.requests(), 1);
    assert_eq!(models.spent().usage.total(), 110);
    session.finish().await.unwrap();
}
