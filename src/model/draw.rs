//! Drawing one token from a vocabulary of logits (262,144 for Gemma 3) with temperature,
//! top-k and top-p, in a few vectorized passes instead of a sort of the vocabulary.
//!
//! candle's `LogitsProcessor` computes a softmax tensor, copies it out and, for top-p,
//! argsorts all 262,144 probabilities per token: about 3 ms per token at a plain
//! temperature and 12 ms with top-p on one core (`cargo bench --bench sampling`), for each
//! of a step's 16 sequences in turn. llama.cpp samples cheaply because a sampler
//! chain rarely needs the whole vocabulary ordered; this does the same:
//! - plain temperature: one pass for the maximum, one for `exp` summed in blocks of
//!   [`BLOCK`] tokens, then `exp` again over the one block the draw lands in;
//! - top-k / top-p: only the *band* of tokens within [`FIRST_BAND`] nats of the maximum is
//!   sorted (a few dozen tokens for a trained model). The band holds the kept set as soon as
//!   it has `k` tokens and, for top-p, `p` of the whole mass (the mass is summed over the
//!   whole vocabulary first); otherwise the band widens, up to the whole vocabulary.
//!
//! The kept set is candle's: top-k keeps the `k` largest; top-p then keeps the longest
//! prefix of them, by descending probability (ties by token id), whose mass *before* the
//! token stays under `p`, with probabilities normalized over the whole vocabulary. The
//! kept tokens are drawn in proportion to their probabilities. `exp` is a polynomial
//! ([`exp_non_positive`], relative error under 3e-7), so a seed does not reproduce candle's
//! draws, only their distribution.

use rand::Rng;

/// Values handled side by side, so the compiler vectorizes the loops.
const LANES: usize = 16;
/// Tokens per block of the plain-temperature pass: the block sums are kept, the weights are
/// not, and only the chosen block's weights are computed twice.
const BLOCK: usize = 1024;
/// The first band, in nats below the maximum: tokens under `exp(-8)` (0.03 %) of the most
/// likely one are rarely in a top-p set of a trained model.
const FIRST_BAND: f32 = 8.0;
/// Past this width the band is the whole vocabulary.
const WIDEST_BAND: f32 = 64.0;

/// What is kept before the draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filter {
    /// Divides the logits; above 0.
    pub temperature: f32,
    /// Keep the `k` most likely tokens; 0 keeps them all.
    pub top_k: usize,
    /// Keep the smallest most likely set with this much mass; 1 keeps them all.
    pub top_p: f32,
}

/// Reused buffers of one sequence's draws, so a token allocates nothing once warm.
#[derive(Debug, Default)]
pub struct Drawer {
    block_sums: Vec<f64>,
    band: Vec<(u32, f32)>,
}

impl Drawer {
    /// Draws a token id from `logits` with `filter`, using `rng`. Logits that are all
    /// `-inf` or NaN give token 0; NaN logits are never drawn.
    pub fn draw(&mut self, logits: &[f32], filter: Filter, rng: &mut impl Rng) -> u32 {
        let max = super::argmax::max_value(logits);
        if !max.is_finite() {
            return super::argmax::argmax(logits);
        }
        let scale = 1.0 / filter.temperature;
        let whole = filter.top_k == 0 || filter.top_k >= logits.len();
        if whole && filter.top_p >= 1.0 {
            return self.draw_all(logits, max, scale, rng);
        }
        self.draw_kept(logits, max, scale, filter, rng)
    }

    /// Every token, in proportion to `exp((logit - max) * scale)`.
    fn draw_all(&mut self, logits: &[f32], max: f32, scale: f32, rng: &mut impl Rng) -> u32 {
        self.block_sums.clear();
        self.block_sums.extend(
            logits
                .chunks(BLOCK)
                .map(|block| f64::from(sum_weights(block, max, scale))),
        );
        let total: f64 = self.block_sums.iter().sum();
        let mut target = rng.random::<f64>() * total;
        for (index, &sum) in self.block_sums.iter().enumerate() {
            if target < sum {
                let start = index * BLOCK;
                let block = &logits[start..(start + BLOCK).min(logits.len())];
                let weights = block.iter().map(|&l| weight(l, max, scale));
                return (start + pick(weights, target as f32)) as u32;
            }
            target -= sum;
        }
        // Rounding left the target past the last block: the last token with weight.
        last_weighted(logits, max, scale)
    }

