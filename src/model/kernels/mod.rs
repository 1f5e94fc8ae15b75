//! CPU matrix kernels for 8-bit block-quantized weights (Q8_0, and Q5_0 re-encoded as
//! Q8_0; Q4_K and Q6_K are in `kquant`). Activations are quantized to Q8_0 per 32 values
//! (f16-rounded scale), as llama.cpp and candle do. Each block's dot product is summed exactly in integers, converted once
//! and added to the running f32 sum with one fused multiply-add by the block's scales,
//! block after block. Every kernel here does exactly that, so the logits are the same bits
//! on every CPU (this model's greedy choices move with any rounding difference). It is
//! not llama.cpp's order: llama.cpp keeps eight lanes of four-product partials, each
//! converted and scaled on its own (eight roundings a block instead of one), which costs
//! AVX2 two instructions per four products it cannot share between activation rows; the
//! golden tests bound the difference, which is of the size of llama.cpp's own between its
//! builds for different instruction sets.
//!
//! Weights are packed eight rows at a time: in each 64-byte chunk of a block, eight
//! consecutive quants of each of the eight rows. A 512-bit register of the chunk holds two
//! four-quant pieces of every row in its 16 lanes; against the activation's eight
//! matching bytes, broadcast, one instruction adds 16 four-product sums into the lanes,
//! with no shuffles until the block's end.

mod activations;
mod avx2;
mod kquant;
mod scalar;
mod vnni;

pub use kquant::{KSource, PackedK, SUPER as K_SUPER};

use activations::{QuantizedRows, unbiased};

use candle_core::utils::barrier_pool;
use half::f16;

/// Values per quantization block.
pub const BLOCK: usize = 32;
/// Weight rows packed together.
pub const GROUP: usize = 8;
/// Bytes of one packed block of a group: 32 quants of each of its 8 rows.
const GROUP_BLOCK_BYTES: usize = GROUP * BLOCK;
/// Quants of one row next to each other in the interleaved layout (two four-quant lanes).
const CHUNK_COLS: usize = 8;
/// The largest weight magnitude of a narrow group (Q5_0's is 16): a block's pair sums of
/// unsigned 8-bit activations (at most 4 chunks x 2 x 255 x 16 = 32,640) fit in an `i16`.
const NARROW_QUANT: u8 = 16;
/// Bytes of one Q8_0 block in a GGUF file (f16 scale, 32 quants).
const Q8_0_BYTES: usize = 34;
/// Bytes of one Q5_0 block in a GGUF file (f16 scale, 32 high bits, 16 nibble bytes).
const Q5_0_BYTES: usize = 22;

/// The most activation rows any kernel's tile covers.
const TILE_ROWS: usize = if vnni::MAX_ROWS > avx2::MAX_ROWS {
    vnni::MAX_ROWS
} else {
    avx2::MAX_ROWS
};

/// Calls `$kernel::<R, FLAG>(args)` with the tile's activation row count `R` (1 to 4,
/// more taken as 4) and a flag, both as const generics: each tile kernel is compiled once
/// per pair, with its loops over rows unrolled.
macro_rules! by_rows_and_flag {
    ($kernel:ident($($arg:expr),* $(,)?), $rows:expr, $flag:expr) => {
        match ($rows, $flag) {
            (1, false) => $kernel::<1, false>($($arg),*),
            (1, true) => $kernel::<1, true>($($arg),*),
            (2, false) => $kernel::<2, false>($($arg),*),
            (2, true) => $kernel::<2, true>($($arg),*),
            (3, false) => $kernel::<3, false>($($arg),*),
            (3, true) => $kernel::<3, true>($($arg),*),
            (_, false) => $kernel::<4, false>($($arg),*),
            (_, true) => $kernel::<4, true>($($arg),*),
        }
    };
}
pub(crate) use by_rows_and_flag;

/// Which kernel runs the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Scalar,
    Avx2,
    Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    fn best() -> Self {
        if vnni::available() {
            Self::Vnni
        } else if avx2::available() {
            Self::Avx2
        } else {
            Self::Scalar
        }
    }

    /// Activation rows one tile covers.
    fn max_rows(self) -> usize {
        match self {
            Self::Scalar => 1,
            Self::Avx2 => avx2::MAX_ROWS,
            Self::Vnni => vnni::MAX_ROWS,
        }
    }
}

