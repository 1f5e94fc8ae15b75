//! Activations quantized to Q8_0 for the 8-bit kernels, as llama.cpp quantizes them: per
//! 32 values, `d = max|x| / 127` (kept as f16), quants `round(x / d)`, stored plus 128 as
//! the unsigned operand `vpdpbusd` wants.

use half::f16;

use super::BLOCK;
#[cfg(test)]
use super::pseudo_random;

/// Activation rows quantized to Q8_0: row `i`, block `b` at index `i * blocks + b`.
pub(crate) struct QuantizedRows {
    /// The quants plus 128, as bytes (`q ^ 0x80`): the unsigned operand `vpdpbusd` wants;
    /// the other kernels take the 128 back off.
    pub(super) biased: Vec<[u8; BLOCK]>,
    pub(super) scales: Vec<f32>,
    pub(super) blocks: usize,
}

impl QuantizedRows {
    /// Quantizes `m` rows of `cols` values, each block to `round(x / d)` with
    /// `d = max|x| / 127` stored as f16 (llama.cpp's and candle's Q8_0).
    pub(crate) fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        let blocks = cols / BLOCK;
        let mut biased = vec![[0u8; BLOCK]; m * blocks];
        let mut scales = vec![0f32; m * blocks];
        quantize_blocks(x, &mut biased, &mut scales);
        Self {
            biased,
            scales,
            blocks,
        }
    }

    /// The quants without the bias, as signed bytes, same order: the AVX2 kernel's operand
    /// (taken off once here rather than once per weight half in every tile).
    pub(crate) fn signed(&self) -> Vec<[i8; BLOCK]> {
        self.biased
            .iter()
            .map(|block| std::array::from_fn(|c| unbiased(block[c])))
            .collect()
    }
}

/// Quantizes each 32-value block of `x` into `biased` and `scales`: with AVX-512 or AVX2
/// where the CPU has it, else one value at a time. All do the same arithmetic (an exact
/// maximum that skips NaN, one division, products rounded half away from zero and
/// saturated to -128..127 as `as i8` does, NaN to 0), so the quants are the same.
fn quantize_blocks(x: &[f32], biased: &mut [[u8; BLOCK]], scales: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::model::simd::{SimdLevel, level};
        // SAFETY: the level is never more than the CPU has.
        match level() {
            SimdLevel::Avx512 => return unsafe { quantize_blocks_avx512(x, biased, scales) },
            SimdLevel::Avx2 => return unsafe { quantize_blocks_avx2(x, biased, scales) },
            _ => {}
        }
    }
    quantize_blocks_loop(x, biased, scales)
}

/// A block's scale as stored (f16-rounded) and the reciprocal the quants are computed
/// with (of the unrounded `d = max|x| / 127`), as llama.cpp computes them.
fn block_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (f16::from_f32(d).to_f32(), id)
}

