//! Log-probabilities of a step's tokens: the log-softmax of the model's raw logits (before
//! temperature, top-k or top-p, as vLLM reports them by default), for the sampled token and
//! the most likely ones.

/// The lowest log-probability reported: what vLLM clamps `-inf` to, so that JSON (which
/// has no infinities) can carry it.
pub const FLOOR: f32 = -9999.0;

/// A token and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// The log-probabilities of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprobs {
    /// The token that was sampled.
    pub sampled: TokenLogprob,
    /// The `top` most likely tokens, most likely first; ties go to the lower id.
    pub top: Vec<TokenLogprob>,
}

/// The log-probabilities of `sampled` and of the `top` most likely tokens of `logits`.
pub fn step_logprobs(logits: &[f32], sampled: u32, top: usize) -> StepLogprobs {
    let normalizer = log_sum_exp(logits);
    let logprob = |id: u32| {
        let logit = logits
            .get(id as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        ((f64::from(logit) - normalizer) as f32).max(FLOOR)
    };
    StepLogprobs {
        sampled: TokenLogprob {
            id: sampled,
            logprob: logprob(sampled),
        },
        top: most_likely(logits, top)
            .into_iter()
            .map(|id| TokenLogprob {
                id,
                logprob: logprob(id),
            })
            .collect(),
    }
}

/// `ln Σ exp(x)` in f64, shifted by the largest value so that nothing overflows; NaNs are
/// left out.
fn log_sum_exp(values: &[f32]) -> f64 {
    let largest = values
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !largest.is_finite() {
        return f64::from(largest);
    }
    let largest = f64::from(largest);
    let sum: f64 = values
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (f64::from(v) - largest).exp())
        .sum();
    largest + sum.ln()
}

/// The ids of the `count` largest values, largest first, the lower id first among equals;
/// NaNs rank last.
fn most_likely(values: &[f32], count: usize) -> Vec<u32> {
    let count = count.min(values.len());
    if count == 0 {
        return Vec::new();
    }
    let rank = |a: &u32, b: &u32| {
        let value = |id: &u32| {
            let v = values[*id as usize];
            if v.is_nan() { f32::NEG_INFINITY } else { v }
        };
        value(b).total_cmp(&value(a)).then(a.cmp(b))
    };
    let mut ids: Vec<u32> = (0..values.len() as u32).collect();
    ids.select_nth_unstable_by(count - 1, rank);
    ids.truncate(count);
    ids.sort_unstable_by(rank);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn log_softmax_of_known_values() {
        let logits = [0.0f32, (2.0f32).ln(), (3.0f32).ln(), (2.0f32).ln()];
        let step = step_logprobs(&logits, 0, 3);
        let expected = |p: f32| (p / 8.0).ln();
        assert!((step.sampled.logprob - expected(1.0)).abs() < 1e-6);
        assert_eq!(
            step.top.iter().map(|t| t.id).collect::<Vec<_>>(),
            [2, 1, 3],
            "most likely first, the lower id first among equals"
        );
        assert!((step.top[0].logprob - expected(3.0)).abs() < 1e-6);
        assert!(step_logprobs(&logits, 1, 0).top.is_empty());
        assert_eq!(step_logprobs(&logits, 1, 99).top.len(), 4);
    }

    #[test]
    fn impossible_tokens_are_floored_and_large_logits_do_not_overflow() {
        let step = step_logprobs(&[f32::NEG_INFINITY, 1000.0, 999.0], 0, 2);
        assert_eq!(step.sampled.logprob, FLOOR);
        assert!((step.top[0].logprob - (-(1.0f32 + (-1.0f32).exp()).ln())).abs() < 1e-5);
        let step = step_logprobs(&[f32::NAN, 1.0], 1, 2);
        assert_eq!(step.top[0].id, 1);
        assert_eq!(step.sampled.logprob, 0.0);
    }

    proptest! {
        #[test]
        fn probabilities_sum_to_one_and_top_is_sorted(
            logits in proptest::collection::vec(-30.0f32..30.0, 1..300),
            top in 0usize..25,
        ) {
            let all = step_logprobs(&logits, 0, logits.len());
            let total: f64 = all.top.iter().map(|t| f64::from(t.logprob).exp()).sum();
            prop_assert!((total - 1.0).abs() < 1e-4, "sum {total}");
            let some = step_logprobs(&logits, 0, top);
            prop_assert_eq!(&some.top[..], &all.top[..top.min(logits.len())]);
            prop_assert!(some.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        }
    }
}
