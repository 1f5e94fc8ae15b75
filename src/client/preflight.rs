//! Before any load: is the target reachable, does it speak the OpenAI API, which model.

use std::time::Duration;

use serde::Deserialize;

use super::error::ClientError;
use super::http::HttpTarget;
use crate::common::error_text::error_text;

/// How long the check waits for the server.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of a model list read.
const MODEL_LIST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// A server's base URL, checked: `http://` or `https://`, host, optional port, optional
/// path prefix (a gateway's `https://host/openai/v1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `SCHEME://HOST[:PORT]`, as written, without the path.
    pub text: String,
    /// Whether it is https.
    pub tls: bool,
    /// The host as written (`[...]` around an IPv6 address).
    pub host: String,
    /// `host:port`, the default port filled in (80, or 443 for https).
    pub authority: String,
    /// The path before `/v1` (`/openai`), without a trailing `/`; empty for none.
    pub prefix: String,
}

impl BaseUrl {
    /// Parses what a user may write (`.../`, `.../v1`, `.../openai/v1`).
    pub fn parse(url: &str) -> Result<BaseUrl, ClientError> {
        let trimmed = url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
        let bad = || ClientError::BadUrl {
            url: url.to_string(),
            why: "write it as http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]".to_string(),
        };
        let (tls, rest) = match trimmed.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(bad()),
        };
        let (authority, prefix) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let unsafe_prefix = prefix.contains(['?', '#', '%']) || prefix.contains("//");
        if authority.is_empty() || rest.contains(char::is_whitespace) || unsafe_prefix {
            return Err(bad());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let scheme = if tls { "https" } else { "http" };
        Ok(BaseUrl {
            text: format!("{scheme}://{authority}"),
            tls,
            host: host.to_string(),
            authority: format!("{host}:{port}"),
            prefix: prefix.to_string(),
        })
    }

    /// The URL its routes hang from: `SCHEME://HOST[:PORT][/PREFIX]` (then `/v1/...`).
    pub fn root(&self) -> String {
        format!("{}{}", self.text, self.prefix)
    }
}

/// Asks `GET /v1/models`; returns the model to use: `wanted` if the server serves it, else
/// the first one it lists.
pub async fn check_server(
    http: &HttpTarget,
    base: &str,
    wanted: Option<&str>,
) -> Result<String, ClientError> {
    let url = format!("{base}/v1/models");
    let unreachable = |why: String| {
        if http.is_tls() && why.contains("certificate") {
            ClientError::Untrusted {
                url: url.clone(),
                why,
            }
        } else {
            ClientError::Unreachable {
                url: url.clone(),
                why,
            }
        }
    };
    let exchange = async {
        http.get("/v1/models", MODEL_LIST_BYTES)
            .await
            .map_err(|err| error_text(&err))
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
    let not_openai = |why: String| ClientError::NotOpenAi {
        url: url.clone(),
        why,
    };
    let shown = http::StatusCode::from_u16(status)
        .map_or_else(|_| status.to_string(), |status| status.to_string());
    if status == 401 || status == 403 {
        return Err(not_openai(format!(
            "HTTP {shown}: pass the server's key with --api-key"
        )));
    }
    if !(200..300).contains(&status) {
        return Err(not_openai(format!("HTTP {shown}")));
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
        Some(wanted) => Err(ClientError::UnknownModel {
            model: wanted.to_string(),
            served,
        }),
        None => served
            .into_iter()
            .next()
            .ok_or_else(|| not_openai("it lists no model".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized_with_default_ports() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/v1/",
        ] {
            let base = BaseUrl::parse(url).unwrap();
            assert_eq!(base.text, "http://127.0.0.1:8080");
            assert_eq!(base.authority, "127.0.0.1:8080");
            assert!(!base.tls);
        }
        let plain = BaseUrl::parse("http://example.com").unwrap();
        assert_eq!(plain.authority, "example.com:80");
        let secure = BaseUrl::parse("https://gemma.example.com/v1").unwrap();
        assert_eq!(
            (secure.tls, secure.host.as_str(), secure.authority.as_str()),
            (true, "gemma.example.com", "gemma.example.com:443")
        );
        let gateway = BaseUrl::parse("https://gateway.example.com/openai/v1/").unwrap();
        assert_eq!(
            (gateway.text.as_str(), gateway.prefix.as_str()),
            ("https://gateway.example.com", "/openai")
        );
        assert_eq!(gateway.root(), "https://gateway.example.com/openai");
        assert_eq!(BaseUrl::parse("http://h:1/a/b").unwrap().prefix, "/a/b");
        assert_eq!(BaseUrl::parse("http://h:1/v1").unwrap().prefix, "");
        for wrong in [
            "http://h/a?b",
            "http://h/a#b",
            "http://h//a",
            "http://h/a b",
            "http:///a",
        ] {
            assert!(BaseUrl::parse(wrong).is_err(), "{wrong}");
        }
        let ipv6 = BaseUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (ipv6.host.as_str(), ipv6.authority.as_str()),
            ("[::1]", "[::1]:8443")
        );
        assert_eq!(
            BaseUrl::parse("http://[::1]").unwrap().authority,
            "[::1]:80"
        );
    }

    #[test]
    fn urls_that_are_not_a_server_base_are_refused() {
        for url in [
            "localhost:8080",
            "http://",
            "ftp://host",
            "http://host:port",
            "http://host:8080/openai?x=1",
            "http://:8080",
        ] {
            let text = BaseUrl::parse(url).unwrap_err().to_string();
            assert!(
                text.contains("http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]"),
                "{url}: {text}"
            );
        }
    }
}
