//! A ready-made error type for tools.

use std::fmt;

/// An error type for tool functions that need nothing more than a message: a blocked call, an I/O error
/// or a JSON error converts into it with `?`.
///
/// Tools may use any `E: Display + From<failcore::Error>`; this one saves writing it.
///
/// ```
/// #[failcore::tool(effect = "read")]
/// async fn read_note(name: String) -> Result<String, failcore::ToolError> {
///     if name.is_empty() {
///         return Err(failcore::ToolError::msg("a note needs a name"));
///     }
///     Ok(format!("note {name}"))
/// }
/// ```
#[derive(Debug)]
pub struct ToolError {
    message: String,
    /// The FailCore error this came from, when it came from one (blocked, replay miss, ...).
    /// Boxed, so that `Result<T, ToolError>` stays small (two words and a pointer).
    failcore: Option<Box<crate::Error>>,
}

impl ToolError {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        ToolError {
            message: message.to_string(),
            failcore: None,
        }
    }

    /// The FailCore error behind this one, if the call failed in FailCore (e.g. `Error::Blocked`).
    pub fn failcore(&self) -> Option<&crate::Error> {
        self.failcore.as_deref()
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ToolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failcore.as_deref().map(|e| e as _)
    }
}

const _: () = assert!(std::mem::size_of::<ToolError>() <= 32);

impl From<crate::Error> for ToolError {
    fn from(e: crate::Error) -> Self {
        ToolError {
            message: e.to_string(),
            failcore: Some(Box::new(e)),
        }
    }
}

impl From<std::io::Error> for ToolError {
    fn from(e: std::io::Error) -> Self {
        ToolError::msg(e)
    }
}

impl From<serde_json::Error> for ToolError {
    fn from(e: serde_json::Error) -> Self {
        ToolError::msg(e)
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError {
            message,
            failcore: None,
        }
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::msg(message)
    }
}
