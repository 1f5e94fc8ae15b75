//! AVX2 tile kernel: a 256-bit register holds half a chunk (eight quants of each of four
//! weight rows), and `maddubs` multiplies unsigned by signed bytes, adding pairs into 16 bits.
//! Narrow groups (quants in -16..16, Q5_0) take the activations biased to unsigned
//! (`x + 128`, as stored): one `maddubs` per 32 products and row, the four chunks' pairs
//! added in 16 bits, widened once per block, and `128 x` the weights' block sums (stored
//! with them) taken off. Wide groups (Q8_0) would overflow that: their absolute values meet
//! the activation bytes carrying the weights' signs, and `madd` widens every chunk's pairs.
//! Either way the integer sums of a whole block stay in two registers (rows 0-3 and 4-7,
//! two lanes a row); one horizontal add gives the eight rows' block sums, converted and
//! added with the block's scales in one fused multiply-add. Every activation row of the
//! tile shares each weight load.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::by_rows_and_flag;
use super::{BLOCK, CHUNK_COLS, GROUP, QuantizedRows, WeightGroup, prefetch_ahead};

/// Activation rows per tile.
pub(crate) const MAX_ROWS: usize = 4;

/// Whether the CPU runs this kernel (and `--simd` allows it).
pub(crate) fn available() -> bool {
    crate::model::simd::level() >= crate::model::simd::SimdLevel::Avx2
}

/// Same contract as `scalar::tile`, for up to [`MAX_ROWS`] rows; `signed` is
/// [`QuantizedRows::signed`] of `x` (read for wide groups only).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C ([`available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn tile(
    w: &WeightGroup,
    x: &QuantizedRows,
    signed: &[[i8; BLOCK]],
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    by_rows_and_flag!(tile_n(w, x, signed, row0, tile), tile.len(), w.narrow)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn tile(
    _: &WeightGroup,
    _: &QuantizedRows,
    _: &[[i8; BLOCK]],
    _: usize,
    _: &mut [[f32; GROUP]],
) {
    unreachable!("AVX2 kernel called on a CPU without it")
}

/// The weight row in each lane after `_mm256_hadd_epi32(rows 0-3, rows 4-7)`.
#[cfg(target_arch = "x86_64")]
pub(super) const HADD_ROWS: [usize; GROUP] = [0, 1, 4, 5, 2, 3, 6, 7];

/// Chunk `j`'s eight activation quants, in each quarter of a register.
///
/// # Safety
/// `xq` points at a block of 32 quants.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn piece(xq: *const i8, j: usize) -> __m256i {
    // SAFETY: chunk j (8 bytes) lies inside the block.
    _mm256_set1_epi64x(unsafe { (xq.add(j * CHUNK_COLS) as *const i64).read_unaligned() })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_n<const R: usize, const NARROW: bool>(
    w: &WeightGroup,
    x: &QuantizedRows,
    signed: &[[i8; BLOCK]],
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    let ones = _mm256_set1_epi16(1);
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    // acc[s]: activation row s; lane k is weight row HADD_ROWS[k].
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
        // SAFETY: a group block is 256 bytes (four 64-byte chunks), its scales and sums 8
        // values each; activation rows row0 + s and block b exist (in `signed` too when the
        // group is wide).
        unsafe {
            if R > 1 {
                prefetch_ahead(wq);
            }
            let at: [usize; R] = std::array::from_fn(|s| (row0 + s) * x.blocks + b);
            let xq: [*const i8; R] = std::array::from_fn(|s| {
                if NARROW {
                    x.biased.get_unchecked(at[s]).as_ptr() as *const i8
                } else {
                    signed.get_unchecked(at[s]).as_ptr()
                }
            });
            // sums[s][h]: rows 4h..4h+4 of the group, lane 2r + e: quants 8j + 4e.. of row
            // 4h + r; narrow: pairs of all four chunks in 16-bit lanes, wide: 32-bit lanes.
            let mut sums = [[_mm256_setzero_si256(); 2]; R];
            for j in 0..BLOCK / CHUNK_COLS {
                let pieces: [__m256i; R] = std::array::from_fn(|s| piece(xq[s], j));
                for h in 0..2 {
                    let weight =
                        _mm256_loadu_si256(wq.as_ptr().add(j * 64 + h * 32) as *const __m256i);
                    if NARROW {
                        for (sums, piece) in sums.iter_mut().zip(pieces) {
                            sums[h] =
                                _mm256_add_epi16(sums[h], _mm256_maddubs_epi16(piece, weight));
                        }
                    } else {
                        let magnitude = _mm256_sign_epi8(weight, weight);
                        for (sums, piece) in sums.iter_mut().zip(pieces) {
                            let pairs =
                                _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(piece, weight));
                            sums[h] = _mm256_add_epi32(sums[h], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
            }
            // What the activations' bias of 128 added to each row's block sum.
            let bias = if NARROW {
                let row_sums = _mm256_cvtepi16_epi32(_mm_loadu_si128(
                    w.sums.get_unchecked(b).as_ptr() as *const __m128i,
                ));
                _mm256_permutevar8x32_epi32(_mm256_slli_epi32::<7>(row_sums), order)
            } else {
                _mm256_setzero_si256()
            };
            let wd = _mm256_permutevar8x32_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(wd.as_ptr() as *const __m128i)),
                order,
            );
            for s in 0..R {
                let halves = if NARROW {
                    sums[s].map(|pairs| _mm256_madd_epi16(pairs, ones))
                } else {
                    sums[s]
                };
                let totals = _mm256_sub_epi32(_mm256_hadd_epi32(halves[0], halves[1]), bias);
                let d = _mm256_mul_ps(wd, _mm256_set1_ps(*x.scales.get_unchecked(at[s])));
                acc[s] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals), d, acc[s]);
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
