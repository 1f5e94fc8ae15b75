//! AVX-512 VNNI tile kernel (Cascade Lake and later Xeons, Zen 4 and later EPYCs): one
//! 512-bit register is one chunk, two four-quant pieces of each of eight rows, and
//! `vpdpbusd` multiplies four unsigned by four signed bytes per lane and adds them to the
//! lane, one instruction where AVX2 needs three; the four chunks of a block accumulate in
//! one register, whose two lanes per row are added at the block's end. The activations come
//! biased to unsigned (`x + 128`) and each lane starts at `-128 *` the sum of its weights,
//! which takes the bias back off; those starts are computed once per block for all the
//! tile's activation rows.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{CHUNK_COLS, GROUP, QuantizedRows, WeightGroup, prefetch_ahead};

/// Activation rows per tile (more measured no faster).
pub(crate) const MAX_ROWS: usize = 4;

/// Whether the CPU runs this kernel (and `--simd` allows it).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        crate::model::simd::level() == crate::model::simd::SimdLevel::Avx512
            && *VNNI.get_or_init(|| is_x86_feature_detected!("avx512vnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Same contract as `scalar::tile`, for up to [`MAX_ROWS`] rows.
///
/// # Safety
/// The CPU must support the features [`available`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni,f16c")]
pub(crate) unsafe fn tile(
    w: &WeightGroup,
    x: &QuantizedRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    match tile.len() {
        1 => tile_n::<1>(w, x, row0, tile),
        2 => tile_n::<2>(w, x, row0, tile),
        3 => tile_n::<3>(w, x, row0, tile),
        _ => tile_n::<4>(w, x, row0, tile),
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(_: &WeightGroup, _: &QuantizedRows, _: usize, _: &mut [[f32; GROUP]]) {
    unreachable!("VNNI kernel called on a CPU without it")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni,f16c")]
fn tile_n<const R: usize>(
    w: &WeightGroup,
    x: &QuantizedRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    let bias = _mm512_set1_epi8(-128);
    // Lane 2r + e holds row r's scale.
    let pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    // acc[s]: activation row s; lanes 2r and 2r + 1 both hold weight row r's sum.
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
        // SAFETY: a group block is 256 bytes (four 64-byte chunks), its scales 8 f16;
        // activation rows row0 + s and block b exist; 8-byte unaligned reads of their quants.
        unsafe {
            if R > 1 {
                // One row alone is bound by memory bandwidth, which the hardware prefetcher
                // already saturates.
                prefetch_ahead(wq);
            }
            let wd = _mm256_cvtph_ps(_mm_loadu_si128(wd.as_ptr() as *const __m128i));
            let wd = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(wd));
            // Lane 2r + e of a sum covers quants 8j + 4e.. of row r in every chunk j. It
            // starts at -128 * (the sum of those weights), which cancels the activations'
            // bias of 128; computed once per block for every row of the tile.
            let weights: [__m512i; 4] = std::array::from_fn(|j| {
                _mm512_loadu_si512(wq.as_ptr().add(j * 64) as *const __m512i)
            });
            let biases = weights.iter().fold(_mm512_setzero_si512(), |sum, &weight| {
                _mm512_dpbusd_epi32(sum, bias, weight)
            });
            let start = _mm512_sub_epi32(_mm512_setzero_si512(), biases);
            for (s, acc) in acc.iter_mut().enumerate() {
                let at = (row0 + s) * x.blocks + b;
                let xq = x.biased.get_unchecked(at).as_ptr();
                let mut sums = start;
                for (j, &weight) in weights.iter().enumerate() {
                    let piece =
                        _mm512_set1_epi64((xq.add(j * CHUNK_COLS) as *const i64).read_unaligned());
                    sums = _mm512_dpbusd_epi32(sums, piece, weight);
                }
                // Each row's two halves added: its block sum, in both of its lanes.
                let totals = _mm512_add_epi32(sums, _mm512_shuffle_epi32::<0b10_11_00_01>(sums));
                let d = _mm512_mul_ps(wd, _mm512_set1_ps(*x.scales.get_unchecked(at)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), d, *acc);
            }
        }
    }
    for (out, acc) in tile.iter_mut().zip(&acc) {
        let mut lanes = [0f32; 16];
        // SAFETY: `lanes` holds 16 f32.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *acc) };
        for (r, value) in out.iter_mut().enumerate() {
            *value = lanes[2 * r];
        }
    }
}