/// One value at a time: the reference the AVX-512 path matches.
fn quantize_blocks_loop(x: &[f32], biased: &mut [[u8; BLOCK]], scales: &mut [f32]) {
    for ((block, q), scale) in x.chunks_exact(BLOCK).zip(biased).zip(scales) {
        let (stored, id) = block_scale(block.iter().fold(0f32, |a, &v| a.max(v.abs())));
        for (q, &v) in q.iter_mut().zip(block) {
            *q = bias((v * id).round() as i8);
        }
        *scale = stored;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn quantize_blocks_avx512(x: &[f32], biased: &mut [[u8; BLOCK]], scales: &mut [f32]) {
    use std::arch::x86_64::*;
    let sign = _mm512_set1_ps(-0.0);
    // The float just below one half: added with the value's sign and truncated, it
    // rounds half away from zero exactly (what `f32::round` does).
    let below_half = _mm512_set1_ps(0.499_999_97);
    let (low, high) = (_mm512_set1_ps(-128.0), _mm512_set1_ps(127.0));
    let flip = _mm_set1_epi8(i8::MIN);
    for ((block, q), scale) in x.chunks_exact(BLOCK).zip(biased).zip(scales) {
        // SAFETY: a block is 32 f32 (two 16-lane loads), its quants 32 bytes (two stores).
        unsafe {
            let halves = [
                _mm512_loadu_ps(block.as_ptr()),
                _mm512_loadu_ps(block.as_ptr().add(16)),
            ];
            // `max_ps` returns its second operand when either is NaN: NaNs are skipped.
            let zero = _mm512_setzero_ps();
            let widest = _mm512_max_ps(
                _mm512_andnot_ps(sign, halves[0]),
                _mm512_max_ps(_mm512_andnot_ps(sign, halves[1]), zero),
            );
            let (stored, id) = block_scale(_mm512_reduce_max_ps(widest));
            let id = _mm512_set1_ps(id);
            for (half, v) in halves.into_iter().enumerate() {
                let p = _mm512_mul_ps(v, id);
                let nudged = _mm512_add_ps(p, _mm512_or_ps(_mm512_and_ps(p, sign), below_half));
                let rounded =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(nudged);
                // Saturated as `as i8` does (infinities come from a block so small that
                // `1 / d` overflows), and NaN becomes 0, as `NaN as i8` does.
                let clamped = _mm512_min_ps(_mm512_max_ps(rounded, low), high);
                let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
                let ints = _mm512_maskz_cvttps_epi32(ordered, clamped);
                let bytes = _mm_xor_si128(_mm512_cvtsepi32_epi8(ints), flip);
                _mm_storeu_si128(q.as_mut_ptr().add(16 * half) as *mut __m128i, bytes);
            }
            *scale = stored;
        }
    }
}

/// [`quantize_blocks_avx512`] in 256-bit registers, a block in four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_blocks_avx2(x: &[f32], biased: &mut [[u8; BLOCK]], scales: &mut [f32]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let below_half = _mm256_set1_ps(0.499_999_97);
    let (low, high) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for ((block, q), scale) in x.chunks_exact(BLOCK).zip(biased).zip(scales) {
        // SAFETY: a block is 32 f32 (four 8-lane loads), its quants 32 bytes (one store).
        unsafe {
            let quarters: [__m256; 4] =
                std::array::from_fn(|i| _mm256_loadu_ps(block.as_ptr().add(8 * i)));
            // `max_ps` returns its second operand when either is NaN: NaNs are skipped.
            let widest = quarters.iter().fold(_mm256_setzero_ps(), |widest, &v| {
                _mm256_max_ps(_mm256_andnot_ps(sign, v), widest)
            });
            let (stored, id) = block_scale(widest_lane_avx2(widest));
            let id = _mm256_set1_ps(id);
            let ints = quarters.map(|v| {
                let p = _mm256_mul_ps(v, id);
                let nudged = _mm256_add_ps(p, _mm256_or_ps(_mm256_and_ps(p, sign), below_half));
                let rounded = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(nudged);
                let clamped = _mm256_min_ps(_mm256_max_ps(rounded, low), high);
                let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(p, p);
                _mm256_cvttps_epi32(_mm256_and_ps(clamped, ordered))
            });
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, biased_bytes_avx2(ints));
            *scale = stored;
        }
    }
}

/// The largest of the eight lanes (the last of the pairwise `max_ps`, as the block
/// reductions above: NaNs already skipped).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn widest_lane_avx2(widest: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let halves = _mm_max_ps(
        _mm256_castps256_ps128(widest),
        _mm256_extractf128_ps::<1>(widest),
    );
    let pairs = _mm_max_ps(halves, _mm_movehl_ps(halves, halves));
    _mm_cvtss_f32(_mm_max_ss(pairs, _mm_shuffle_ps::<1>(pairs, pairs)))
}

