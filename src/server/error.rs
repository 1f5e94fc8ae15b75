//! Every way a request can fail, and the one place that maps them to an HTTP status and
//! an OpenAI-style error body `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something impossible; `param` names the field.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// The `model` field names a model this server does not serve.
    #[error("the model `{requested}` does not exist; this server serves `{served}`")]
    UnknownModel { requested: String, served: String },
    /// Missing or wrong bearer token.
    #[error("a valid API key is required: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// The body is larger than the server accepts.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The waiting queue is full; the client should retry later.
    #[error("the server is at capacity ({waiting} requests waiting); retry after {retry_after} s")]
    Overloaded { waiting: usize, retry_after: u64 },
    /// The server is shutting down and admits no new requests.
    #[error("the server is shutting down; send the request to another replica")]
    Draining,
    /// The model failed while generating.
    #[error("generation failed: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the offending field.
    pub fn bad_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The class counted in the error metric.
    pub fn class(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } | Self::UnknownModel { .. } | Self::PayloadTooLarge { .. } => {
                "bad_request"
            }
            Self::Unauthorized => "unauthorized",
            Self::Overloaded { .. } => "overloaded",
            Self::Draining => "draining",
            Self::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::UnknownModel { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error object (also sent inside a stream that fails after it started).
    pub fn body(&self) -> serde_json::Value {
        let (kind, code, param) = match self {
            Self::BadRequest { param, .. } => ("invalid_request_error", None, param.as_deref()),
            Self::UnknownModel { .. } => (
                "invalid_request_error",
                Some("model_not_found"),
                Some("model"),
            ),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key"), None),
            Self::PayloadTooLarge { .. } => ("invalid_request_error", None, None),
            Self::Overloaded { .. } => ("rate_limit_error", Some("rate_limit_exceeded"), None),
            Self::Draining => ("server_error", Some("shutting_down"), None),
            Self::Internal(_) => ("server_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Self::Overloaded { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let Self::Unauthorized = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_429_with_retry_after_and_an_openai_body() {
        let response = ApiError::Overloaded {
            waiting: 8,
            retry_after: 1,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = ApiError::bad_param("max_tokens", "must be at least 1").body();
        assert_eq!(body["error"]["param"], "max_tokens");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["message"], "must be at least 1");
    }
}
