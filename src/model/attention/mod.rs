//! Attention of each sequence's new tokens over its own KV cache. On the CPU the batch's
//! (sequence, KV head) pairs run in parallel over caches in host memory, each with the very
//! calls candle's tensor path makes (the same `gemm` calls, mask and softmax), so both give
//! the same bits: a batch of decoding sequences is one parallel pass per layer instead of a
//! dozen candle operations per sequence and layer, run one after another while the other
//! threads wait. On other devices (GPUs) candle's tensor operations run it.

use candle_core::cpu::kernels::VecOps;
use candle_core::{Result, Tensor};
use candle_nn::ops::softmax_last_dim;
use gemm::{Parallelism, gemm};

use super::kernels::{for_each_chunk_mut, for_each_piece_mut};
use super::kv_cache::{HostView, LayerCache, attention_mask};

/// Heads and sizes of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads, each shared by `heads / kv_heads` query heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Sliding window of a local layer; `None` for global attention.
    pub window: Option<usize>,
}

impl AttentionShape {
    fn query_row(&self) -> usize {
        self.heads * self.head_dim
    }

    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Query rows (query heads x new tokens) above which a work item runs on its own, with
/// gemm spreading it over the threads.
const LARGE_ITEM_ROWS: usize = 64;

/// Rows of scores per work item of a spread softmax.
const SOFTMAX_ROWS: usize = 16;

/// One sequence's new queries and the cache they attend to (their own keys included).
pub struct HostQueries<'a> {
    /// `[t, heads, head_dim]`, already scaled.
    pub q: &'a [f32],
    /// Position of the first query.
    pub pos0: usize,
    /// The sequence's keys and values of this layer.
    pub cache: HostView<'a>,
}

impl HostQueries<'_> {
    fn tokens(&self, shape: AttentionShape) -> usize {
        self.q.len() / shape.query_row()
    }
}

/// Attention on the host for every sequence of a batch, in batch order:
/// `[total new tokens, heads * head_dim]`.
pub fn attend_host(shape: AttentionShape, seqs: &[HostQueries]) -> Vec<f32> {
    let d = shape.head_dim;
    // One work item per (sequence, KV head); each writes its query heads' rows head-major
    // (`[group, t, d]`, a contiguous piece), and the result is then laid out token-major.
    let mut items = Vec::new();
    let mut bounds = vec![0];
    for (seq_index, seq) in seqs.iter().enumerate() {
        for kv_head in 0..shape.kv_heads {
            items.push((seq_index, kv_head));
            bounds.push(bounds[bounds.len() - 1] + shape.group() * seq.tokens(shape) * d);
        }
    }
    let mut by_head = vec![0f32; bounds[bounds.len() - 1]];
    // Small items (decoding) share the threads; a large one (a prefill chunk) runs alone
    // afterwards with gemm's own threads, as in candle, so it does not keep one thread busy
    // while the others wait.
    let large = |i: usize| bounds[i + 1] - bounds[i] > LARGE_ITEM_ROWS * d;
    for_each_piece_mut(&mut by_head, &bounds, |i, out| {
        if !large(i) {
            let (seq, kv_head) = items[i];
            attend_kv_head(shape, &seqs[seq], kv_head, out, false);
        }
    });
    for (i, &(seq, kv_head)) in items.iter().enumerate() {
        if large(i) {
            let out = &mut by_head[bounds[i]..bounds[i + 1]];
            attend_kv_head(shape, &seqs[seq], kv_head, out, true);
        }
    }

    let mut out = vec![0f32; by_head.len()];
    let mut offset = 0;
    for seq in seqs {
        let t = seq.tokens(shape);
        for head in 0..shape.heads {
            for r in 0..t {
                let src = offset + (head * t + r) * d;
                let dst = offset + (r * shape.heads + head) * d;
                out[dst..dst + d].copy_from_slice(&by_head[src..src + d]);
            }
        }
        offset += t * shape.query_row();
    }
    out
}