/// Four registers of eight quants (-128..127 in 32-bit lanes) as 32 bytes in order, each
/// plus 128.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn biased_bytes_avx2(
    ints: [std::arch::x86_64::__m256i; 4],
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // The two saturating packs leave quarter q's quants 4i..4i+4 in dword 4i + q.
    let in_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let bytes = _mm256_packs_epi16(
        _mm256_packs_epi32(ints[0], ints[1]),
        _mm256_packs_epi32(ints[2], ints[3]),
    );
    let bytes = _mm256_permutevar8x32_epi32(bytes, in_order);
    _mm256_xor_si256(bytes, _mm256_set1_epi8(i8::MIN))
}

/// A signed quant plus 128, as a byte.
pub(super) fn bias(q: i8) -> u8 {
    q as u8 ^ 0x80
}

/// The signed quant of a [`bias`]ed byte.
pub(super) fn unbiased(b: u8) -> i8 {
    (b ^ 0x80) as i8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x` as one row, quantized by one of the block functions.
    fn quantized_by(
        x: &[f32],
        quantize: impl Fn(&[f32], &mut [[u8; BLOCK]], &mut [f32]),
    ) -> QuantizedRows {
        let blocks = x.len() / BLOCK;
        let mut biased = vec![[0u8; BLOCK]; blocks];
        let mut scales = vec![0f32; blocks];
        quantize(x, &mut biased, &mut scales);
        QuantizedRows {
            biased,
            scales,
            blocks,
        }
    }

    #[test]
    fn activations_are_quantized_as_llama_cpp_does_on_every_path() {
        // A block whose scale is exactly 1 (max 127), so the products are the values: ties
        // must round away from zero, the float just below a half must not.
        let mut values = vec![127.0f32, -2.5, 2.5, 0.5, -0.5, 0.499_999_97, 126.5, -126.5];
        values.extend((0..24).map(|i| i as f32 * 0.75 - 9.0));
        // Then pseudo-random blocks, an all-zero one and one with a NaN.
        values.extend(pseudo_random(32 * 6, 3).iter().map(|v| v * 40.0));
        values.extend([0.0; 32]);
        values.extend((0..32).map(|i| if i == 5 { f32::NAN } else { i as f32 }));
        // A block so small that `1 / d` overflows: the products are infinite and saturate.
        values.extend((0..32).map(|i| [1e-38, -1e-38, 0.0, 5e-39][i % 4]));
        let blocks = values.len() / BLOCK;
        let expected: Vec<([i8; BLOCK], f32)> = values
            .chunks_exact(BLOCK)
            .map(|block| {
                let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = std::array::from_fn(|c| (block[c] * id).round() as i8);
                (q, f16::from_f32(d).to_f32())
            })
            .collect();
        assert_eq!(&expected[0].0[..8], &[127, -3, 3, 1, -1, 0, 127, -127]);
        assert_eq!(&expected[blocks - 1].0[..4], &[127, -128, 0, 127]);
        let mut paths: Vec<(&str, QuantizedRows)> = vec![(
            "dispatched",
            QuantizedRows::quantize(&values, 1, values.len()),
        )];
        paths.push(("portable", quantized_by(&values, quantize_blocks_loop)));
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            let avx2 = |x: &[f32], q: &mut [[u8; BLOCK]], d: &mut [f32]| unsafe {
                quantize_blocks_avx2(x, q, d)
            };
            paths.push(("avx2", quantized_by(&values, avx2)));
        }
        for (path, rows) in paths {
            for (b, (q, d)) in expected.iter().enumerate() {
                let ours: Vec<i8> = rows.biased[b].iter().map(|&q| unbiased(q)).collect();
                assert_eq!(&ours[..], &q[..], "{path}: quants of block {b}");
                assert_eq!(
                    rows.scales[b].to_bits(),
                    d.to_bits(),
                    "{path}: scale of block {b}"
                );
            }
        }
    }
}
