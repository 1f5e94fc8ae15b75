//! Greedy choice over a vocabulary of logits (262,144 for Gemma 3): the first largest
//! logit, as llama.cpp's greedy sampler takes it, found with per-lane maxima that the
//! compiler vectorizes; a branchy scan cost a tenth of a batched decoding step.

/// Values compared side by side.
const LANES: usize = 16;

crate::model::simd::widest_vectors! {
    /// The largest value (NaN ignored; `-inf` for none), with the widest vectors this CPU
    /// has (the maximum is exact in any order, so every width gives the same value).
    pub fn max_value(values: &[f32]) -> f32 = max_loop;
}

#[inline(always)]
fn max_loop(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            if v > *lane {
                *lane = v;
            }
        }
    }
    lanes.iter().chain(rest).fold(
        f32::NEG_INFINITY,
        |best, &v| if v > best { v } else { best },
    )
}

/// Index of the first largest logit (0 when none is above `-inf`).
pub fn argmax(logits: &[f32]) -> u32 {
    let best = max_value(logits);
    logits.iter().position(|&v| v == best).unwrap_or(0) as u32
}

/// Index of the first largest logit and the gap to the runner-up (the largest of all the
/// others), relative to the largest.
pub fn top2(logits: &[f32]) -> (u32, f32) {
    let index = argmax(logits);
    let best = logits
        .get(index as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let (before, after) = logits.split_at((index as usize).min(logits.len()));
    let second = max_value(before).max(max_value(after.get(1..).unwrap_or(&[])));
    (index, (best - second) / best.abs().max(f32::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious scan, the reference.
    fn reference(logits: &[f32]) -> (u32, f32) {
        let (mut best, mut second) = ((0usize, f32::NEG_INFINITY), f32::NEG_INFINITY);
        for (i, &l) in logits.iter().enumerate() {
            if l > best.1 {
                second = best.1;
                best = (i, l);
            } else if l > second {
                second = l;
            }
        }
        let gap = (best.1 - second) / best.1.abs().max(f32::MIN_POSITIVE);
        (best.0 as u32, gap)
    }

    #[test]
    fn agrees_with_a_plain_scan_on_ties_edges_and_every_length() {
        let mut s = 17u32;
        for len in [1usize, 2, 15, 16, 17, 33, 1000, 262_144] {
            let mut logits: Vec<f32> = (0..len)
                .map(|_| {
                    s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (s >> 8) as f32 / (1u32 << 24) as f32 * 40.0 - 20.0
                })
                .collect();
            assert_eq!(top2(&logits), reference(&logits), "{len} logits");
            // A tie for the top: the first one wins, and the gap is 0.
            if len > 3 {
                let top = logits.iter().cloned().fold(f32::MIN, f32::max) + 1.0;
                logits[len / 3] = top;
                logits[len - 1] = top;
                assert_eq!(top2(&logits), reference(&logits));
                assert_eq!(top2(&logits), ((len / 3) as u32, 0.0));
            }
        }
        let with_nan = [1.0, f32::NAN, 3.0, 2.0];
        assert_eq!(top2(&with_nan), reference(&with_nan));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }
}
