//! Portable tile kernel: the reference for the SIMD ones (bit for bit) and the path on CPUs
//! without AVX2.

use super::{
    GROUP, PARTIAL, PARTIALS, QuantizedRows, WeightGroup, interleaved, lane_sum, unbiased,
};

/// `tile[s][r] = sum_b d_w * d_x * (w_r . x_{row0+s})` over the group's blocks, for each
/// of the tile's activation rows `s` and the group's weight rows `r`, accumulated in
/// llama.cpp's eight lanes.
pub(crate) fn tile(w: &WeightGroup, x: &QuantizedRows, row0: usize, tile: &mut [[f32; GROUP]]) {
    for (s, out) in tile.iter_mut().enumerate() {
        let base = (row0 + s) * x.blocks;
        for (r, value) in out.iter_mut().enumerate() {
            let mut lanes = [0f32; PARTIALS];
            for (b, (wq, wd)) in w.qs.iter().zip(w.scales).enumerate() {
                let xq = &x.biased[base + b];
                let d = wd[r].to_f32() * x.scales[base + b];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    let partial: i32 = (l * PARTIAL..(l + 1) * PARTIAL)
                        .map(|c| wq[interleaved(r, c)] as i32 * unbiased(xq[c]) as i32)
                        .sum();
                    *lane = (partial as f32).mul_add(d, *lane);
                }
            }
            *value = lane_sum(lanes);
        }
    }
}