/// A `[rows, cols]` weight matrix of Q8_0 blocks, packed `[rows/8][cols/32]` groups of
/// 8 x 32 quants, interleaved: byte `j * 64 + r * 8 + t` of a group block is row `r`,
/// column `8j + t` of the block.
pub struct PackedQ8 {
    rows: usize,
    cols: usize,
    /// Quants, group by group, block by block.
    qs: Vec<[i8; GROUP_BLOCK_BYTES]>,
    /// The 8 rows' scales of each group block, same order, as in the file (f16: decoding
    /// is bandwidth-bound).
    scales: Vec<[f16; GROUP]>,
    /// The sum of each of the 8 rows' 32 quants, same order (at most 4,096 in magnitude):
    /// what the AVX2 kernel takes back off after multiplying biased activations.
    sums: Vec<[i16; GROUP]>,
    /// Per group of 8 rows: whether every quant lies in `-NARROW_QUANT..=NARROW_QUANT`
    /// (Q5_0's range).
    narrow: Vec<bool>,
}

/// The encodings `PackedQ8` reads from GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// `d: f16, qs: [i8; 32]`.
    Q8_0,
    /// `d: f16, qh: u32, qs: [u8; 16]`, values `(q5 - 16) * d`.
    Q5_0,
}

impl SourceType {
    /// Bytes per 32-value block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => Q8_0_BYTES,
            Self::Q5_0 => Q5_0_BYTES,
        }
    }
}

impl PackedQ8 {
    /// An empty matrix of `cols` columns, to be filled with [`PackedQ8::push_rows`].
    pub fn with_capacity(rows: usize, cols: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK), "columns must be whole blocks");
        let blocks = rows.div_ceil(GROUP) * cols / BLOCK;
        Self {
            rows: 0,
            cols,
            qs: Vec::with_capacity(blocks),
            scales: Vec::with_capacity(blocks),
            sums: Vec::with_capacity(blocks),
            narrow: Vec::with_capacity(rows.div_ceil(GROUP)),
        }
    }

    /// Appends whole rows given as raw GGUF blocks of `source`; the row count of each call
    /// must be a multiple of 8 except in the last call.
    pub fn push_rows(&mut self, source: SourceType, bytes: &[u8]) {
        let kb = self.cols / BLOCK;
        let row_bytes = kb * source.block_bytes();
        assert!(bytes.len().is_multiple_of(row_bytes) && self.rows.is_multiple_of(GROUP));
        for group in bytes.chunks(row_bytes * GROUP) {
            let rows_here = group.len() / row_bytes;
            let mut narrow = true;
            for b in 0..kb {
                let mut qs = [0i8; GROUP_BLOCK_BYTES];
                let mut scales = [f16::ZERO; GROUP];
                let mut sums = [0i16; GROUP];
                for r in 0..rows_here {
                    let start = r * row_bytes + b * source.block_bytes();
                    let (q, d) = decode_block(source, &group[start..start + source.block_bytes()]);
                    for (c, &value) in q.iter().enumerate() {
                        qs[interleaved(r, c)] = value;
                    }
                    narrow &= q.iter().all(|v| v.unsigned_abs() <= NARROW_QUANT);
                    scales[r] = d;
                    sums[r] = q.iter().map(|&v| v as i16).sum();
                }
                self.qs.push(qs);
                self.scales.push(scales);
                self.sums.push(sums);
            }
            self.narrow.push(narrow);
            self.rows += rows_here;
        }
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.qs.len() * GROUP_BLOCK_BYTES + (self.scales.len() + self.sums.len()) * GROUP * 2
    }

    /// Stacks matrices with the same column count along their rows.
    pub fn concat(parts: Vec<PackedQ8>) -> PackedQ8 {
        let cols = parts[0].cols;
        assert!(
            parts
                .iter()
                .all(|p| p.cols == cols && p.rows.is_multiple_of(GROUP))
        );
        let mut joined = PackedQ8::with_capacity(parts.iter().map(|p| p.rows).sum(), cols);
        for part in parts {
            joined.rows += part.rows;
            joined.narrow.extend_from_slice(&part.narrow);
            joined.qs.extend_from_slice(&part.qs);
            joined.scales.extend_from_slice(&part.scales);
            joined.sums.extend_from_slice(&part.sums);
        }
        joined
    }

    /// Whether every group is narrow.
    fn all_narrow(&self) -> bool {
        self.narrow.iter().all(|&narrow| narrow)
    }

    /// Writes row `row` as f32 into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let kb = self.cols / BLOCK;
        let (group, r) = (row / GROUP, row % GROUP);
        for b in 0..kb {
            let at = group * kb + b;
            let (qs, d) = (&self.qs[at], self.scales[at][r].to_f32());
            for (c, o) in out[b * BLOCK..(b + 1) * BLOCK].iter_mut().enumerate() {
                *o = qs[interleaved(r, c)] as f32 * d;
            }
        }
    }

    /// `x W^T` for `x: [m, cols]` row-major f32, giving `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, Kernel::best())
    }

    /// [`PackedQ8::matmul`] with a given kernel (one this CPU runs).
    fn matmul_with(&self, x: &[f32], m: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols);
        let acts = QuantizedRows::quantize(x, m, self.cols);
        // Only the AVX2 kernel's wide groups take the activations signed.
        let signed = if kernel == Kernel::Avx2 && !self.all_narrow() {
            acts.signed()
        } else {
            Vec::new()
        };
        run_tiles(self.rows, m, kernel.max_rows(), |group, row0, tile| {
            let w = self.group(group);
            match kernel {
                Kernel::Scalar => scalar::tile(&w, &acts, row0, tile),
                // SAFETY: `Kernel::best` chose these after detecting their features.
                Kernel::Avx2 => unsafe { avx2::tile(&w, &acts, &signed, row0, tile) },
                Kernel::Vnni => unsafe { vnni::tile(&w, &acts, row0, tile) },
            }
        })
    }

    fn group(&self, group: usize) -> WeightGroup<'_> {
        let kb = self.cols / BLOCK;
        let span = group * kb..(group + 1) * kb;
        WeightGroup {
            qs: &self.qs[span.clone()],
            scales: &self.scales[span.clone()],
            sums: &self.sums[span],
            narrow: self.narrow[group],
        }
    }
}

