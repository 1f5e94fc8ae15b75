//! Activations quantized to Q8_K for the Q4_K/Q6_K kernels, as llama.cpp quantizes them:
//! per 256 values, `iscale = 127 / max|x|` and `d = 1 / iscale` (f32), quants
//! `round(x * iscale)` with ties to even (llama.cpp takes the sign of the widest value into
//! `iscale`, which flips the signs of both quants and `d` and leaves every product alike).
//! Stored plus 128, as the unsigned operand the kernels want, with the sum of each 32 quants
//! (Q4_K's offsets multiply them).

use super::SUPER;
use crate::model::kernels::activations::bias;
#[cfg(test)]
use crate::model::kernels::activations::unbiased;
#[cfg(test)]
use crate::model::kernels::pseudo_random;

/// Quants per offset sum.
const SUM_SPAN: usize = 32;
/// Offset sums per super-block.
const SUMS: usize = SUPER / SUM_SPAN;

/// Activation rows quantized to Q8_K: row `i`, super-block `b` at index `i * blocks + b`.
pub(crate) struct SuperRows {
    /// The quants plus 128, as bytes (`q ^ 0x80`).
    pub(super) biased: Vec<[u8; SUPER]>,
    /// Each super-block's `d`.
    pub(super) scales: Vec<f32>,
    /// The sum of each 32 (unbiased) quants.
    pub(super) sums: Vec<[i16; SUMS]>,
    pub(super) blocks: usize,
}

impl SuperRows {
    /// Quantizes `m` rows of `cols` values (whole super-blocks).
    pub(crate) fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        assert!(cols.is_multiple_of(SUPER) && x.len() == m * cols);
        let blocks = cols / SUPER;
        let mut rows = Self {
            biased: vec![[0; SUPER]; m * blocks],
            scales: vec![0.0; m * blocks],
            sums: vec![[0; SUMS]; m * blocks],
            blocks,
        };
        quantize_blocks(x, &mut rows);
        rows
    }

    /// Super-block `at`'s quants without the bias.
    #[cfg(test)]
    pub(super) fn quants(&self, at: usize) -> [i8; SUPER] {
        std::array::from_fn(|c| unbiased(self.biased[at][c]))
    }
}

/// Quantizes each super-block of `x` into `rows`: with AVX-512 or AVX2 where the CPU has
/// it, else one value at a time. All do the same arithmetic (an exact maximum that skips
/// NaN, one division, products rounded half to even and saturated to -128..127 as `as i8`
/// does, NaN to 0), so the quants are the same.
fn quantize_blocks(x: &[f32], rows: &mut SuperRows) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::model::simd::{SimdLevel, level};
        // SAFETY: the level is never more than the CPU has.
        match level() {
            SimdLevel::Avx512 => return unsafe { quantize_blocks_avx512(x, rows) },
            SimdLevel::Avx2 => return unsafe { quantize_blocks_avx2(x, rows) },
            _ => {}
        }
    }
    quantize_blocks_loop(x, rows)
}

/// A super-block's `(d, iscale)` from its largest magnitude (both zero for an all-zero block).
fn block_scale(amax: f32) -> (f32, f32) {
    if amax == 0.0 {
        return (0.0, 0.0);
    }
    let iscale = 127.0 / amax;
    (1.0 / iscale, iscale)
}

