//! The requests a load run sends: built once, up front, from a dataset or from a seeded
//! synthetic distribution, then cycled, so sending costs no JSON work.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::{Map, Value, json};

use crate::client::WorkItem;
use crate::common::Route;
use crate::dataset::Row;

/// A length distribution in tokens, at least 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenLengths {
    /// Normal with this mean and standard deviation (0: every request the same length),
    /// rounded and floored at 1: `MEAN` or `MEAN,STDDEV`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// Every whole number from `min` to `max` equally likely: `MIN..MAX`.
    Uniform {
        /// Shortest.
        min: usize,
        /// Longest.
        max: usize,
    },
    /// Uniform in the logarithm, so each doubling is as likely as the next (16-32 as often
    /// as 512-1,024), the shape of chat and batch traffic: `log:MIN..MAX`.
    LogUniform {
        /// Shortest.
        min: usize,
        /// Longest.
        max: usize,
    },
}

impl TokenLengths {
    /// Parses `MEAN`, `MEAN,STDDEV`, `MIN..MAX` or `log:MIN..MAX`.
    pub fn parse(text: &str) -> Result<TokenLengths, String> {
        let trimmed = text.trim();
        let (log, range) = match trimmed.strip_prefix("log:") {
            Some(range) => (true, Some(range)),
            None => (false, trimmed.contains("..").then_some(trimmed)),
        };
        match range {
            Some(range) => Self::parse_range(text, range, log),
            None => Self::parse_normal(text),
        }
    }

    fn parse_range(text: &str, range: &str, log: bool) -> Result<TokenLengths, String> {
        let bound = |part: Option<&str>| {
            part.map(str::trim)
                .and_then(|p| p.parse::<usize>().ok())
                .filter(|&v| v >= 1)
        };
        let mut parts = range.split("..");
        let (Some(min), Some(max), None) = (bound(parts.next()), bound(parts.next()), parts.next())
        else {
            return Err(format!(
                "{text:?}: expected MIN..MAX or log:MIN..MAX with whole numbers >= 1"
            ));
        };
        if min > max {
            return Err(format!("{text:?}: MIN is above MAX"));
        }
        Ok(if log {
            TokenLengths::LogUniform { min, max }
        } else {
            TokenLengths::Uniform { min, max }
        })
    }

    fn parse_normal(text: &str) -> Result<TokenLengths, String> {
        let mut parts = text.split(',').map(str::trim);
        let number = |part: Option<&str>, what: &str| -> Result<Option<f64>, String> {
            part.map(|p| {
                p.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("{what} {p:?} is not a non-negative number"))
            })
            .transpose()
        };
        let mean = number(parts.next(), "mean")?.unwrap_or(0.0);
        let stddev = number(parts.next(), "standard deviation")?.unwrap_or(0.0);
        if parts.next().is_some() {
            return Err(format!(
                "{text:?}: expected MEAN, MEAN,STDDEV, MIN..MAX or log:MIN..MAX"
            ));
        }
        if mean < 1.0 {
            return Err(format!("{text:?}: the mean must be at least 1 token"));
        }
        Ok(TokenLengths::Normal { mean, stddev })
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        match *self {
            TokenLengths::Normal { mean, stddev } => {
                let value = if stddev > 0.0 {
                    Normal::new(mean, stddev)
                        .map(|normal| normal.sample(rng))
                        .unwrap_or(mean)
                } else {
                    mean
                };
                value.round().max(1.0) as usize
            }
            TokenLengths::Uniform { min, max } => rng.random_range(min..=max),
            TokenLengths::LogUniform { min, max } => {
                // Whole numbers: draw over [min, max + 1) in the log, then floor, so `max`
                // is as reachable as its neighbours.
                let (low, high) = ((min as f64).ln(), ((max + 1) as f64).ln());
                let value = rng.random_range(low..high).exp().floor() as usize;
                value.clamp(min, max)
            }
        }
    }
}

/// As written in a run's summary: `128 ± 0`, `uniform 16..1024`, `log-uniform 16..512`.
impl std::fmt::Display for TokenLengths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenLengths::Normal { mean, stddev } => write!(f, "{mean} ± {stddev}"),
            TokenLengths::Uniform { min, max } => write!(f, "uniform {min}..{max}"),
            TokenLengths::LogUniform { min, max } => write!(f, "log-uniform {min}..{max}"),
        }
    }
}

