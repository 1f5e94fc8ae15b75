//! Gemma's MLP activation, `gelu_tanh(gate) * up`, fused into one pass, vectorized and
//! spread over the CPU threads (candle's elementwise GELU calls libm's `tanhf` value by
//! value on one thread). Same formula, evaluation order and `tanhf` bits as candle's, so
//! results are bit-identical to it.

use candle_core::{Result, Tensor};

use super::host_rows::with_host_rows;
use super::kernels::fill_rows;
use super::tanh::tanhf;

/// Elements per work item of the parallel loop (a single decoding step is one item, and
/// runs on the calling thread).
const CHUNK: usize = 4096;

/// `gelu_tanh(x)` in f32, evaluated exactly as candle does.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    const SQRT_TWO_OVER_PI: f32 =
        std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
    0.5 * x * (1.0 + tanhf(SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)))
}

crate::model::simd::widest_vectors! {
    /// `out[i] = gelu(gate[i]) * up[i]` with the widest vectors this CPU has.
    fn gelu_mul_into(out: &mut [f32], gate: &[f32], up: &[f32]) = gelu_mul_loop;
}

/// The loop the compiler vectorizes for whichever features its caller enables (branch-free
/// `tanhf`, no fused multiply-adds: the same bits at every width).
#[inline(always)]
fn gelu_mul_loop(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu(g) * u;
    }
}

/// `gelu(gate) * up`, elementwise, for same-shaped f32 tensors (views of one fused
/// projection's output are read in place).
pub fn gelu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !gate.device().is_cpu() {
        return gate.gelu()? * up;
    }
    if gate.dims() != up.dims() {
        candle_core::bail!(
            "gate {:?} and up {:?} differ in shape",
            gate.shape(),
            up.shape()
        );
    }
    let out = with_host_rows(gate, |gate| {
        with_host_rows(up, |up| {
            fill_rows(gate.rows, gate.cols, CHUNK, |i, row| {
                gelu_mul_into(row, gate.row(i), up.row(i))
            })
        })
    })??;
    Tensor::from_vec(out, gate.shape(), gate.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_gelu_is_bit_identical_to_candles_inline_and_on_the_pool() {
        let dev = candle_core::Device::Cpu;
        for n in [100usize, 10_000] {
            let values: Vec<f32> = (0..n)
                .map(|i| (i as f32 - n as f32 / 2.0) / 700.0)
                .collect();
            let gate = Tensor::from_vec(values.clone(), (n / 10, 10), &dev).unwrap();
            let up_values = values.iter().map(|v| v * 0.5 + 0.1).collect();
            let up = Tensor::from_vec(up_values, (n / 10, 10), &dev).unwrap();
            let ours: Vec<f32> = gelu_mul(&gate, &up)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let candle = (gate.gelu().unwrap() * &up).unwrap();
            assert_eq!(
                ours,
                candle.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                "{n} elements"
            );
            // The two halves of one fused projection's output, read in place.
            let fused = Tensor::cat(&[&gate, &up], 1).unwrap();
            let (gate_view, up_view) = (
                fused.narrow(1, 0, 10).unwrap(),
                fused.narrow(1, 10, 10).unwrap(),
            );
            let from_views: Vec<f32> = gelu_mul(&gate_view, &up_view)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(from_views, ours, "{n} elements from views");
        }
    }

    #[test]
    fn empty_inputs_give_empty_outputs() {
        let dev = candle_core::Device::Cpu;
        for dims in [(0usize, 10usize), (3, 0)] {
            let zeros = Tensor::zeros(dims, candle_core::DType::F32, &dev).unwrap();
            let out = gelu_mul(&zeros, &zeros).unwrap();
            assert_eq!(out.dims(), &[dims.0, dims.1]);
        }
    }
}