/// Fills `out` (`[group * t, d]`) with the attention of the query heads that share
/// `kv_head`, as candle's tensor path computes it: scores by one `gemm`, the mask added,
/// candle's softmax, the values by a second `gemm`. `spread` runs it over all threads (only
/// from outside the thread pool), else on the calling thread.
fn attend_kv_head(
    shape: AttentionShape,
    seq: &HostQueries,
    kv_head: usize,
    out: &mut [f32],
    spread: bool,
) {
    let parallelism = if spread {
        Parallelism::Rayon(candle_core::utils::get_num_threads())
    } else {
        Parallelism::None
    };
    let (d, group) = (shape.head_dim, shape.group());
    let t = seq.tokens(shape);
    let rows = group * t;
    let n = seq.cache.positions.len();
    let kv_stride = shape.kv_heads * d;
    // The queries of this KV head, `[group * t, d]`, in the order of the tensor path.
    let mut q = Vec::with_capacity(rows * d);
    for g in 0..group {
        for i in 0..t {
            let start = (i * shape.heads + kv_head * group + g) * d;
            q.extend_from_slice(&seq.q[start..start + d]);
        }
    }
    let (keys, values) = (&seq.cache.k[kv_head * d..], &seq.cache.v[kv_head * d..]);

    let mut probs = vec![0f32; rows * n];
    let keys_t = Strided {
        data: keys,
        row_stride: 1,
        col_stride: kv_stride,
    };
    matmul(
        (rows, n, d),
        Strided::rows(&q, d),
        keys_t,
        &mut probs,
        parallelism,
    );
    if let Some(mask) = attention_mask(seq.pos0, t, seq.cache.positions, shape.window) {
        // Row g * t + i is query token i: mask row i, as broadcast over the group.
        for (r, row) in probs.chunks_exact_mut(n).enumerate() {
            let mask_row = &mask[r % t * n..][..n];
            for (s, &m) in row.iter_mut().zip(mask_row) {
                *s += m;
            }
        }
    }
    let softmax_rows =
        |_: usize, rows: &mut [f32]| rows.chunks_exact_mut(n).for_each(softmax_in_place);
    if spread {
        for_each_chunk_mut(&mut probs, SOFTMAX_ROWS * n, softmax_rows);
    } else {
        softmax_rows(0, &mut probs);
    }
    let values = Strided::rows(values, kv_stride);
    matmul(
        (rows, d, n),
        Strided::rows(&probs, n),
        values,
        out,
        parallelism,
    );
}

/// A matrix operand: element `(r, c)` at `data[r * row_stride + c * col_stride]`.
struct Strided<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// Rows `row_stride` apart, columns adjacent.
    fn rows(data: &'a [f32], row_stride: usize) -> Self {
        Self {
            data,
            row_stride,
            col_stride: 1,
        }
    }

    /// Panics unless every element of a `rows x cols` matrix lies in `data`.
    fn check(&self, rows: usize, cols: usize) {
        assert!(rows > 0 && cols > 0, "empty operand");
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(last < self.data.len(), "operand out of bounds");
    }
}

