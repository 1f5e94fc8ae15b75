//! Portable Q4_K/Q6_K tile kernel: the reference for the SIMD ones (bit for bit) and the
//! path on CPUs without AVX2.

use super::{GroupBlock, MINS, SUB, SuperRows};
use crate::model::kernels::activations::unbiased;
use crate::model::kernels::{GROUP, interleaved};

/// `tile[s][r] = sum_b (d_w * d_x) * sum_j s_j (w_j . x_j) - (dmin_w * d_x) * sum_k m_k
/// x_k` over the group's super-blocks `b`, for each of the tile's activation rows `s` and
/// the group's weight rows `r`: each super-block's two integer sums (exact) converted once
/// and added with one fused multiply-add each, super-block after super-block; the offset
/// term only with `offsets` (Q4_K).
pub(crate) fn tile(
    w: &[GroupBlock],
    offsets: bool,
    x: &SuperRows,
    row0: usize,
    tile: &mut [[f32; GROUP]],
) {
    for (s, out) in tile.iter_mut().enumerate() {
        let base = (row0 + s) * x.blocks;
        for (r, value) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, block) in w.iter().enumerate() {
                let (xq, dx) = (&x.biased[base + b], x.scales[base + b]);
                let total: i32 = (0..super::SUBS)
                    .map(|j| {
                        let dot: i32 = (j * SUB..(j + 1) * SUB)
                            .map(|c| block.qs[interleaved(r, c)] as i32 * unbiased(xq[c]) as i32)
                            .sum();
                        block.scales[j][r] as i32 * dot
                    })
                    .sum();
                acc = (total as f32).mul_add(block.d[r].to_f32() * dx, acc);
                if offsets {
                    let sums = &x.sums[base + b];
                    let offset: i32 = (0..MINS)
                        .map(|k| block.min(r, k) as i32 * sums[k] as i32)
                        .sum();
                    acc = (-(offset as f32)).mul_add(block.dmin[r].to_f32() * dx, acc);
                }
            }
            *value = acc;
        }
    }
}
