//! Which OpenAI route a request goes to.

/// Which OpenAI route a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

impl Route {
    /// Its name in `requests.parquet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Completions => "completions",
            Route::Chat => "chat",
        }
    }

    /// Reads a name written by [`Route::as_str`].
    pub fn parse(text: &str) -> Option<Route> {
        [Route::Completions, Route::Chat]
            .into_iter()
            .find(|route| route.as_str() == text)
    }

    /// The path below the server's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Route::Completions => "/v1/completions",
            Route::Chat => "/v1/chat/completions",
        }
    }
}
