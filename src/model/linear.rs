//! Linear layers and the token embedding over whichever weight format was loaded: packed
//! 8-bit blocks or Q4_K/Q6_K super-blocks run by gembatch's own CPU kernels, or candle's
//! `QMatMul` (other quant types, dense weights, GPUs).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{D, DType, Module, Result, Tensor};

use super::host_rows::with_host_rows;
use super::kernels::{PackedK, PackedQ8};

/// A linear layer (`y = x W^T`).
pub enum Linear {
    /// 8-bit blocks on the CPU, run by [`PackedQ8::matmul`].
    Packed(Arc<PackedQ8>),
    /// Q4_K/Q6_K super-blocks on the CPU, run by [`PackedK::matmul`].
    PackedK(Arc<PackedK>),
    /// Anything candle runs.
    Candle(QMatMul),
}

impl Linear {
    /// A candle matmul over quantized weights: kept quantized, or with `dense` expanded to
    /// f32 (exact arithmetic).
    pub fn from_qtensor(q: Arc<QTensor>, dense: bool) -> Result<Self> {
        let inner = if dense {
            QMatMul::Tensor(q.dequantize(&q.device())?)
        } else {
            QMatMul::from_arc(q)?
        };
        Ok(Self::Candle(inner))
    }

    /// Applies the layer to `[..., in]` f32 activations, giving f32. Activations stay f32
    /// between layers (the residual stream, norms, attention); a matrix kept in bf16 (a GPU
    /// checkpoint) multiplies them rounded to bf16, accumulating in f32, as cuBLAS does.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Candle(QMatMul::Tensor(w)) if w.dtype() != xs.dtype() => {
                QMatMul::Tensor(w.clone())
                    .forward(&xs.to_dtype(w.dtype())?)?
                    .to_dtype(xs.dtype())
            }
            Self::Candle(m) => m.forward(xs),
            Self::Packed(w) => host_matmul(xs, w.rows(), |x, m| w.matmul(x, m)),
            Self::PackedK(w) => host_matmul(xs, w.rows(), |x, m| w.matmul(x, m)),
        }
    }

    /// Output width.
    fn out_dim(&self) -> Result<usize> {
        match self {
            Self::Packed(w) => Ok(w.rows()),
            Self::PackedK(w) => Ok(w.rows()),
            Self::Candle(QMatMul::QTensor(q)) => Ok(q.shape().dims()[0]),
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dim(0),
        }
    }
}

/// `[..., in]` activations through a CPU kernel `matmul(x, m)` of `rows` outputs on their
/// `m` rows of `in` values, giving `[..., rows]`.
fn host_matmul(
    xs: &Tensor,
    rows: usize,
    matmul: impl Fn(&[f32], usize) -> Vec<f32>,
) -> Result<Tensor> {
    let mut dims = xs.dims().to_vec();
    dims.pop();
    dims.push(rows);
    let ys = with_host_rows(xs, |x| match x.contiguous() {
        Some(values) => matmul(values, x.rows),
        None => {
            let values: Vec<f32> = (0..x.rows).flat_map(|i| x.row(i)).copied().collect();
            matmul(&values, x.rows)
        }
    })?;
    Tensor::from_vec(ys, dims, xs.device())
}

/// Several linear layers over the same input (QKV, gate+up), stored as one matrix where
/// their formats allow, so that the input is quantized once and the weights are streamed in
/// one pass; otherwise one matrix each.
pub struct FusedLinear {
    /// Each matrix with the output widths of the layers stacked in it.
    matrices: Vec<(Linear, Vec<usize>)>,
}

impl FusedLinear {
    /// Layers stacked in one matrix, with their output widths in order.
    pub fn stacked(matrix: Linear, out_dims: Vec<usize>) -> Self {
        Self {
            matrices: vec![(matrix, out_dims)],
        }
    }

    /// Layers kept as separate matrices.
    pub fn separate(layers: Vec<Linear>) -> Result<Self> {
        let mut matrices = Vec::with_capacity(layers.len());
        for layer in layers {
            let dim = layer.out_dim()?;
            matrices.push((layer, vec![dim]));
        }
        Ok(Self { matrices })
    }

    /// The single layer of a one-layer group.
    pub fn into_single(mut self) -> Linear {
        assert!(
            self.matrices.len() == 1 && self.matrices[0].1.len() == 1,
            "one layer expected"
        );
        self.matrices.pop().expect("one matrix").0
    }

    /// Applies all layers, returning one output per layer.
    pub fn forward(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for (matrix, out_dims) in &self.matrices {
            let ys = matrix.forward(xs)?;
            let mut start = 0;
            for &dim in out_dims {
                out.push(ys.narrow(D::Minus1, start, dim)?);
                start += dim;
            }
        }
        Ok(out)
    }
}

/// The token embedding, also used (tied) as the output head.
pub enum Embedding {
    /// Packed 8-bit rows; a lookup dequantizes only the rows asked for.
    Packed(Arc<PackedQ8>),
    /// Candle-quantized rows (other quant types, GPUs).
    Quantized(Arc<QTensor>),
    /// A dense `[vocab, hidden]` matrix.
    Dense(Tensor),
}

impl Embedding {
    /// Looks up the rows of `ids` (a `u32` vector), giving `[ids, hidden]` in f32.
    pub fn lookup(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Packed(w) => {
                let ids = ids.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * w.cols()];
                for (row, &id) in out.chunks_mut(w.cols()).zip(&ids) {
                    if id as usize >= w.rows() {
                        candle_core::bail!(
                            "token id {id} is outside the embedding's {} rows",
                            w.rows()
                        );
                    }
                    w.dequantize_row(id as usize, row);
                }
                Tensor::from_vec(out, (ids.len(), w.cols()), &candle_core::Device::Cpu)
            }
            Self::Quantized(q) => q.embedding(ids),
            Self::Dense(w) => w.index_select(ids, 0)?.to_dtype(DType::F32),
        }
    }

    /// The same matrix as an output projection to vocabulary logits; with `dense`, a
    /// candle-quantized matrix is expanded to f32 for it.
    pub fn as_output_head(&self, dense: bool) -> Result<Linear> {
        match self {
            Self::Packed(w) => Ok(Linear::Packed(w.clone())),
            Self::Quantized(q) => Linear::from_qtensor(q.clone(), dense),
            // In its own dtype: a bf16 head stays bf16 (the forward pass rounds its input).
            Self::Dense(w) => Ok(Linear::Candle(QMatMul::Tensor(w.clone()))),
        }
    }
}
