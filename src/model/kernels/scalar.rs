//! Portable tile kernel: the reference for the SIMD ones (bit for bit) and the path on CPUs
//! without AVX2.

use super::{GROUP, QuantizedRows, WeightGroup, block_dot};

/// `tile[s][r] = sum_b d_w * d_x * (w_r . x_{row0+s})` over the group's blocks, for each
/// of the tile's activation rows `s` and the group's weight rows `r`: each block's integer
/// dot product (exact), converted once and added with one fused multiply-add, block after
/// block.
pub(crate) fn tile(w: &WeightGroup, x: &QuantizedRows, row0: usize, tile: &mut [[f32; GROUP]]) {
    for (s, out) in tile.iter_mut().enumerate() {
        let base = (row0 + s) * x.blocks;
        for (r, value) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
                let d = wd[r].to_f32() * x.scales[base + b];
                acc = (block_dot(wq, r, &x.biased[base + b]) as f32).mul_add(d, acc);
            }
            *value = acc;
        }
    }
}
