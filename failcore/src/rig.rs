//! Registered tools as rig tools (feature `rig`, built on rig-core).
//!
//! Each tool callable by name becomes a `rig_core::tool::DynamicTool` with its normalised argument schema;
//! calling it goes through [`call_json`](crate::call_json), so policy, replay and the trace apply. A
//! blocked call is a rig refusal (`PermissionDenied`) carrying the rule, so the model sees why.

use crate::registry::ToolInfo;
use crate::{Error, Session};
use rig_core::message::ToolName;
use rig_core::tool::{DynamicTool, ToolErrorKind, ToolExecutionError, ToolOutput};
use serde_json::Value;

/// The rig-core version this adapter is built and tested against.
pub const RIG_CORE_VERSION: &str = "0.44.0";

/// Every tool callable by name, as rig tools running in the current (else the default) session.
pub fn tools() -> Vec<DynamicTool> {
    crate::tools()
        .into_iter()
        .filter_map(|t| tool(t, None))
        .collect()
}

/// Every tool callable by name, as rig tools whose calls run in `session`.
pub fn tools_in(session: &Session) -> Vec<DynamicTool> {
    crate::tools()
        .into_iter()
        .filter_map(|t| tool(t, Some(session.clone())))
        .collect()
}

/// One tool as a rig tool, or `None` when it cannot be called by name.
pub fn tool(info: ToolInfo, session: Option<Session>) -> Option<DynamicTool> {
    let schema = info.schema()?;
    let name = ToolName::new(info.name()).ok()?;
    let tool_name = info.name();
    Some(DynamicTool::new(
        name,
        info.description(),
        schema,
        move |arguments: Value| {
            let session = session.clone();
            Box::pin(async move {
                let outcome = match &session {
                    Some(s) => s.scope(crate::call_json(tool_name, arguments)).await,
                    None => crate::call_json(tool_name, arguments).await,
                };
                match outcome {
                    Ok(Value::String(text)) => Ok(ToolOutput::text(text)),
                    Ok(value) => Ok(ToolOutput::json(value)),
                    Err(e) => Err(rig_error(&e)),
                }
            })
        },
    ))
}

fn rig_error(e: &Error) -> ToolExecutionError {
    match e {
        Error::Blocked { .. } => ToolExecutionError::refused(e.to_string()),
        Error::InvalidArguments { .. } => {
            ToolExecutionError::new(ToolErrorKind::InvalidArgs, e.to_string())
        }
        Error::UnknownTool(_) => ToolExecutionError::new(ToolErrorKind::NotFound, e.to_string()),
        _ => ToolExecutionError::new(ToolErrorKind::Other, e.to_string()),
    }
}

/// A rig transport beneath a rig model that makes each of its calls a FailCore model step
/// ([`crate::model`]): policy-checked before anything is sent, answered from the trace when resuming or
/// offline (then nothing reaches the provider), and otherwise sent by the transport it wraps, its reply
/// recorded frame by frame with its token usage and cost.
///
/// Wrap a model with [`record`] and hand it to a rig agent like any other model:
///
/// ```ignore
/// let model = failcore::rig::record(openai.chat("gpt-4o-mini"), &models, Some(&session));
/// let agent = rig_agent::AgentBuilder::new(model).dynamic_tools(failcore::rig::tools_in(&session)).build();
/// ```
///
/// A streamed reply is recorded once it has ended (the frames reach rig then), and replayed frame by frame.
#[derive(Clone, Debug)]
pub struct Recorded<T> {
    inner: T,
    models: crate::model::Models,
    session: Option<Session>,
}

/// `model` with its calls recorded as model steps, under `models` (identity, prices, budgets), in `session`
/// (else the current, else the default session). Add `models.policy()` to the session's guards for the
/// allow-list and the budgets to apply.
pub fn record<W, T>(
    model: rig_core::Model<W, T>,
    models: &crate::model::Models,
    session: Option<&Session>,
) -> rig_core::Model<W, Recorded<T>> {
    rig_core::Model::new(
        model.wire,
        Recorded {
            inner: model.transport,
            models: models.clone(),
            session: session.cloned(),
        },
    )
}

