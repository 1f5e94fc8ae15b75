//! Before any load: is the target reachable, does it speak the OpenAI API, which model.

use std::time::Duration;

use http_body_util::BodyExt;
use serde::Deserialize;

use super::LoadError;
use super::http::HttpTarget;

/// How long the check waits for the server.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// `http://host:port` from what a user may write (`.../`, `.../v1`).
pub fn base_url(url: &str) -> Result<String, LoadError> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    let bad = |why: &str| LoadError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let rest = trimmed.strip_prefix("http://").ok_or_else(|| {
        if trimmed.starts_with("https://") {
            bad("https is not built in; reach the server over plain http (a port-forward or a sidecar)")
        } else {
            bad("write it as http://HOST:PORT")
        }
    })?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(bad("write it as http://HOST:PORT"));
    }
    Ok(trimmed.to_string())
}

/// `host:port` of a base URL from [`base_url`].
pub fn authority(base: &str) -> String {
    let rest = base.strip_prefix("http://").unwrap_or(base);
    let host = rest.split('/').next().unwrap_or(rest);
    if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    }
}

/// Asks `GET /v1/models`; returns the model to use: `wanted` if the server serves it, else
/// the first one it lists.
pub async fn check_server(
    http: &HttpTarget,
    base: &str,
    wanted: Option<&str>,
) -> Result<String, LoadError> {
    let url = format!("{base}/v1/models");
    let unreachable = |why: String| LoadError::Unreachable {
        url: url.clone(),
        why,
    };
    let exchange = async {
        let (mut connection, _) = http.checkout().await.map_err(|err| error_text(&err))?;
        let response = connection
            .send_request(http.request("/v1/models", None))
            .await
            .map_err(|err| error_text(&err))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| error_text(&err))?
            .to_bytes();
        http.checkin(connection);
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(PREFLIGHT_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            unreachable(format!(
                "no answer within {} s",
                PREFLIGHT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(unreachable)?;
    let not_openai = |why: String| LoadError::NotOpenAi {
        url: url.clone(),
        why,
    };
    if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
        return Err(not_openai(format!(
            "HTTP {status}: pass the server's key with --api-key"
        )));
    }
    if !status.is_success() {
        return Err(not_openai(format!("HTTP {status}")));
    }
    let list: ModelList = serde_json::from_slice(&body).map_err(|err| {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        not_openai(format!(
            "the answer is not an OpenAI model list ({err}): {shown:?}"
        ))
    })?;
    let served: Vec<String> = list.data.into_iter().map(|model| model.id).collect();
    match wanted {
        Some(wanted) if served.iter().any(|id| id == wanted) => Ok(wanted.to_string()),
        Some(wanted) => Err(LoadError::UnknownModel {
            model: wanted.to_string(),
            served,
        }),
        None => served
            .into_iter()
            .next()
            .ok_or_else(|| not_openai("it lists no model".into())),
    }
}

/// An error with its causes, on one line.
pub fn error_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_base_urls() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/v1/",
        ] {
            assert_eq!(base_url(url).unwrap(), "http://127.0.0.1:8080");
        }
        assert!(
            base_url("https://x")
                .unwrap_err()
                .to_string()
                .contains("https is not built in")
        );
        assert!(
            base_url("localhost:8080")
                .unwrap_err()
                .to_string()
                .contains("http://HOST:PORT")
        );
        assert!(base_url("http://").is_err());
        assert_eq!(authority("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(authority("http://example.com"), "example.com:80");
    }
}
