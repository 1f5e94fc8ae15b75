//! AVX2 tile kernel, one activation row at a time: a 256-bit register holds half a chunk
//! (eight quants of each of four rows, two partial sums per row); `maddubs` needs one
//! unsigned operand, so the weights' absolute values meet the activation bytes carrying the
//! weights' signs (the activations' bias of 128 taken off first), and `madd` adds the pairs
//! to llama.cpp's four-product partials.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{CHUNK_COLS, GROUP, QuantizedRows, WeightGroup, prefetch_ahead};

/// Whether the CPU runs this kernel (and `--simd` allows it).
pub(crate) fn available() -> bool {
    crate::model::simd::level() >= crate::model::simd::SimdLevel::Avx2
}

/// Same contract as `scalar::tile`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile(
    w: &WeightGroup,
    x: &QuantizedRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    for (s, out) in tile.iter_mut().enumerate() {
        row(w, x, row0 + s, out);
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(_: &WeightGroup, _: &QuantizedRows, _: usize, _: &mut [[f32; GROUP]]) {
    unreachable!("AVX2 kernel called on a CPU without it")
}

/// The group's eight rows against activation row `row`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn row(w: &WeightGroup, x: &QuantizedRows, row: usize, out: &mut [f32; GROUP]) {
    let ones = _mm256_set1_epi16(1);
    let bias = _mm256_set1_epi8(-128);
    // Lane 2r + e holds row r's scale (rows 0-3 in the first half, 4-7 in the second).
    let halves = [
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
        _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7),
    ];
    // acc[j][h]: chunk j, rows 4h..4h+4; lane 2r + e is llama.cpp's lane 2j + e of row 4h + r.
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
        // SAFETY: a group block is 256 bytes (four 64-byte chunks), its scales 8 f16;
        // activation `row`, block b exist (8-byte unaligned reads of its 32 quants).
        unsafe {
            prefetch_ahead(wq);
            let at = row * x.blocks + b;
            let dx = _mm256_set1_ps(*x.scales.get_unchecked(at));
            let wd = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(wd.as_ptr() as *const __m128i)),
                dx,
            );
            let xq = x.biased.get_unchecked(at).as_ptr();
            for (j, acc) in acc.iter_mut().enumerate() {
                let piece =
                    _mm256_set1_epi64x((xq.add(j * CHUNK_COLS) as *const i64).read_unaligned());
                let piece = _mm256_xor_si256(piece, bias);
                for (h, (acc, lanes)) in acc.iter_mut().zip(&halves).enumerate() {
                    let weight =
                        _mm256_loadu_si256(wq.as_ptr().add(j * 64 + h * 32) as *const __m256i);
                    let magnitude = _mm256_sign_epi8(weight, weight);
                    let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(piece, weight));
                    let partials = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    let d = _mm256_permutevar8x32_ps(wd, *lanes);
                    *acc = _mm256_fmadd_ps(partials, d, *acc);
                }
            }
        }
    }
    for h in 0..2 {
        // llama.cpp's lane order: ((0 + 4) + (2 + 6)) and ((1 + 5) + (3 + 7)), then those two.
        let sums = _mm256_add_ps(
            _mm256_add_ps(acc[0][h], acc[2][h]),
            _mm256_add_ps(acc[1][h], acc[3][h]),
        );
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
        for r in 0..4 {
            out[h * 4 + r] = lanes[2 * r] + lanes[2 * r + 1];
        }
    }
}