    /// The kept set of a top-k or top-p filter, found in a band around the maximum.
    fn draw_kept(
        &mut self,
        logits: &[f32],
        max: f32,
        scale: f32,
        filter: Filter,
        rng: &mut impl Rng,
    ) -> u32 {
        let needs_mass = filter.top_p < 1.0;
        let total = if needs_mass {
            logits
                .chunks(BLOCK)
                .map(|block| f64::from(sum_weights(block, max, scale)))
                .sum::<f64>()
        } else {
            0.0
        };
        let k = if filter.top_k == 0 {
            logits.len()
        } else {
            filter.top_k.min(logits.len())
        };
        let mut nats = FIRST_BAND;
        loop {
            let floor = if nats > WIDEST_BAND {
                f32::NEG_INFINITY
            } else {
                max - nats / scale
            };
            self.fill_band(logits, floor, max, scale);
            let kept = kept_len(&self.band, k, filter.top_p, total);
            // The band's answer is final when it could not change with more tokens: all
            // tokens are in it, or it holds `k` of them, or its mass already reaches `p`.
            let band_is_enough = floor == f32::NEG_INFINITY
                || self.band.len() >= k
                || (needs_mass && kept < self.band.len());
            if band_is_enough {
                let kept = &self.band[..kept.max(1)];
                let sum: f32 = kept.iter().map(|&(_, w)| w).sum();
                let index = pick(kept.iter().map(|&(_, w)| w), rng.random::<f32>() * sum);
                return kept[index].0;
            }
            nats *= 2.0;
        }
    }

    /// The band: every token with a logit at or above `floor`, with its weight, most likely
    /// first (ties by token id).
    fn fill_band(&mut self, logits: &[f32], floor: f32, max: f32, scale: f32) {
        self.band.clear();
        self.band.extend(
            logits
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l >= floor)
                .map(|(id, &l)| (id as u32, weight(l, max, scale))),
        );
        self.band
            .sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
}

/// How many of the sorted band's first tokens are kept: at most `k`, and for `top_p < 1`
/// those whose mass before them, out of `total`, stays under `top_p`. When the band ends
/// before the mass is reached, all of the band (the caller widens it).
fn kept_len(band: &[(u32, f32)], k: usize, top_p: f32, total: f64) -> usize {
    let limit = band.len().min(k);
    if top_p >= 1.0 {
        return limit;
    }
    let target = f64::from(top_p) * total;
    let mut before = 0.0f64;
    for (count, &(_, w)) in band[..limit].iter().enumerate() {
        if before >= target {
            return count;
        }
        before += f64::from(w);
    }
    limit
}

/// Index of the weight in which `target` falls (the last one with weight when rounding
/// carries it past the end).
fn pick(weights: impl Iterator<Item = f32>, mut target: f32) -> usize {
    let mut last = 0;
    for (index, w) in weights.enumerate() {
        if w > 0.0 {
            if target < w {
                return index;
            }
            last = index;
        }
        target -= w;
    }
    last
}

/// The last token with a weight above 0.
fn last_weighted(logits: &[f32], max: f32, scale: f32) -> u32 {
    logits
        .iter()
        .rposition(|&l| weight(l, max, scale) > 0.0)
        .unwrap_or(0) as u32
}

/// `exp((logit - max) * scale)`, 0 for NaN.
#[inline(always)]
fn weight(logit: f32, max: f32, scale: f32) -> f32 {
    let x = (logit - max) * scale;
    if x.is_nan() { 0.0 } else { exp_non_positive(x) }
}

crate::model::simd::widest_vectors! {
    /// The sum of [`weight`] over `logits`, with the widest vectors this CPU has. Always 16
    /// lanes added in the same order, so the sum has the same bits on every CPU.
    fn sum_weights(logits: &[f32], max: f32, scale: f32) -> f32 = sum_weights_loop;
}

#[inline(always)]
fn sum_weights_loop(logits: &[f32], max: f32, scale: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &l) in lanes.iter_mut().zip(chunk) {
            *lane += weight(l, max, scale);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&l| weight(l, max, scale)).sum::<f32>()
}