impl<T> Recorded<T> {
    /// The transport it wraps.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

type Frames = Vec<rig_core::wire::WireFrame>;
type Parked = std::sync::Arc<
    std::sync::Mutex<
        Option<(
            rig_core::driver::Opened<rig_core::wire::WireFrame>,
            Frames,
            Option<rig_core::ProviderError>,
        )>,
    >,
>;

impl<W, T> rig_core::driver::Transport<W> for Recorded<T>
where
    W: rig_core::wire::Wire<Payload = rig_core::wire::Encoded, Frame = rig_core::wire::WireFrame>,
    T: rig_core::driver::Transport<W>,
{
    // rig's frames are `Result<WireFrame, ProviderError>`: the error type is rig's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    fn send(
        &self,
        payload: rig_core::wire::Encoded,
        exchange: rig_core::driver::Exchange,
    ) -> rig_core::driver::Opening<rig_core::wire::WireFrame> {
        use rig_core::driver::{Opened, Opening};
        use rig_core::wire::{Body, Framing, Mode, WireFrame};
        use rig_core::ProviderError;

        let request = match payload.request.body() {
            Body::Bytes(bytes) => crate::model::parse_request(bytes),
            Body::Multipart(_) => Err(Error::InvalidArguments {
                tool: "model".into(),
                reason: "a multipart request cannot be recorded as a model step".into(),
            }),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return Opening::failed(ProviderError::request(e.to_string())),
        };
        let streamed = exchange.mode == Mode::Streaming && payload.framing != Framing::Whole;
        let inner = self.inner.clone();
        let models = self.models.clone();
        let session = self.session.clone();
        Opening::new(async move {
            let parked: Parked = Parked::default();
            let slot = parked.clone();
            let send = async move {
                let opened = match inner.send(payload, exchange).await {
                    Ok(o) => o,
                    Err(e) => {
                        let message = e.to_string();
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((
                            Opened::new(futures_util::stream::empty()),
                            Vec::new(),
                            Some(e),
                        ));
                        return Err(message);
                    }
                };
                let mut taken = None;
                let opened = opened.map_frames(|frames| {
                    taken = Some(frames);
                    futures_util::stream::empty()
                });
                let mut frames = Vec::new();
                let mut failed = None;
                if let Some(mut stream) = taken {
                    use futures_util::StreamExt;
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(frame) => frames.push(frame),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
                let texts: Vec<String> = frames.iter().map(|f| f.as_str().into_owned()).collect();
                let outcome = match &failed {
                    Some(e) => Err(e.to_string()),
                    None if streamed => Ok(crate::model::Reply::Chunks(texts)),
                    None => match texts.as_slice() {
                        [one] => serde_json::from_str(one)
                            .map(crate::model::Reply::Body)
                            .map_err(|e| format!("the provider's reply is not JSON: {e}")),
                        _ => Ok(crate::model::Reply::Chunks(texts)),
                    },
                };
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((opened, frames, failed));
                outcome
            };
            let call = models.call(&request, send);
            let outcome = match &session {
                Some(s) => s.scope(call).await,
                None => call.await,
            };
            let live = parked.lock().unwrap_or_else(|p| p.into_inner()).take();
            match (outcome, live) {
                // It ran: hand rig what the provider sent, its failure included.
                (_, Some((opened, frames, failed))) => {
                    if frames.is_empty() {
                        if let Some(e) = failed {
                            return Err(e);
                        }
                    }
                    let items = frames
                        .into_iter()
                        .map(Ok)
                        .chain(failed.map(Err))
                        .collect::<Vec<_>>();
                    Ok(opened.map_frames(|_| futures_util::stream::iter(items)))
                }
                // Served from the trace.
                (Ok(reply), None) => Ok(match reply.reply {
                    crate::model::Reply::Body(body) => {
                        Opened::new(futures_util::stream::iter([Ok(WireFrame::Text(
                            body.to_string(),
                        ))]))
                        .with_document(body)
                    }
                    crate::model::Reply::Chunks(chunks) => Opened::new(futures_util::stream::iter(
                        chunks.into_iter().map(|c| Ok(WireFrame::Text(c))),
                    )),
                }),
                // Refused, missing offline, or the trace could not take it: nothing was sent.
                (Err(e), None) => Err(ProviderError::request(e.to_string())),
            }
        })
    }
}
