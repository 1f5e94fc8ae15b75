//! One ready-to-send streaming request: its route and JSON body, built once so sending
//! costs no JSON work.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::common::Route;
use crate::dataset::{Row, RowRequest};

/// One ready-to-send request.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// Its route.
    pub route: Route,
    /// The serialized JSON body.
    pub body: Bytes,
    /// The dataset row it came from (`id`), for synthetic requests none.
    pub row_id: Option<Arc<str>>,
    /// Most bytes of generated text a sound server can send for it (from its
    /// `max_tokens`): a server sending more is broken, and is not let grow the client's
    /// memory.
    pub output_limit: usize,
}

/// Bytes of text one generated token may take: no tokenizer's longest token comes near
/// (Gemma's is 48 bytes).
const BYTES_PER_TOKEN: usize = 1024;
/// The output limit of a request without `max_tokens`, and the most any request gets.
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// The output limit for a request body's `max_tokens` (`max_completion_tokens` for chat).
fn output_limit(body: &Map<String, Value>) -> usize {
    ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_u64))
        .map_or(MAX_OUTPUT_BYTES, |tokens| {
            usize::try_from(tokens)
                .unwrap_or(usize::MAX)
                .saturating_mul(BYTES_PER_TOKEN)
                .saturating_add(64 * 1024)
                .min(MAX_OUTPUT_BYTES)
        })
}

impl WorkItem {
    /// The request for `row`: the generation fields `defaults` under the row's own, for `model`.
    pub fn for_row(row: &Row, defaults: &Map<String, Value>, model: &str) -> WorkItem {
        let (route, field, value) = match &row.request {
            RowRequest::Prompt(prompt) => {
                (Route::Completions, "prompt", Value::String(prompt.clone()))
            }
            RowRequest::Messages(messages) => (Route::Chat, "messages", messages.clone()),
        };
        let mut item = WorkItem::build(route, field, value, defaults, &row.params, model);
        item.row_id = Some(Arc::from(row.id.as_str()));
        item
    }

    /// A streaming request body: `defaults`, then the row's `params` over them, then the model,
    /// the prompt and the stream options, which are the runner's own.
    pub fn build(
        route: Route,
        field: &str,
        value: Value,
        defaults: &Map<String, Value>,
        params: &Map<String, Value>,
        model: &str,
    ) -> WorkItem {
        let mut body = defaults.clone();
        for (key, value) in params {
            body.insert(key.clone(), value.clone());
        }
        body.insert("model".into(), json!(model));
        body.insert(field.into(), value);
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let output_limit = output_limit(&body);
        let bytes = serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serializes");
        WorkItem {
            route,
            body: Bytes::from(bytes),
            row_id: None,
            output_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_limit_follows_max_tokens_and_is_bounded() {
        let limit = |body: Value| output_limit(body.as_object().unwrap());
        assert_eq!(limit(json!({"max_tokens": 8})), 8 * 1024 + 64 * 1024);
        assert_eq!(limit(json!({"max_completion_tokens": 1})), 65 * 1024);
        assert_eq!(limit(json!({})), MAX_OUTPUT_BYTES);
        assert_eq!(limit(json!({"max_tokens": u64::MAX})), MAX_OUTPUT_BYTES);
    }
}
