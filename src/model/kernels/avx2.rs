//! AVX2 tile kernel: a 256-bit register holds half a chunk (eight quants of each of four
//! weight rows, two partial sums per row); `maddubs` needs one unsigned operand, so the
//! weights' absolute values meet the activation bytes carrying the weights' signs, and
//! `madd` adds the pairs to llama.cpp's four-product partials. Two activation rows share
//! each weight load and its absolute value (one half of the group at a time, so both
//! rows' accumulators fit in the sixteen registers); a last odd row runs alone.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{BLOCK, CHUNK_COLS, GROUP, QuantizedRows, WeightGroup, prefetch_ahead};

/// Activation rows per tile.
pub(crate) const MAX_ROWS: usize = 2;

/// Whether the CPU runs this kernel (and `--simd` allows it).
pub(crate) fn available() -> bool {
    crate::model::simd::level() >= crate::model::simd::SimdLevel::Avx2
}

/// Same contract as `scalar::tile`, for up to [`MAX_ROWS`] rows; `signed` is
/// [`QuantizedRows::signed`] of `x`.
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
    match tile {
        [first, second] => pair(w, x, signed, row0, first, second),
        rows => {
            for (s, out) in rows.iter_mut().enumerate() {
                row(w, x, signed, row0 + s, out);
            }
        }
    }
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

/// Lane `2r + e` of half `h` of a group's scales: row `4h + r`'s (rows 0-3 in the first
/// half of a chunk, 4-7 in the second).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn half_lanes(h: usize) -> __m256i {
    let r = 4 * h as i32;
    _mm256_setr_epi32(r, r, r + 1, r + 1, r + 2, r + 2, r + 3, r + 3)
}

/// One chunk's contribution to an accumulator: `|w| * (x with w's signs)`, the pairs added
/// to four-product partials, scaled by `d` (weight scale times activation scale).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate(
    acc: __m256,
    magnitude: __m256i,
    weight: __m256i,
    piece: __m256i,
    d: __m256,
) -> __m256 {
    let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(piece, weight));
    let partials = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    _mm256_fmadd_ps(partials, d, acc)
}

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

/// Adds the four chunks' accumulators of half `h` in llama.cpp's lane order into rows
/// `4h..4h+4` of `out`: ((0 + 4) + (2 + 6)) and ((1 + 5) + (3 + 7)), then those two.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn finish_half(acc: [__m256; 4], h: usize, out: &mut [f32; GROUP]) {
    let sums = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
    for r in 0..4 {
        out[h * 4 + r] = lanes[2 * r] + lanes[2 * r + 1];
    }
}

/// The group's eight rows against activation row `row`, both halves in one pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn row(
    w: &WeightGroup,
    x: &QuantizedRows,
    signed: &[[i8; BLOCK]],
    row: usize,
    out: &mut [f32; GROUP],
) {
    let halves = [half_lanes(0), half_lanes(1)];
    // acc[j][h]: chunk j, rows 4h..4h+4; lane 2r + e is llama.cpp's lane 2j + e of row 4h + r.
    let mut acc = [[_mm256_setzero_ps(); 2]; 4];
    for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
        // SAFETY: a group block is 256 bytes (four 64-byte chunks), its scales 8 f16;
        // activation `row`, block b exist.
        unsafe {
            prefetch_ahead(wq);
            let at = row * x.blocks + b;
            let wd = _mm256_mul_ps(
                _mm256_cvtph_ps(_mm_loadu_si128(wd.as_ptr() as *const __m128i)),
                _mm256_set1_ps(*x.scales.get_unchecked(at)),
            );
            let d = [
                _mm256_permutevar8x32_ps(wd, halves[0]),
                _mm256_permutevar8x32_ps(wd, halves[1]),
            ];
            let xq = signed.get_unchecked(at).as_ptr();
            for (j, acc) in acc.iter_mut().enumerate() {
                let piece = piece(xq, j);
                for (h, (acc, d)) in acc.iter_mut().zip(d).enumerate() {
                    let weight =
                        _mm256_loadu_si256(wq.as_ptr().add(j * 64 + h * 32) as *const __m256i);
                    let magnitude = _mm256_sign_epi8(weight, weight);
                    *acc = accumulate(*acc, magnitude, weight, piece, d);
                }
            }
        }
    }
    for h in 0..2 {
        finish_half(acc.map(|chunk| chunk[h]), h, out);
    }
}

/// The group's eight rows against activation rows `row` and `row + 1`: one half of the
/// group at a time, each weight load and absolute value serving both rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair(
    w: &WeightGroup,
    x: &QuantizedRows,
    signed: &[[i8; BLOCK]],
    row: usize,
    first: &mut [f32; GROUP],
    second: &mut [f32; GROUP],
) {
    let bases = [row * x.blocks, (row + 1) * x.blocks];
    for h in 0..2 {
        let lanes = half_lanes(h);
        // Chunk j's accumulators, weight rows 4h..4h+4, for activation rows row and row + 1.
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
            // SAFETY: as in `row`, for both activation rows.
            unsafe {
                if h == 0 {
                    prefetch_ahead(wq);
                }
                // Permuted before the product, not after: the same two factors per lane.
                let wd = _mm256_permutevar8x32_ps(
                    _mm256_cvtph_ps(_mm_loadu_si128(wd.as_ptr() as *const __m128i)),
                    lanes,
                );
                let d = [
                    _mm256_mul_ps(wd, _mm256_set1_ps(*x.scales.get_unchecked(bases[0] + b))),
                    _mm256_mul_ps(wd, _mm256_set1_ps(*x.scales.get_unchecked(bases[1] + b))),
                ];
                let xq = [
                    signed.get_unchecked(bases[0] + b).as_ptr(),
                    signed.get_unchecked(bases[1] + b).as_ptr(),
                ];
                let [acc0, acc1] = &mut acc;
                for (j, (acc0, acc1)) in acc0.iter_mut().zip(acc1.iter_mut()).enumerate() {
                    let weight =
                        _mm256_loadu_si256(wq.as_ptr().add(j * 64 + h * 32) as *const __m256i);
                    let magnitude = _mm256_sign_epi8(weight, weight);
                    *acc0 = accumulate(*acc0, magnitude, weight, piece(xq[0], j), d[0]);
                    *acc1 = accumulate(*acc1, magnitude, weight, piece(xq[1], j), d[1]);
                }
            }
        }
        finish_half(acc[0], h, first);
        finish_half(acc[1], h, second);
    }
}
