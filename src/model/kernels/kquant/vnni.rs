//! AVX-512 VNNI Q4_K/Q6_K tile kernel: one 512-bit register is one chunk of a super-block
//! (eight quants of each of eight rows, two four-quant lanes a row); `vpmaddubsw` multiplies
//! the biased activation bytes by the signed quants, adding pairs into 16 bits, and
//! `vpdpwssd` multiplies those pairs by the row's sub-block scale and adds them to the lane:
//! the scaled sum of a whole super-block stays in one register, exact, with no
//! per-sub-block conversion. Each row's scales come from 16 bytes a sub-block, spread over
//! its lanes by one permute shared by the tile's activation rows.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{GroupBlock, SuperRows};
#[cfg(target_arch = "x86_64")]
use super::{SUB, SUBS};
use crate::model::kernels::GROUP;
#[cfg(target_arch = "x86_64")]
use crate::model::kernels::{CHUNK_COLS, by_rows_and_flag, prefetch_ahead};

/// Whether the CPU runs this kernel (and `--simd` allows it).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static BW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        crate::model::kernels::vnni::available()
            && *BW.get_or_init(|| is_x86_feature_detected!("avx512bw"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Same contract as `scalar::tile`, for up to four activation rows.
///
/// # Safety
/// The CPU must support the features [`available`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub(crate) unsafe fn tile(
    w: &[GroupBlock],
    offsets: bool,
    x: &SuperRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    by_rows_and_flag!(tile_n(w, x, row0, tile), tile.len(), offsets)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(
    _: &[GroupBlock],
    _: bool,
    _: &SuperRows,
    _: usize,
    _: &mut [[f32; GROUP]],
) {
    unreachable!("VNNI kernel called on a CPU without it")
}

/// 16-bit element `i` of a spread scale vector takes row `i / 4`'s scale: both halves of
/// the row's two lanes.
#[cfg(target_arch = "x86_64")]
const SPREAD_ROWS: [i16; 32] = {
    let mut rows = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        rows[i] = (i / 4) as i16;
        i += 1;
    }
    rows
};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
fn tile_n<const R: usize, const OFFSETS: bool>(
    w: &[GroupBlock],
    x: &SuperRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    // Lane 2r + e holds row r's value.
    let pairs = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    // acc[s]: activation row s; lanes 2r and 2r + 1 both hold weight row r's sum.
    let mut acc = [_mm512_setzero_ps(); R];
    for (b, block) in w.iter().enumerate() {
        // SAFETY: a group block holds 32 chunks of 64 quant bytes and 16 sub-blocks of 8
        // scales; activation rows row0 + s and super-block b exist; 8-byte unaligned reads
        // of their quants and offset sums.
        unsafe {
            let spread = _mm512_loadu_si512(SPREAD_ROWS.as_ptr() as *const __m512i);
            let at: [usize; R] = std::array::from_fn(|s| (row0 + s) * x.blocks + b);
            let xq: [*const u8; R] =
                std::array::from_fn(|s| x.biased.get_unchecked(at[s]).as_ptr());
            // Lane 2r + e: quants 8c + 4e.. of row r in every chunk c, times their scale.
            let mut sums = [_mm512_setzero_si512(); R];
            for j in 0..SUBS {
                if R > 1 && j % 2 == 0 {
                    prefetch_ahead(&*(block.qs.as_ptr().add(j * 128) as *const [i8; 256]));
                }
                let scales = _mm_loadu_si128(block.scales[j].as_ptr() as *const __m128i);
                let scale = _mm512_permutexvar_epi16(spread, _mm512_castsi128_si512(scales));
                for chunk in j * SUB / CHUNK_COLS..(j + 1) * SUB / CHUNK_COLS {
                    let weight =
                        _mm512_loadu_si512(block.qs.as_ptr().add(chunk * 64) as *const __m512i);
                    for (sum, xq) in sums.iter_mut().zip(xq) {
                        let piece = _mm512_set1_epi64(
                            (xq.add(chunk * CHUNK_COLS) as *const i64).read_unaligned(),
                        );
                        *sum =
                            _mm512_dpwssd_epi32(*sum, _mm512_maddubs_epi16(piece, weight), scale);
                    }
                }
            }
            let per_row =
                |values: __m256i| _mm512_permutexvar_epi32(pairs, _mm512_castsi256_si512(values));
            let bias = per_row(_mm256_loadu_si256(block.bias.as_ptr() as *const __m256i));
            let halves = |h: &[half::f16; GROUP]| {
                let values = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i));
                _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(values))
            };
            let (wd, wmin) = (halves(&block.d), halves(&block.dmin));
            let mins = block
                .mins
                .map(|m| _mm512_loadu_si512(m.as_ptr() as *const __m512i));
            for s in 0..R {
                let totals =
                    _mm512_add_epi32(sums[s], _mm512_shuffle_epi32::<0b10_11_00_01>(sums[s]));
                let totals = _mm512_sub_epi32(totals, bias);
                let dx = _mm512_set1_ps(*x.scales.get_unchecked(at[s]));
                acc[s] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals), _mm512_mul_ps(wd, dx), acc[s]);
                if OFFSETS {
                    // Lane 2r + e of half h: m of sub-blocks 4h + 2e and 4h + 2e + 1 times
                    // their activation sums.
                    let xs = x.sums.get_unchecked(at[s]).as_ptr() as *const i64;
                    let offsets = (0..2).fold(_mm512_setzero_si512(), |sum, h| {
                        let xs = _mm512_set1_epi64(xs.add(h).read_unaligned());
                        _mm512_dpwssd_epi32(sum, mins[h], xs)
                    });
                    let offsets =
                        _mm512_add_epi32(offsets, _mm512_shuffle_epi32::<0b10_11_00_01>(offsets));
                    acc[s] = _mm512_fnmadd_ps(
                        _mm512_cvtepi32_ps(offsets),
                        _mm512_mul_ps(wmin, dx),
                        acc[s],
                    );
                }
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