/// `[m, n]` outputs of a matrix of `n` rows in groups of eight: `tile(group, row0, tile)`
/// fills `tile[s][r]`, activation row `row0 + s` against weight row `8 * group + r`, for up
/// to `max_rows` activation rows at a time; the groups are spread over the CPU threads.
fn run_tiles(
    n: usize,
    m: usize,
    max_rows: usize,
    tile: impl Fn(usize, usize, &mut [[f32; GROUP]]) + Sync,
) -> Vec<f32> {
    let padded = n.next_multiple_of(GROUP);
    // Not zero-filled (for the output head that is 16 MB a step, on this thread while
    // the pool waits): the groups below write every element before `set_len`.
    let mut out: Vec<f32> = Vec::with_capacity(m * padded);
    let out_ptr = SharedOut(out.as_mut_ptr());
    barrier_pool().execute_chunked(padded / GROUP, |range| {
        // Each group writes only its own eight columns of every output row.
        let out_ptr = &out_ptr;
        let mut values = [[0f32; GROUP]; TILE_ROWS];
        for group in range {
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(max_rows);
                let values = &mut values[..rows];
                tile(group, i, values);
                for (r, row) in values.iter().enumerate() {
                    // SAFETY: row i + r, columns 8*group..8*group+8 belong to this item alone.
                    unsafe {
                        let dst = out_ptr.0.add((i + r) * padded + group * GROUP);
                        std::ptr::copy_nonoverlapping(row.as_ptr(), dst, GROUP);
                    }
                }
                i += rows;
            }
        }
    });
    // SAFETY: groups 0..padded/GROUP each wrote their eight columns of all m rows.
    unsafe { out.set_len(m * padded) };
    if padded != n {
        out = out
            .chunks(padded)
            .flat_map(|row| row[..n].to_vec())
            .collect();
    }
    out
}

/// Where row `r`, column `c` of a block sits in its group block.
fn interleaved(r: usize, c: usize) -> usize {
    (c / CHUNK_COLS) * GROUP * CHUNK_COLS + r * CHUNK_COLS + c % CHUNK_COLS
}

/// Row `r` of a group block times one activation block: the exact integer dot product
/// (at most 32 x 127 x 128 in magnitude, well inside `i32`).
fn block_dot(wq: &[i8; GROUP_BLOCK_BYTES], r: usize, xq: &[u8; BLOCK]) -> i32 {
    (0..BLOCK)
        .map(|c| wq[interleaved(r, c)] as i32 * unbiased(xq[c]) as i32)
        .sum()
}

