//! Two tools linked into one binary under one name: reported clearly, never silently picked.

use failcore::store::MemoryStore;
use failcore::{Error, Session};
use std::sync::Arc;

mod billing {
    #[failcore::tool(name = "refund")]
    pub async fn refund(amount: u32) -> Result<u32, failcore::ToolError> {
        Ok(amount)
    }
}

mod support {
    #[failcore::tool(name = "refund")]
    pub async fn refund(ticket: String) -> Result<String, failcore::ToolError> {
        Ok(ticket)
    }
}

#[tokio::test]
async fn two_tools_with_one_name_stop_the_session_and_calls_by_name() {
    let err = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap_err();
    match &err {
        Error::DuplicateTool {
            name,
            first,
            second,
        } => {
            assert_eq!(name, "refund");
            assert!(
                first.contains("billing") && second.contains("support"),
                "{err}"
            );
        }
        other => panic!("expected DuplicateTool, got {other}"),
    }
    assert!(
        err.to_string().contains("give one of them `name ="),
        "{err}"
    );
    let by_name = failcore::call_json("refund", serde_json::json!({"amount": 1}))
        .await
        .unwrap_err();
    assert!(matches!(by_name, Error::DuplicateTool { .. }), "{by_name}");
    assert!(matches!(
        failcore::expect_tools(&["refund"]),
        Err(Error::DuplicateTool { .. })
    ));
    // Both are still listed, so a startup check can show them.
    assert_eq!(
        failcore::tools()
            .iter()
            .filter(|t| t.name() == "refund")
            .count(),
        2
    );
}
