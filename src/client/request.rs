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
        let bytes = serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serializes");
        WorkItem {
            route,
            body: Bytes::from(bytes),
            row_id: None,
        }
    }
}