/// `dst = lhs * rhs` for `(m, n, k)`: `lhs` is `m x k`, `rhs` `k x n`, `dst` row-major
/// `m x n`; the call candle's CPU matmul makes, so the results have its bits.
fn matmul(
    (m, n, k): (usize, usize, usize),
    lhs: Strided,
    rhs: Strided,
    dst: &mut [f32],
    parallelism: Parallelism,
) {
    lhs.check(m, k);
    rhs.check(k, n);
    assert_eq!(dst.len(), m * n);
    // SAFETY: every element the call reads or writes was checked to lie in its slice.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// candle's softmax of one row (`softmax_last_dim` on the CPU), step for step.
fn softmax_in_place(row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    // SAFETY: the pointer and length describe `row`.
    unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, row.len()) };
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    let mut sum = 0f32;
    // SAFETY: as above.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, row.len()) };
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// Attention of one sequence's chunk through candle's tensor operations (any device):
/// `q: [t, heads, dim]`, `k`/`v: [t, kv_heads, dim]` appended to `cache` at `pos0`;
/// returns `[t, heads * dim]`.
pub fn attend_tensors(
    shape: AttentionShape,
    cache: &mut LayerCache,
    pos0: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let t = q.dim(0)?;
    let (kv_heads, group) = (shape.kv_heads, shape.heads / shape.kv_heads);
    // [t, kv, group, d] -> [kv, group * t, d]: all query heads sharing a KV head at once.
    let q = q
        .reshape((t, kv_heads, group, shape.head_dim))?
        .permute((1, 2, 0, 3))?
        .contiguous()?
        .reshape((kv_heads, group * t, shape.head_dim))?;
    let view = cache.append(&k.transpose(0, 1)?, &v.transpose(0, 1)?, pos0)?;
    let n = view.positions.len();
    let scores = q.matmul(&view.k.t()?)?;
    let scores = match attention_mask(pos0, t, view.positions, shape.window) {
        Some(mask) => {
            let mask = Tensor::from_vec(mask, (t, n), q.device())?.to_dtype(scores.dtype())?;
            scores
                .reshape((kv_heads, group, t, n))?
                .broadcast_add(&mask)?
        }
        None => scores,
    };
    let probs = softmax_last_dim(&scores)?.reshape((kv_heads, group * t, n))?;
    let out = probs.matmul(&view.v.contiguous()?)?;
    out.reshape((kv_heads, group, t, shape.head_dim))?
        .permute((2, 0, 1, 3))?
        .reshape((t, shape.heads * shape.head_dim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::pseudo_random;
    use candle_core::Device;

    /// Feeds chunks of `chunks` tokens through both paths, two sequences per batch on the
    /// host, and checks that every output has the same bits.
    fn compare(shape: AttentionShape, chunks: &[usize], ring: Option<usize>) {
        let d = shape.head_dim;
        let new_cache = || ring.map_or_else(LayerCache::growing, LayerCache::ring);
        let mut host_caches = [new_cache(), new_cache()];
        let mut tensor_caches = [new_cache(), new_cache()];
        let mut pos0 = 0;
        for (c, &t) in chunks.iter().enumerate() {
            let seed = 10 * c as u32;
            let q: Vec<Vec<f32>> = (0..2)
                .map(|s| pseudo_random(t * shape.heads * d, seed + s))
                .collect();
            let k: Vec<Vec<f32>> = (0..2)
                .map(|s| pseudo_random(t * shape.kv_heads * d, seed + 3 + s))
                .collect();
            let v: Vec<Vec<f32>> = (0..2)
                .map(|s| pseudo_random(t * shape.kv_heads * d, seed + 6 + s))
                .collect();
            for s in 0..2 {
                host_caches[s]
                    .append_host(&k[s], &v[s], shape.kv_heads * d, pos0)
                    .unwrap();
            }
            let seqs: Vec<HostQueries> = (0..2)
                .map(|s| HostQueries {
                    q: &q[s],
                    pos0,
                    cache: host_caches[s].host_view().unwrap(),
                })
                .collect();
            let host = attend_host(shape, &seqs);
            for s in 0..2 {
                let tensor = |data: &[f32], heads| {
                    Tensor::from_slice(data, (t, heads, d), &Device::Cpu).unwrap()
                };
                let want = attend_tensors(
                    shape,
                    &mut tensor_caches[s],
                    pos0,
                    &tensor(&q[s], shape.heads),
                    &tensor(&k[s], shape.kv_heads),
                    &tensor(&v[s], shape.kv_heads),
                )
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
                let got = &host[s * want.len()..(s + 1) * want.len()];
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "chunk {c} sequence {s} value {i}: {g} vs {w}"
                    );
                }
            }
            pos0 += t;
        }
    }

    #[test]
    fn host_kernel_matches_the_tensor_ops() {
        let global = AttentionShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 40,
            window: None,
        };
        compare(global, &[7, 1, 1, 5], None);
        let local = AttentionShape {
            window: Some(6),
            ..global
        };
        compare(local, &[7, 1, 1, 5, 3], Some(12));
        let gemma = AttentionShape {
            heads: 4,
            kv_heads: 1,
            head_dim: 256,
            window: Some(512),
        };
        compare(gemma, &[300, 300, 1, 1], Some(1024));
        compare(
            AttentionShape {
                window: None,
                ..gemma
            },
            &[3, 1, 200, 1],
            None,
        );
    }
}