/// What every request body carries besides its prompt.
#[derive(Debug, Clone)]
pub struct BodyOptions {
    /// The model name the server expects.
    pub model: String,
    /// Ask the server to ignore end-of-sequence (vLLM's and gembatch's `ignore_eos`), so
    /// outputs have exactly `max_tokens`.
    pub ignore_eos: bool,
    /// Sampling temperature, if set.
    pub temperature: Option<f64>,
}

/// Synthetic prompts: words that are one token each in common tokenizers, drawn with a seed.
const WORDS: &[&str] = &[
    "time",
    "year",
    "people",
    "way",
    "day",
    "man",
    "thing",
    "woman",
    "life",
    "child",
    "world",
    "school",
    "state",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "case",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "government",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "name",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "good",
    "new",
    "first",
    "last",
    "long",
    "great",
    "little",
    "own",
    "other",
    "old",
    "big",
    "high",
    "different",
    "small",
    "large",
    "next",
    "early",
    "young",
    "important",
    "few",
    "public",
    "bad",
    "same",
    "able",
];

/// `count` synthetic completion requests with prompt and output lengths drawn from `prompt`
/// and `output`, reproducible from `seed`.
pub fn synthetic(
    count: usize,
    prompt: TokenLengths,
    output: TokenLengths,
    seed: u64,
    options: &BodyOptions,
) -> Vec<WorkItem> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let words = prompt.sample(&mut rng);
            let mut text = String::with_capacity(words * 8);
            for index in 0..words {
                if index > 0 {
                    text.push(' ');
                }
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            let max_tokens = output.sample(&mut rng);
            WorkItem::build(
                Route::Completions,
                "prompt",
                Value::String(text),
                &options.fields(max_tokens),
                &Map::new(),
                &options.model,
            )
        })
        .collect()
}

/// One request per dataset row; a row's own `max_tokens` wins over `output`'s draw.
pub fn from_rows(
    rows: &[Row],
    output: TokenLengths,
    seed: u64,
    options: &BodyOptions,
) -> Vec<WorkItem> {
    let mut rng = StdRng::seed_from_u64(seed);
    rows.iter()
        .map(|row| {
            let defaults = options.fields(output.sample(&mut rng));
            WorkItem::for_row(row, &defaults, &options.model)
        })
        .collect()
}

