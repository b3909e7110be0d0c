//! The chat-completions wire format: the request a caller builds, the JSON
//! body sent for it, and how the server's chunks and error bodies read.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::LlmError;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The customer (or the context given on their behalf).
    User,
    /// The model's earlier answers.
    Assistant,
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Model name as the server knows it.
    pub model: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature; the server's default when `None`.
    pub temperature: Option<f32>,
    /// Longest answer in tokens; the server's default when `None`.
    pub max_tokens: Option<u32>,
}

/// Tokens the server counted for one call: the `usage` object of an
/// OpenAI-compatible answer (the last chunk of a stream, when asked for
/// with `stream_options.include_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    /// Tokens of the request's messages.
    pub prompt_tokens: u64,
    /// Tokens of the answer.
    pub completion_tokens: u64,
}

impl TokenUsage {
    /// Reads `{"prompt_tokens", "completion_tokens"}`; `None` when either
    /// is missing or not a count.
    fn read(value: &Value) -> Option<Self> {
        Some(TokenUsage {
            prompt_tokens: value.get("prompt_tokens")?.as_u64()?,
            completion_tokens: value.get("completion_tokens")?.as_u64()?,
        })
    }
}

/// `stream_options` of a streamed request.
#[derive(Serialize)]
struct StreamOptions {
    /// Ask for a last chunk carrying the call's `usage`.
    include_usage: bool,
}

/// The request body as sent.
#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// The JSON body for `request`; `stream` asks for an event stream rather
/// than one JSON answer.
pub(super) fn encode(request: &ChatRequest, stream: bool) -> Result<Vec<u8>, LlmError> {
    if request.temperature.is_some_and(|t| !t.is_finite()) {
        return Err(LlmError::Config(
            "temperature must be a finite number".into(),
        ));
    }
    serde_json::to_vec(&WireRequest {
        model: &request.model,
        messages: &request.messages,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        temperature: request.temperature,
        max_tokens: request.max_tokens,
    })
    .map_err(|e| LlmError::Config(format!("cannot encode the request: {e}")))
}

/// What one chunk of a stream, or a whole non-streamed completion, carries.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk<'a> {
    /// An `{"error": …}` object the server sent with a success status.
    pub(super) error: Option<&'a Value>,
    /// The first choice's text: `delta.content` (streamed), `message.content`
    /// (whole) or `text` (llama.cpp).
    pub(super) content: Option<&'a str>,
    /// The first choice's `finish_reason` (`stop`, `length`…).
    pub(super) finish_reason: Option<&'a str>,
    /// The call's token counts, when this chunk carries them.
    pub(super) usage: Option<TokenUsage>,
}

impl<'a> Chunk<'a> {
    /// Reads a parsed chunk; fields the server left out are `None`.
    pub(super) fn read(value: &'a Value) -> Self {
        let choice = value.get("choices").and_then(|c| c.get(0));
        Chunk {
            error: value.get("error").filter(|e| !e.is_null()),
            content: choice.and_then(|c| {
                c.pointer("/delta/content")
                    .and_then(Value::as_str)
                    .or_else(|| c.pointer("/message/content").and_then(Value::as_str))
                    .or_else(|| c.get("text").and_then(Value::as_str))
            }),
            finish_reason: choice
                .and_then(|c| c.get("finish_reason"))
                .and_then(Value::as_str),
            usage: value.get("usage").and_then(TokenUsage::read),
        }
    }
}

/// The message of an error body: OpenAI `{"error":{"message"}}`, Ollama
/// `{"error":"…"}`, vLLM `{"message"}`, FastAPI `{"detail"}`.
pub(super) fn error_message(value: &Value) -> Option<String> {
    [
        value.pointer("/error/message"),
        value.get("error"),
        value.get("message"),
        value.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.as_str().map(str::to_owned))
    .or_else(|| {
        value
            .get("error")
            .or_else(|| value.get("detail"))
            .filter(|v| !v.is_null())
            .map(Value::to_string)
    })
}
