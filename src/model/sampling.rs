//! Turning logits into the next token: greedy, or seeded temperature / top-k / top-p
//! ([`super::draw`]).

use std::sync::Mutex;

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::argmax::argmax;
use super::draw::{Drawer, Filter};
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
        let filter = (self.temperature > 0.0).then_some(Filter {
            temperature: self.temperature as f32,
            top_k: self.top_k,
            top_p: self.top_p as f32,
        });
        Sampler {
            filter,
            drawer: Drawer::default(),
            rng: StdRng::seed_from_u64(self.seed),
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
    /// `None` (temperature 0): the first largest logit ([`argmax`]), as llama.cpp picks it.
    filter: Option<Filter>,
    drawer: Drawer,
    rng: StdRng,
}

impl Sampler {
    /// Picks the next token from a `[vocab]` logits vector.
    pub fn sample(&mut self, logits: &Tensor) -> Result<u32> {
        let values = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(self.sample_values(&values))
    }

    /// Picks the next token from logits already on the host.
    pub fn sample_values(&mut self, logits: &[f32]) -> u32 {
        match self.filter {
            None => argmax(logits),
            Some(filter) => self.drawer.draw(logits, filter, &mut self.rng),
        }
    }
}

/// One draw of a batched step: a sequence's sampler and its row of logits.
pub struct Draw<'a> {
    /// The sequence's sampler.
    pub sampler: &'a mut Sampler,
    /// Its row of the step's logits.
    pub logits: &'a [f32],
}

/// Draws every row's token, spread over the CPU threads when there are several: a sampled
/// draw reads all 262,144 logits, and sixteen of them one after the other would cost a
/// decoding step a fifth of its time. Each row has its own sampler, so the tokens do not
/// depend on which thread drew them.
pub fn sample_rows(draws: Vec<Draw<'_>>) -> Vec<u32> {
    let sampled = draws.iter().filter(|d| d.sampler.filter.is_some()).count();
    if sampled <= 1 {
        return draws
            .into_iter()
            .map(|d| d.sampler.sample_values(d.logits))
            .collect();
    }
    let cells: Vec<Mutex<(Draw<'_>, u32)>> =
        draws.into_iter().map(|d| Mutex::new((d, 0))).collect();
    candle_core::utils::barrier_pool().execute_chunked(cells.len(), |range| {
        for index in range {
            // Each cell is locked by exactly one work item: never contended.
            let mut cell = cells[index].lock().unwrap_or_else(|e| e.into_inner());
            let (draw, token) = &mut *cell;
            *token = draw.sampler.sample_values(draw.logits);
        }
    });
    cells
        .into_iter()
        .map(|cell| cell.into_inner().unwrap_or_else(|e| e.into_inner()).1)
        .collect()
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

    /// Rows drawn together, on the pool's threads, give each sampler's own sequence of
    /// tokens: the same as drawing each row alone.
    #[test]
    fn rows_drawn_together_match_rows_drawn_alone() {
        let rows: Vec<Vec<f32>> = (0..6)
            .map(|r| {
                (0..4096)
                    .map(|i| ((i * 7 + r * 13) % 101) as f32 / 10.0)
                    .collect()
            })
            .collect();
        let params = |seed| SamplingParams {
            temperature: 0.9,
            top_p: if seed % 2 == 0 { 0.9 } else { 1.0 },
            seed,
            ..Default::default()
        };
        let mut together: Vec<Sampler> = (0..6).map(|s| params(s).sampler()).collect();
        let mut alone: Vec<Sampler> = (0..6).map(|s| params(s).sampler()).collect();
        for _ in 0..20 {
            let draws = together
                .iter_mut()
                .zip(&rows)
                .map(|(sampler, logits)| Draw { sampler, logits })
                .collect();
            let drawn = sample_rows(draws);
            let expected: Vec<u32> = alone
                .iter_mut()
                .zip(&rows)
                .map(|(sampler, logits)| sampler.sample_values(logits))
                .collect();
            assert_eq!(drawn, expected);
        }
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