/// `e^x` for `x <= 0` (0 below -87, where f32 underflows), branch-free so loops over it
/// vectorize: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, `e^r` by a degree-6 Taylor
/// polynomial (its error, `r^7 / 7!` < 2e-7 relative, is under f32's rounding of the
/// sum), `2^n` written into the exponent bits.
#[inline(always)]
pub fn exp_non_positive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounds to nearest by adding and subtracting 1.5 * 2^23 (|y| < 2^22 here): `round`
    // is a library call that keeps the loop scalar.
    const ROUNDER: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.0, 0.0);
    let n = (clamped * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Probabilities of every token under `filter`, by the obvious method: softmax, a full
    /// sort, candle's kept set, renormalized.
    fn reference(logits: &[f32], filter: Filter) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - max) / filter.temperature as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let k = if filter.top_k == 0 {
            logits.len()
        } else {
            filter.top_k
        };
        let mut kept = vec![0.0; logits.len()];
        let mut before = 0.0;
        for &id in order.iter().take(k) {
            if filter.top_p < 1.0 && before >= filter.top_p as f64 {
                break;
            }
            before += weights[id] / total;
            kept[id] = weights[id];
        }
        let sum: f64 = kept.iter().sum();
        kept.iter().map(|w| w / sum).collect()
    }

    /// Draws `n` tokens and returns each token's share.
    fn shares(logits: &[f32], filter: Filter, n: usize) -> Vec<f64> {
        let mut drawer = Drawer::default();
        let mut rng = StdRng::seed_from_u64(11);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[drawer.draw(logits, filter, &mut rng) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    /// Logits of a peaked distribution over `vocab` tokens, like a trained model's.
    fn peaked(vocab: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(3);
        (0..vocab)
            .map(|i| {
                let noise: f32 = rng.random::<f32>() * 4.0;
                if i % 97 == 5 { 12.0 - noise } else { noise }
            })
            .collect()
    }

    #[test]
    fn exp_matches_the_standard_library() {
        let mut x = 0.0f32;
        while x > -100.0 {
            let (ours, std) = (exp_non_positive(x), x.exp());
            if x < -87.0 {
                // Flushed: under 2e-38 of the largest weight, nothing to a draw.
                assert_eq!(ours, 0.0, "exp({x})");
            } else {
                let bound = 3e-7 * std + f32::MIN_POSITIVE;
                assert!((ours - std).abs() <= bound, "exp({x}) = {ours}, std {std}");
            }
            x -= 0.0137;
        }
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert_eq!(exp_non_positive(-200.0), 0.0);
        assert_eq!(exp_non_positive(f32::NEG_INFINITY), 0.0);
    }

    /// Each filter's empirical shares against the reference probabilities, within five
    /// binomial standard deviations per token (plus the reference's exclusions exactly).
    #[test]
    fn draws_follow_the_reference_distribution() {
        let logits = peaked(3000);
        let filters = [
            (0.8, 0, 1.0),
            (1.0, 40, 1.0),
            (0.7, 0, 0.9),
            (1.0, 20, 0.5),
            (2.0, 0, 0.95),
            (0.5, 3000, 0.999),
        ];
        let n = 60_000;
        for (temperature, top_k, top_p) in filters {
            let filter = Filter {
                temperature,
                top_k,
                top_p,
            };
            let expected = reference(&logits, filter);
            let got = shares(&logits, filter, n);
            for (id, (&e, &g)) in expected.iter().zip(&got).enumerate() {
                if e == 0.0 {
                    assert_eq!(g, 0.0, "{filter:?}: token {id} is not kept but was drawn");
                    continue;
                }
                let sigma = (e * (1.0 - e) / n as f64).sqrt();
                assert!(
                    (g - e).abs() <= 5.0 * sigma + 1e-4,
                    "{filter:?}: token {id} drawn {g:.5}, expected {e:.5}"
                );
            }
        }
    }

    #[test]
    fn a_flat_tail_widens_the_band_until_it_holds_the_top_p_set() {
        // One token 10 nats above 100,000 others: the first band (8 nats) holds only it, at
        // a fifth of the mass, so a top-p of 0.5 needs tens of thousands of the tail's.
        let mut logits = vec![-10.0f32; 100_001];
        logits[0] = 0.0;
        let filter = Filter {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
        };
        let expected = reference(&logits, filter);
        let kept = expected.iter().filter(|&&p| p > 0.0).count();
        assert!(kept > 30_000, "{kept}");
        let n = 4_000;
        let got = shares(&logits, filter, n);
        let sigma = (expected[0] * (1.0 - expected[0]) / n as f64).sqrt();
        assert!(
            (got[0] - expected[0]).abs() < 5.0 * sigma,
            "{} vs {}",
            got[0],
            expected[0]
        );
        let outside: f64 = (kept..logits.len()).map(|id| got[id]).sum();
        assert_eq!(outside, 0.0, "tokens past the top-p set were drawn");
        let tail: f64 = got[1..kept].iter().sum();
        assert!(
            (tail - (1.0 - expected[0])).abs() < 0.04,
            "the tail drew {tail}"
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits = peaked(5000);
        let filter = Filter {
            temperature: 0.9,
            top_k: 50,
            top_p: 0.9,
        };
        let run = || {
            let mut rng = StdRng::seed_from_u64(5);
            let mut drawer = Drawer::default();
            (0..50)
                .map(|_| drawer.draw(&logits, filter, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn top_k_one_and_degenerate_logits_pick_the_maximum() {
        let logits = peaked(1000);
        let best = crate::model::argmax::argmax(&logits);
        let mut rng = StdRng::seed_from_u64(1);
        let mut drawer = Drawer::default();
        let one = Filter {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
        };
        for _ in 0..100 {
            assert_eq!(drawer.draw(&logits, one, &mut rng), best);
        }
        let plain = Filter {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let mut only_nan = vec![f32::NAN; 10];
        only_nan[7] = 0.0;
        for _ in 0..100 {
            assert_eq!(drawer.draw(&only_nan, plain, &mut rng), 7);
        }
        let none = vec![f32::NEG_INFINITY; 10];
        assert_eq!(drawer.draw(&none, plain, &mut rng), 0);
        assert_eq!(drawer.draw(&[], plain, &mut rng), 0);
    }
}
