//! AVX2 Q4_K/Q6_K tile kernel: a 256-bit register holds half a chunk (eight quants of
//! each of four weight rows); `maddubs` multiplies the biased activation bytes by the signed
//! quants, adding pairs into 16 bits, and `madd` multiplies those pairs by the row's
//! sub-block scale, adding them into 32-bit lanes: the scaled sum of a whole super-block
//! stays in two registers (rows 0-3 and 4-7), exact. One horizontal add gives the eight
//! rows' sums, converted and added with the super-block's scales in one fused multiply-add.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{GroupBlock, SuperRows};
#[cfg(target_arch = "x86_64")]
use super::{SUB, SUBS};
use crate::model::kernels::GROUP;
#[cfg(target_arch = "x86_64")]
use crate::model::kernels::{CHUNK_COLS, avx2::HADD_ROWS, by_rows_and_flag, prefetch_ahead};

/// Same contract as `scalar::tile`, for up to four activation rows.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C (the 8-bit AVX2 kernel's `available`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
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
    unreachable!("AVX2 kernel called on a CPU without it")
}

/// Byte shuffles that spread a sub-block's eight 16-bit row scales over half `h` of a
/// chunk: 16-bit element `k` takes row `4h + k / 4`'s scale (both halves of the row's two
/// lanes).
#[cfg(target_arch = "x86_64")]
const SPREAD_BYTES: [[i8; 32]; 2] = {
    let mut bytes = [[0i8; 32]; 2];
    let mut h = 0;
    while h < 2 {
        let mut i = 0;
        while i < 32 {
            bytes[h][i] = (2 * (4 * h + i / 8) + i % 2) as i8;
            i += 1;
        }
        h += 1;
    }
    bytes
};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_n<const R: usize, const OFFSETS: bool>(
    w: &[GroupBlock],
    x: &SuperRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    // acc[s]: activation row s; lane k is weight row HADD_ROWS[k].
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, block) in w.iter().enumerate() {
        // SAFETY: a group block holds 32 chunks of 64 quant bytes and 16 sub-blocks of 8
        // scales; activation rows row0 + s and super-block b exist; 8-byte unaligned reads
        // of their quants and offset sums.
        unsafe {
            let spread = SPREAD_BYTES.map(|h| _mm256_loadu_si256(h.as_ptr() as *const __m256i));
            let at: [usize; R] = std::array::from_fn(|s| (row0 + s) * x.blocks + b);
            let xq: [*const u8; R] =
                std::array::from_fn(|s| x.biased.get_unchecked(at[s]).as_ptr());
            // sums[s][h]: rows 4h..4h+4, lane 2r + e: quants 8c + 4e.. of row 4h + r in
            // every chunk c, times their scale.
            let mut sums = [[_mm256_setzero_si256(); 2]; R];
            for j in 0..SUBS {
                if R > 1 && j % 2 == 0 {
                    prefetch_ahead(&*(block.qs.as_ptr().add(j * 128) as *const [i8; 256]));
                }
                let scales = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    block.scales[j].as_ptr() as *const __m128i
                ));
                let scale = spread.map(|bytes| _mm256_shuffle_epi8(scales, bytes));
                for chunk in j * SUB / CHUNK_COLS..(j + 1) * SUB / CHUNK_COLS {
                    let pieces: [__m256i; R] = std::array::from_fn(|s| {
                        _mm256_set1_epi64x(
                            (xq[s].add(chunk * CHUNK_COLS) as *const i64).read_unaligned(),
                        )
                    });
                    for h in 0..2 {
                        let weight = _mm256_loadu_si256(
                            block.qs.as_ptr().add(chunk * 64 + h * 32) as *const __m256i
                        );
                        for (sums, &piece) in sums.iter_mut().zip(&pieces) {
                            let pairs = _mm256_maddubs_epi16(piece, weight);
                            sums[h] = _mm256_add_epi32(sums[h], _mm256_madd_epi16(pairs, scale[h]));
                        }
                    }
                }
            }
            let bias = _mm256_permutevar8x32_epi32(
                _mm256_loadu_si256(block.bias.as_ptr() as *const __m256i),
                order,
            );
            let per_row = |h: &[half::f16; GROUP]| {
                let values = _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i));
                _mm256_permutevar8x32_ps(values, order)
            };
            let (wd, wmin) = (per_row(&block.d), per_row(&block.dmin));
            for s in 0..R {
                let totals = _mm256_sub_epi32(_mm256_hadd_epi32(sums[s][0], sums[s][1]), bias);
                let dx = _mm256_set1_ps(*x.scales.get_unchecked(at[s]));
                acc[s] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals), _mm256_mul_ps(wd, dx), acc[s]);
                if OFFSETS {
                    // Rows 4h..4h+4, lane 2r + e: m of sub-blocks 4k + 2e and 4k + 2e + 1
                    // times their activation sums, over both k.
                    let xs = x.sums.get_unchecked(at[s]).as_ptr() as *const i64;
                    let offsets: [__m256i; 2] = std::array::from_fn(|h| {
                        (0..2).fold(_mm256_setzero_si256(), |sum, k| {
                            let mins = _mm256_loadu_si256(
                                block.mins[k].as_ptr().add(16 * h) as *const __m256i
                            );
                            let xs = _mm256_set1_epi64x(xs.add(k).read_unaligned());
                            _mm256_add_epi32(sum, _mm256_madd_epi16(mins, xs))
                        })
                    });
                    let offsets = _mm256_hadd_epi32(offsets[0], offsets[1]);
                    acc[s] = _mm256_fnmadd_ps(
                        _mm256_cvtepi32_ps(offsets),
                        _mm256_mul_ps(wmin, dx),
                        acc[s],
                    );
                }
            }
        }
    }
    for (out, acc) in tile.iter_mut().zip(acc) {
        let mut lanes = [0f32; GROUP];
        // SAFETY: `lanes` holds 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for (lane, row) in lanes.into_iter().zip(HADD_ROWS) {
            out[row] = lane;
        }
    }
}
