//! The requests a load run sends: built once, up front, from a dataset or from a seeded
//! synthetic distribution, then cycled, so sending costs no JSON work.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use serde_json::{Map, Value, json};

use crate::client::WorkItem;
use crate::common::Route;
use crate::dataset::Row;

/// A length distribution in tokens: mean and standard deviation, at least 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLengths {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (0: every request the same length).
    pub stddev: f64,
}

impl TokenLengths {
    /// Parses `MEAN` or `MEAN,STDDEV`.
    pub fn parse(text: &str) -> Result<TokenLengths, String> {
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
            return Err(format!("{text:?}: expected MEAN or MEAN,STDDEV"));
        }
        if mean < 1.0 {
            return Err(format!("{text:?}: the mean must be at least 1 token"));
        }
        Ok(TokenLengths { mean, stddev })
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let value = if self.stddev > 0.0 {
            Normal::new(self.mean, self.stddev)
                .map(|normal| normal.sample(rng))
                .unwrap_or(self.mean)
        } else {
            self.mean
        };
        value.round().max(1.0) as usize
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
            Ok(TokenLengths {
                mean: 128.0,
                stddev: 0.0
            })
        );
        assert_eq!(
            TokenLengths::parse("64, 8"),
            Ok(TokenLengths {
                mean: 64.0,
                stddev: 8.0
            })
        );
        assert!(TokenLengths::parse("0").unwrap_err().contains("at least 1"));
        assert!(TokenLengths::parse("a").unwrap_err().contains("\"a\""));
        assert!(
            TokenLengths::parse("1,2,3")
                .unwrap_err()
                .contains("MEAN,STDDEV")
        );
        assert!(TokenLengths::parse("5,-1").is_err());
    }

    #[test]
    fn synthetic_requests_are_seeded_and_sized() {
        let fixed = TokenLengths {
            mean: 20.0,
            stddev: 0.0,
        };
        let spread = TokenLengths {
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
            TokenLengths {
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