/// One value at a time: the reference the SIMD paths match.
fn quantize_blocks_loop(x: &[f32], rows: &mut SuperRows) {
    for (at, block) in x.chunks_exact(SUPER).enumerate() {
        let (d, iscale) = block_scale(block.iter().fold(0f32, |a, &v| a.max(v.abs())));
        for (c, &v) in block.iter().enumerate() {
            let quant = (v * iscale).round_ties_even() as i8;
            rows.biased[at][c] = bias(quant);
            rows.sums[at][c / SUM_SPAN] += quant as i16;
        }
        rows.scales[at] = d;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quantize_blocks_avx512(x: &[f32], rows: &mut SuperRows) {
    use std::arch::x86_64::*;
    let sign = _mm512_set1_ps(-0.0);
    let (low, high) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
    let flip = _mm_set1_epi8(i8::MIN);
    for (at, block) in x.chunks_exact(SUPER).enumerate() {
        // SAFETY: a super-block is 256 f32 (16 loads of 16), its quants 256 bytes (16
        // stores of 16).
        unsafe {
            let values: [__m512; 16] =
                std::array::from_fn(|i| _mm512_loadu_ps(block.as_ptr().add(16 * i)));
            // `max_ps` returns its second operand when either is NaN: NaNs are skipped.
            let widest = values.iter().fold(_mm512_setzero_ps(), |widest, &v| {
                _mm512_max_ps(_mm512_andnot_ps(sign, v), widest)
            });
            let (d, iscale) = block_scale(_mm512_reduce_max_ps(widest));
            let iscale = _mm512_set1_ps(iscale);
            let q = rows.biased[at].as_mut_ptr();
            for (pair, halves) in values.chunks_exact(2).enumerate() {
                let mut sum = _mm512_setzero_si512();
                for (half, &v) in halves.iter().enumerate() {
                    let p = _mm512_mul_ps(v, iscale);
                    let rounded = _mm512_roundscale_ps::<
                        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                    >(p);
                    // Saturated as `as i8` does, and NaN becomes 0, as `NaN as i8` does.
                    let clamped = _mm512_min_ps(_mm512_max_ps(rounded, low), high);
                    let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
                    let ints = _mm512_maskz_cvttps_epi32(ordered, clamped);
                    sum = _mm512_add_epi32(sum, ints);
                    let bytes = _mm_xor_si128(_mm512_cvtsepi32_epi8(ints), flip);
                    _mm_storeu_si128(q.add(32 * pair + 16 * half) as *mut __m128i, bytes);
                }
                rows.sums[at][pair] = _mm512_reduce_add_epi32(sum) as i16;
            }
            rows.scales[at] = d;
        }
    }
}

/// [`quantize_blocks_avx512`] in 256-bit registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_blocks_avx2(x: &[f32], rows: &mut SuperRows) {
    use crate::model::kernels::activations::{biased_bytes_avx2, widest_lane_avx2};
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let (low, high) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for (at, block) in x.chunks_exact(SUPER).enumerate() {
        // SAFETY: a super-block is 256 f32 (32 loads of 8), its quants 256 bytes (8 stores
        // of 32).
        unsafe {
            let widest = block
                .chunks_exact(8)
                .fold(_mm256_setzero_ps(), |widest, v| {
                    _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(v.as_ptr())), widest)
                });
            let (d, iscale) = block_scale(widest_lane_avx2(widest));
            let iscale = _mm256_set1_ps(iscale);
            for (span, values) in block.chunks_exact(SUM_SPAN).enumerate() {
                let ints: [__m256i; 4] = std::array::from_fn(|i| {
                    let p = _mm256_mul_ps(_mm256_loadu_ps(values.as_ptr().add(8 * i)), iscale);
                    let rounded =
                        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
                    let clamped = _mm256_min_ps(_mm256_max_ps(rounded, low), high);
                    let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(p, p);
                    _mm256_cvttps_epi32(_mm256_and_ps(clamped, ordered))
                });
                _mm256_storeu_si256(
                    rows.biased[at].as_mut_ptr().add(SUM_SPAN * span) as *mut __m256i,
                    biased_bytes_avx2(ints),
                );
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32(ints[0], ints[1]),
                    _mm256_add_epi32(ints[2], ints[3]),
                );
                let sum = _mm_add_epi32(
                    _mm256_castsi256_si128(sum),
                    _mm256_extracti128_si256::<1>(sum),
                );
                let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
                let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum));
                rows.sums[at][span] = _mm_cvtsi128_si32(sum) as i16;
            }
            rows.scales[at] = d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` quantized by one of the block functions.
    fn quantized_by(x: &[f32], quantize: impl Fn(&[f32], &mut SuperRows)) -> SuperRows {
        let blocks = x.len() / SUPER;
        let mut rows = SuperRows {
            biased: vec![[0; SUPER]; blocks],
            scales: vec![0.0; blocks],
            sums: vec![[0; SUMS]; blocks],
            blocks,
        };
        quantize(x, &mut rows);
        rows
    }

    /// llama.cpp's `quantize_row_q8_K_ref`, one super-block: `iscale = -127 / max` with
    /// `max` the widest value with its sign, `nearest_int` (ties to even), at most 127.
    fn llama_cpp_q8_k(block: &[f32]) -> ([i8; SUPER], f32) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in block {
            if v.abs() > amax {
                (amax, max) = (v.abs(), v);
            }
        }
        if amax == 0.0 {
            return ([0; SUPER], 0.0);
        }
        let iscale = -127.0 / max;
        let q =
            std::array::from_fn(|c| ((iscale * block[c]).round_ties_even() as i32).min(127) as i8);
        (q, 1.0 / iscale)
    }

    #[test]
    fn activations_are_quantized_as_llama_cpp_does_on_every_path() {
        // A block whose scale is exactly 1 (widest 127), so the products are the values:
        // ties round to even.
        let mut values = vec![127.0f32, -2.5, 2.5, 0.5, -0.5, 1.5, 126.5, -125.5];
        values.extend((0..SUPER - 8).map(|i| (i % 200) as f32 * 0.5 - 50.0));
        // Pseudo-random blocks, one whose widest value is negative, an all-zero one.
        values.extend(pseudo_random(SUPER * 3, 3).iter().map(|v| v * 40.0));
        values.extend((0..SUPER).map(|i| if i == 77 { -90.0 } else { (i % 13) as f32 }));
        values.extend([0.0; SUPER]);
        let blocks = values.len() / SUPER;
        let mut paths = vec![
            ("dispatched", SuperRows::quantize(&values, 1, values.len())),
            ("portable", quantized_by(&values, quantize_blocks_loop)),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                let avx2 =
                    |x: &[f32], rows: &mut SuperRows| unsafe { quantize_blocks_avx2(x, rows) };
                paths.push(("avx2", quantized_by(&values, avx2)));
            }
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512.
                let avx512 =
                    |x: &[f32], rows: &mut SuperRows| unsafe { quantize_blocks_avx512(x, rows) };
                paths.push(("avx512", quantized_by(&values, avx512)));
            }
        }
        assert_eq!(
            &paths[1].1.quants(0)[..8],
            &[127, -2, 2, 0, 0, 2, 126, -126]
        );
        for (path, rows) in &paths {
            for b in 0..blocks {
                let (want, want_d) = llama_cpp_q8_k(&values[b * SUPER..(b + 1) * SUPER]);
                // llama.cpp's sign: ours is positive for the widest value.
                let flip = if want_d < 0.0 { -1 } else { 1 };
                let ours = rows.quants(b);
                for c in 0..SUPER {
                    assert_eq!(
                        ours[c] as i32,
                        flip * want[c] as i32,
                        "{path}: block {b} value {c}"
                    );
                }
                assert_eq!(rows.scales[b], want_d.abs(), "{path}: scale of block {b}");
                for k in 0..SUMS {
                    let sum: i32 = ours[k * SUM_SPAN..(k + 1) * SUM_SPAN]
                        .iter()
                        .map(|&q| q as i32)
                        .sum();
                    assert_eq!(rows.sums[b][k] as i32, sum, "{path}: sum {k} of block {b}");
                }
            }
            assert_eq!(rows.biased, paths[0].1.biased, "{path} against dispatched");
        }
    }
}
