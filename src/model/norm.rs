//! RMS norms on the kernel threads, bit for bit candle's `rms_norm` (a sequential f32 sum of
//! squares, then `x / sqrt(mean + eps) * alpha`). Candle spreads the rows of a large input
//! over rayon, whose threads then compete for the same cores with the kernel pool's, still
//! spinning from the last matmul; and every norm of a block's output is followed by the
//! residual add, fused in here.

use candle_core::{DType, Result, Tensor};

use super::host_rows::{HostRows, with_host_rows};
use super::kernels::fill_rows;

/// Values per work item of the parallel loop (a decoding step's norms are one or two items).
const CHUNK: usize = 8192;

/// `rms_norm(xs) * alpha` over every `alpha.len()` values of the last dimension (the whole
/// row, or each head of a row of heads).
pub fn rms_norm(xs: &Tensor, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    if !is_host_f32(xs) {
        return candle_norm(xs, alpha, eps);
    }
    norm_rows(xs, None, alpha, eps)
}

/// `residual + rms_norm(xs) * alpha`: a block's output norm and its residual add.
pub fn add_rms_norm(residual: &Tensor, xs: &Tensor, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    if !is_host_f32(xs) || !is_host_f32(residual) {
        return residual + candle_norm(xs, alpha, eps)?;
    }
    if residual.dims() != xs.dims() {
        candle_core::bail!(
            "residual {:?} and normed {:?} differ in shape",
            residual.shape(),
            xs.shape()
        );
    }
    norm_rows(xs, Some(residual), alpha, eps)
}

/// Candle's norm (a GPU, another dtype), a row of heads split into heads for it.
fn candle_norm(xs: &Tensor, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    let dim = alpha.dims1()?;
    let mut dims = xs.dims().to_vec();
    let cols = dims.pop().unwrap_or(1);
    if cols == dim || dim == 0 || !cols.is_multiple_of(dim) {
        return candle_nn::ops::rms_norm(xs, alpha, eps);
    }
    dims.extend([cols / dim, dim]);
    candle_nn::ops::rms_norm(&xs.reshape(dims)?, alpha, eps)?.reshape(xs.shape())
}

fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

fn norm_rows(xs: &Tensor, residual: Option<&Tensor>, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    let alpha = alpha.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let cols = xs.dims().last().copied().unwrap_or(1);
    if alpha.is_empty() || !cols.is_multiple_of(alpha.len()) {
        candle_core::bail!(
            "rms norm of {:?} by a weight of {} values",
            xs.shape(),
            alpha.len()
        );
    }
    let out = with_host_rows(xs, |x| match residual {
        None => Ok(fill(x, None, &alpha, eps)),
        Some(residual) => with_host_rows(residual, |r| fill(x, Some(r), &alpha, eps)),
    })??;
    Tensor::from_vec(out, xs.shape(), xs.device())
}

/// The normed rows (plus the residual's), spread over the threads by whole rows.
fn fill(x: HostRows, residual: Option<HostRows>, alpha: &[f32], eps: f32) -> Vec<f32> {
    let (cols, width) = (x.cols, alpha.len());
    fill_rows(x.rows, cols, CHUNK, |i, dst| {
        for ((dst, src), offset) in dst
            .chunks_mut(width)
            .zip(x.row(i).chunks(width))
            .zip((0..cols).step_by(width))
        {
            norm_segment(src, alpha, eps, dst);
            if let Some(residual) = residual {
                for (d, &r) in dst.iter_mut().zip(&residual.row(i)[offset..offset + width]) {
                    *d += r;
                }
            }
        }
    })
}

/// One row (or head) with candle's arithmetic, in its order.
#[inline]
fn norm_segment(src: &[f32], alpha: &[f32], eps: f32, dst: &mut [f32]) {
    let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
    let m = (sum2 / src.len() as f32 + eps).sqrt();
    for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
        *d = s / m * a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::pseudo_random;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<u32> {
        let flat = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        flat.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn matches_candles_rms_norm_bit_for_bit_on_one_thread_and_on_the_pool() {
        let dev = Device::Cpu;
        let alpha = Tensor::from_vec(pseudo_random(640, 3), 640, &dev).unwrap();
        // 16 rows: candle's single-threaded path; 300 rows: its rayon path and our pool.
        for rows in [1usize, 16, 300] {
            let xs = Tensor::from_vec(pseudo_random(rows * 640, 7), (rows, 640), &dev).unwrap();
            let xs = (xs * 40.0).unwrap();
            let candle = candle_nn::ops::rms_norm(&xs, &alpha, 1e-6).unwrap();
            assert_eq!(
                values(&rms_norm(&xs, &alpha, 1e-6).unwrap()),
                values(&candle)
            );
            let residual =
                Tensor::from_vec(pseudo_random(rows * 640, 9), (rows, 640), &dev).unwrap();
            let fused = add_rms_norm(&residual, &xs, &alpha, 1e-6).unwrap();
            assert_eq!(
                values(&fused),
                values(&(&residual + &candle).unwrap()),
                "{rows}"
            );
        }
    }

    #[test]
    fn norms_each_head_of_a_narrowed_row_of_heads_as_candle_does_after_a_reshape() {
        let dev = Device::Cpu;
        let (rows, heads, dim) = (40, 4, 256);
        let fused = Tensor::from_vec(pseudo_random(rows * 1536, 5), (rows, 1536), &dev).unwrap();
        let q = fused.narrow(1, 0, heads * dim).unwrap();
        let alpha = Tensor::from_vec(pseudo_random(dim, 11), dim, &dev).unwrap();
        let ours = rms_norm(&q, &alpha, 1e-6).unwrap();
        let candle =
            candle_nn::ops::rms_norm(&q.reshape((rows, heads, dim)).unwrap(), &alpha, 1e-6)
                .unwrap();
        assert_eq!(ours.dims(), &[rows, heads * dim]);
        assert_eq!(values(&ours), values(&candle));
    }

    #[test]
    fn empty_inputs_give_empty_outputs() {
        let dev = Device::Cpu;
        let alpha = Tensor::ones(4, DType::F32, &dev).unwrap();
        for dims in [(0usize, 4usize), (3, 0)] {
            let xs = Tensor::zeros(dims, DType::F32, &dev).unwrap();
            assert_eq!(
                rms_norm(&xs, &alpha, 1e-6).unwrap().dims(),
                &[dims.0, dims.1]
            );
            let sum = add_rms_norm(&xs, &xs, &alpha, 1e-6).unwrap();
            assert_eq!(sum.dims(), &[dims.0, dims.1]);
        }
    }

    #[test]
    fn a_weight_that_does_not_divide_the_row_is_an_error() {
        let dev = Device::Cpu;
        let xs = Tensor::zeros((2, 10), DType::F32, &dev).unwrap();
        let alpha = Tensor::ones(3, DType::F32, &dev).unwrap();
        let err = rms_norm(&xs, &alpha, 1e-6).unwrap_err().to_string();
        assert!(err.contains("weight of 3 values"), "{err}");
    }
}