impl BodyOptions {
    /// The generation fields of a request of `max_tokens`.
    fn fields(&self, max_tokens: usize) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("max_tokens".into(), json!(max_tokens));
        if let Some(temperature) = self.temperature {
            fields.insert("temperature".into(), json!(temperature));
        }
        if self.ignore_eos {
            fields.insert("ignore_eos".into(), json!(true));
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::RowRequest;

    fn options() -> BodyOptions {
        BodyOptions {
            model: "m".into(),
            ignore_eos: true,
            temperature: Some(0.0),
        }
    }

    #[test]
    fn parses_lengths() {
        assert_eq!(
            TokenLengths::parse("128"),
            Ok(TokenLengths::Normal {
                mean: 128.0,
                stddev: 0.0
            })
        );
        assert_eq!(
            TokenLengths::parse("64, 8"),
            Ok(TokenLengths::Normal {
                mean: 64.0,
                stddev: 8.0
            })
        );
        assert_eq!(
            TokenLengths::parse("16..1024"),
            Ok(TokenLengths::Uniform { min: 16, max: 1024 })
        );
        assert_eq!(
            TokenLengths::parse("log:16..512"),
            Ok(TokenLengths::LogUniform { min: 16, max: 512 })
        );
        assert!(TokenLengths::parse("0").unwrap_err().contains("at least 1"));
        assert!(TokenLengths::parse("a").unwrap_err().contains("\"a\""));
        assert!(
            TokenLengths::parse("1,2,3")
                .unwrap_err()
                .contains("MEAN,STDDEV")
        );
        assert!(TokenLengths::parse("5,-1").is_err());
        for bad in ["0..10", "10..", "log:a..5", "1..2..3", "log:16"] {
            assert!(
                TokenLengths::parse(bad).unwrap_err().contains("MIN..MAX"),
                "{bad}"
            );
        }
        assert!(
            TokenLengths::parse("20..10")
                .unwrap_err()
                .contains("MIN is above MAX")
        );
    }

    /// Each bounded form stays in its bounds and reaches both ends; the log-uniform one
    /// puts as many draws in each doubling.
    #[test]
    fn bounded_lengths_cover_their_range_in_their_shape() {
        let mut rng = StdRng::seed_from_u64(1);
        let draws = |lengths: TokenLengths, rng: &mut StdRng| {
            (0..40_000).map(|_| lengths.sample(rng)).collect::<Vec<_>>()
        };
        let uniform = draws(TokenLengths::Uniform { min: 16, max: 1024 }, &mut rng);
        let log = draws(TokenLengths::LogUniform { min: 16, max: 1023 }, &mut rng);
        for values in [&uniform, &log] {
            assert!(values.iter().all(|v| (16..=1024).contains(v)));
            assert_eq!(*values.iter().min().unwrap(), 16);
            assert!(*values.iter().max().unwrap() >= 1020);
        }
        let mean = uniform.iter().sum::<usize>() as f64 / uniform.len() as f64;
        assert!((mean - 520.0).abs() < 10.0, "uniform mean {mean}");
        // 16..1023 is six doublings: each should hold a sixth of the draws.
        for doubling in 0..6 {
            let (low, high) = (16 << doubling, 32 << doubling);
            let share =
                log.iter().filter(|&&v| v >= low && v < high).count() as f64 / log.len() as f64;
            assert!((share - 1.0 / 6.0).abs() < 0.01, "{low}..{high}: {share}");
        }
    }

    #[test]
    fn synthetic_requests_are_seeded_and_sized() {
        let fixed = TokenLengths::Normal {
            mean: 20.0,
            stddev: 0.0,
        };
        let spread = TokenLengths::Normal {
            mean: 50.0,
            stddev: 10.0,
        };
        let one = synthetic(50, fixed, spread, 7, &options());
        assert_eq!(one.len(), 50);
        let again = synthetic(50, fixed, spread, 7, &options());
        assert!(one.iter().zip(&again).all(|(a, b)| a.body == b.body));
        let other = synthetic(50, fixed, spread, 8, &options());
        assert!(one.iter().zip(&other).any(|(a, b)| a.body != b.body));
        let mut max_tokens = Vec::new();
        for item in &one {
            let body: Value = serde_json::from_slice(&item.body).unwrap();
            assert_eq!(body["prompt"].as_str().unwrap().split(' ').count(), 20);
            assert_eq!(body["stream"], true);
            assert_eq!(body["stream_options"]["include_usage"], true);
            assert_eq!(body["ignore_eos"], true);
            assert_eq!(body["model"], "m");
            max_tokens.push(body["max_tokens"].as_f64().unwrap());
        }
        let mean = max_tokens.iter().sum::<f64>() / max_tokens.len() as f64;
        assert!((40.0..60.0).contains(&mean), "{mean}");
        assert!(max_tokens.iter().any(|&m| m != max_tokens[0]));
    }

    #[test]
    fn dataset_rows_keep_their_route_and_parameters() {
        let mut params = serde_json::Map::new();
        params.insert("max_tokens".into(), json!(3));
        let rows = [
            Row {
                id: "a".into(),
                line: 1,
                request: RowRequest::Prompt("Hi".into()),
                params,
                passthrough: Vec::new(),
            },
            Row {
                id: "b".into(),
                line: 2,
                request: RowRequest::Messages(json!([{"role": "user", "content": "Yo"}])),
                params: Default::default(),
                passthrough: Vec::new(),
            },
        ];
        let items = from_rows(
            &rows,
            TokenLengths::Normal {
                mean: 9.0,
                stddev: 0.0,
            },
            1,
            &options(),
        );
        assert_eq!(items[0].route, Route::Completions);
        assert_eq!(items[1].row_id.as_deref(), Some("b"));
        assert_eq!(items[1].route, Route::Chat);
        let first: Value = serde_json::from_slice(&items[0].body).unwrap();
        assert_eq!(first["max_tokens"], 3, "the row's own max_tokens wins");
        let second: Value = serde_json::from_slice(&items[1].body).unwrap();
        assert_eq!(second["max_tokens"], 9);
        assert_eq!(second["messages"][0]["content"], "Yo");
    }
}
