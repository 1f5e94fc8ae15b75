//! Portable tile kernel: the reference for the SIMD one and the path on CPUs without AVX2.

use super::{BLOCK, GROUP, QuantizedRows, WeightGroup};

/// `tile[r][j] = sum_b d_w * d_x * (w_j . x_{row0+r})` for `rows` activation rows.
pub(crate) fn tile(
    w: &WeightGroup,
    x: &QuantizedRows,
    row0: usize,
    rows: usize,
    tile: &mut [[f32; GROUP]],
) {
    for (r, out) in tile[..rows].iter_mut().enumerate() {
        let base = (row0 + r) * x.blocks;
        for (j, value) in out.iter_mut().enumerate() {
            let mut sum = 0f32;
            for b in 0..w.blocks {
                let (wq, xq) = (&w.qs[b * GROUP + j], &x.qs[base + b]);
                let dot: i32 = (0..BLOCK).map(|t| wq[t] as i32 * xq[t] as i32).sum();
                sum += dot as f32 * (w.scales[b * GROUP + j].to_f32() * x.scales[base + b]);
            }
            *value = sum;
        }
    }
}
