//! AVX2 tile kernel: four weight rows against up to three activation rows per pass over
//! the blocks, so each weight block is loaded once per three rows and each activation block
//! once per four weight rows.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{GROUP, QuantizedRows, WeightGroup};

/// How far ahead (in 32-byte blocks) weights are prefetched.
const PREFETCH_BLOCKS: usize = 32;

/// Activation rows per tile (3 x 4 accumulators fit the 16 vector registers).
pub(crate) const MAX_ROWS: usize = 3;

/// Whether the CPU runs this kernel.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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
    rows: usize,
    tile: &mut [[f32; GROUP]],
) {
    match rows {
        1 => tile_n::<1>(w, x, row0, tile),
        2 => tile_n::<2>(w, x, row0, tile),
        _ => tile_n::<3>(w, x, row0, tile),
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(
    _: &WeightGroup,
    _: &QuantizedRows,
    _: usize,
    _: usize,
    _: &mut [[f32; GROUP]],
) {
    unreachable!("AVX2 kernel called on a CPU without it")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_n<const R: usize>(
    w: &WeightGroup,
    x: &QuantizedRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); GROUP]; R];
    for b in 0..w.blocks {
        // SAFETY: every index is within the slices (blocks * GROUP weight blocks, rows of
        // x.blocks activation blocks); unaligned loads of 32 bytes from [i8; 32].
        unsafe {
            let wq = w.qs.as_ptr().add(b * GROUP);
            // Stream ahead: decoding reads every weight once, limited by memory latency.
            _mm_prefetch::<_MM_HINT_T0>(wq.wrapping_add(PREFETCH_BLOCKS) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(wq.wrapping_add(PREFETCH_BLOCKS + 2) as *const i8);
            // The four rows' f16 scales of this block, as f32.
            let wd = _mm_cvtph_ps(_mm_loadl_epi64(
                w.scales.as_ptr().add(b * GROUP) as *const __m128i
            ));
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let at = (row0 + r) * x.blocks + b;
                let xv = _mm256_loadu_si256(x.qs.as_ptr().add(at) as *const __m256i);
                let x_abs = _mm256_sign_epi8(xv, xv);
                // Products of the row's and the four weight rows' scales, broadcast from
                // memory (load ports) rather than shuffled (vector ports, the busy ones).
                let mut scales = [0f32; GROUP];
                _mm_storeu_ps(
                    scales.as_mut_ptr(),
                    _mm_mul_ps(wd, _mm_set1_ps(*x.scales.get_unchecked(at))),
                );
                for (j, acc) in acc_row.iter_mut().enumerate() {
                    let weight = _mm256_loadu_si256(wq.add(j) as *const __m256i);
                    // |x| * (w with x's sign) = x * w, as u8 x i8 pairs summed to i16, then i32.
                    let pairs = _mm256_maddubs_epi16(x_abs, _mm256_sign_epi8(weight, xv));
                    let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    *acc = _mm256_fmadd_ps(dot, _mm256_broadcast_ss(&scales[j]), *acc);
                }
            }
        }
    }
    for (out, acc_row) in tile.iter_mut().zip(&acc) {
        for (value, acc) in out.iter_mut().zip(acc_row) {
            *value = horizontal_sum(*acc);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn horizontal_sum(v: __m256) -> f32 {
    let pair = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    let pair = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}