/// Asks for the weights [`PREFETCH_BYTES`] past `block`, for the SIMD kernels: the packed
/// matrix is one sequential stream, and the hardware prefetcher alone falls behind when
/// every block takes this many multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
fn prefetch_ahead(block: &[i8; GROUP_BLOCK_BYTES]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for line in (0..GROUP_BLOCK_BYTES).step_by(64) {
        let ahead = block.as_ptr().wrapping_add(PREFETCH_BYTES + line);
        _mm_prefetch::<_MM_HINT_T0>(ahead);
    }
}

/// How far ahead [`prefetch_ahead`] reaches, in bytes (measured best on a Zen 5 and on
/// the output head of Gemma 3 270M, 178 MB).
#[cfg(target_arch = "x86_64")]
const PREFETCH_BYTES: usize = 4096;

/// Eight packed weight rows: one entry per block.
pub(crate) struct WeightGroup<'a> {
    qs: &'a [[i8; GROUP_BLOCK_BYTES]],
    scales: &'a [[f16; GROUP]],
    /// [`PackedQ8`]'s `sums`.
    sums: &'a [[i16; GROUP]],
    /// [`PackedQ8`]'s `narrow` of this group.
    narrow: bool,
}

struct SharedOut(*mut f32);
// SAFETY: work items write disjoint parts of the output (see `matmul`,
// `for_each_chunk_mut` and `for_each_piece_mut`).
unsafe impl Sync for SharedOut {}

/// Calls `f(start, chunk)` for consecutive `chunk_len`-element pieces of `out`, spread over
/// the CPU threads; output of one piece or less is filled on the calling thread, where
/// waking the pool would cost more than it saves.
pub fn for_each_chunk_mut(out: &mut [f32], chunk_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let len = out.len();
    let bounds: Vec<usize> = (0..len.div_ceil(chunk_len).max(1))
        .map(|i| i * chunk_len)
        .chain(std::iter::once(len))
        .collect();
    for_each_piece_mut(out, &bounds, |item, piece| f(item * chunk_len, piece));
}

/// A new `[rows, cols]` output, row `i` filled by `f(i, row)`, whole rows of about
/// `chunk_len` values per work item spread over the CPU threads.
pub fn fill_rows(
    rows: usize,
    cols: usize,
    chunk_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    if out.is_empty() {
        return out;
    }
    let rows_per_item = (chunk_len / cols).max(1);
    for_each_chunk_mut(&mut out, rows_per_item * cols, |start, piece| {
        for (j, row) in piece.chunks_mut(cols).enumerate() {
            f(start / cols + j, row);
        }
    });
    out
}

/// Calls `f(item, piece)` for every piece `bounds[item]..bounds[item + 1]` of `out`
/// (`bounds` ascending from 0 to `out.len()`), spread over the CPU threads; a single piece
/// is filled on the calling thread.
pub fn for_each_piece_mut(out: &mut [f32], bounds: &[usize], f: impl Fn(usize, &mut [f32]) + Sync) {
    assert!(bounds.first() == Some(&0) && bounds.last() == Some(&out.len()));
    assert!(bounds.is_sorted(), "pieces must not overlap");
    let pieces = bounds.len() - 1;
    if pieces == 1 {
        f(0, out);
        return;
    }
    let out_ptr = SharedOut(out.as_mut_ptr());
    barrier_pool().execute_chunked(pieces, |items| {
        let out_ptr = &out_ptr;
        for item in items {
            let (start, end) = (bounds[item], bounds[item + 1]);
            // SAFETY: sorted bounds make the pieces disjoint, and each is handed to exactly
            // one work item.
            let piece =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(start), end - start) };
            f(item, piece);
        }
    });
}

/// Decodes one GGUF block into 32 signed quants and their scale.
fn decode_block(source: SourceType, block: &[u8]) -> ([i8; BLOCK], f16) {
    let d = f16::from_le_bytes([block[0], block[1]]);
    let mut q = [0i8; BLOCK];
    match source {
        SourceType::Q8_0 => {
            for (q, &b) in q.iter_mut().zip(&block[2..]) {
                *q = b as i8;
            }
        }
        SourceType::Q5_0 => {
            let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            for j in 0..BLOCK / 2 {
                let lo = (block[6 + j] & 0x0f) as u32 | ((qh >> j) & 1) << 4;
                let hi = (block[6 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                q[j] = lo as i8 - 16;
                q[j + BLOCK / 2] = hi as i8 - 16;
            }
        }
    }
    (q, d)
}

/// Reproducible values in [-1, 1) for tests.
#[cfg(test)]
pub(crate) fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests;
