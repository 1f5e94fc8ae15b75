//! Turning logits into the next token: greedy, or seeded temperature / top-k / top-p.

use candle_core::{DType, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::argmax::argmax;
use super::error::{ModelError, Result};

/// Sampling settings of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f64,
    /// Nucleus threshold in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Keep only the `k` most likely tokens; 0 disables it.
    pub top_k: usize,
    /// Seed of the sampler, so a given seed reproduces its output.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks ranges, naming the offending parameter.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, reason: &str| {
            Err(ModelError::InvalidParameter {
                name,
                reason: reason.into(),
            })
        };
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return invalid("temperature", "must be a number >= 0 (0 is greedy)");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid("top_p", "must be in (0, 1]");
        }
        Ok(())
    }

    /// A sampler with its own seeded random state.
    pub fn sampler(&self) -> Sampler {
        let t = self.temperature;
        let sampling = match (t > 0.0, self.top_k > 0, self.top_p < 1.0) {
            (false, _, _) => Sampling::ArgMax,
            (true, false, false) => Sampling::All { temperature: t },
            (true, true, false) => Sampling::TopK {
                k: self.top_k,
                temperature: t,
            },
            (true, false, true) => Sampling::TopP {
                p: self.top_p,
                temperature: t,
            },
            (true, true, true) => Sampling::TopKThenTopP {
                k: self.top_k,
                p: self.top_p,
                temperature: t,
            },
        };
        Sampler {
            greedy: matches!(sampling, Sampling::ArgMax),
            inner: LogitsProcessor::from_sampling(self.seed, sampling),
        }
    }
}

/// A seed for a request that names none: different on every call, also for calls made at
/// the same instant.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Per-sequence sampling state.
pub struct Sampler {
    /// Temperature 0: the first largest logit ([`argmax`]), as llama.cpp picks it.
    greedy: bool,
    inner: LogitsProcessor,
}

impl Sampler {
    /// Picks the next token from a `[vocab]` logits vector.
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        if self.greedy {
            let values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            return Ok(argmax(&values));
        }
        Ok(self.inner.sample(logits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_seed_same_tokens_and_greedy_is_argmax() {
        let logits = Tensor::new(&[0.1f32, 2.0, 1.9, 0.5, 1.0], &Device::Cpu).unwrap();
        let params = SamplingParams {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: SamplingParams| {
            (0..20)
                .map(|_| 0)
                .scan(p.sampler(), |s, _| Some(s.sample(&logits).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(params), draw(params));
        assert!(
            draw(params).iter().any(|&t| t != 1),
            "temperature 1 should not always pick the argmax"
        );
        assert!(draw(SamplingParams::default()).iter().all(|&t| t == 1));
    }

    #[test]
    fn rejects_out_of_range_parameters_by_name() {
        let bad = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("temperature")
        );
        let bad = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("top_p"));
    }
}
