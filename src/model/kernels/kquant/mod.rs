//! CPU matrix kernels for Q4_K and Q6_K weights (256-value super-blocks with integer
//! sub-block scales), against activations quantized to Q8_K (one f32 scale per 256
//! values, as llama.cpp quantizes them for these types).
//!
//! A super-block's dot product is one exact integer, `sum_j s_j * (w_j . x_j)` over its
//! 16-value sub-blocks `j` (`s_j` the weights' integer scale, `w` their quants: Q6_K's
//! `q - 32`, Q4_K's `q`), converted once and added to the running f32 sum with one fused
//! multiply-add by `d_w * d_x`; Q4_K then takes off its offsets the same way, one exact
//! integer `sum_k m_k * (sum of x over 32-value sub-block k)` times `dmin_w * d_x`. Every
//! kernel here does exactly that, so the results are the same bits on every CPU, as for the
//! 8-bit kernels of the parent module.
//!
//! Weights are packed eight rows at a time, each super-block's quants as signed bytes in
//! the parent's interleaved layout (in each 64-byte chunk, eight consecutive quants of each
//! of the eight rows), with each sub-block's eight row scales beside them.

mod activations;
mod avx2;
mod scalar;
mod vnni;

pub(crate) use activations::SuperRows;

use half::f16;

use super::{GROUP, Kernel, interleaved, run_tiles};

/// Values per super-block.
pub const SUPER: usize = 256;
/// Values per sub-block scale (Q6_K's; Q4_K's 32-value sub-blocks give two each).
const SUB: usize = 16;
/// Sub-block scales per super-block.
const SUBS: usize = SUPER / SUB;
/// Q4_K offsets (`m`) per super-block, one per 32 values.
const MINS: usize = 8;
/// Bytes of one Q4_K super-block in a GGUF file (`d`, `dmin`, 12 scale bytes, 128 nibble bytes).
const Q4_K_BYTES: usize = 144;
/// Bytes of one Q6_K super-block in a GGUF file (128 low-nibble bytes, 64 high-bit bytes,
/// 16 scales, `d`).
const Q6_K_BYTES: usize = 210;

/// The encodings [`PackedK`] reads from GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KSource {
    /// Values `d * sc_k * q - dmin * m_k`, `q` in 0..16, `sc` and `m` 6-bit per 32 values.
    Q4K,
    /// Values `d * sc_j * (q - 32)`, `q` in 0..64, `sc` a signed byte per 16 values.
    Q6K,
}

impl KSource {
    /// Bytes per 256-value super-block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => Q4_K_BYTES,
            Self::Q6K => Q6_K_BYTES,
        }
    }
}

/// One super-block of eight weight rows.
#[repr(C, align(64))]
pub(crate) struct GroupBlock {
    /// Quants, byte `(c / 8) * 64 + r * 8 + c % 8` for row `r`, column `c` (`interleaved`).
    qs: [i8; GROUP * SUPER],
    /// `scales[j][r]`: row `r`'s integer scale of 16-value sub-block `j`.
    scales: [[i16; GROUP]; SUBS],
    /// `128 * sum_j s_j * (sum of w over sub-block j)` per row: what activations biased by
    /// 128 add to the integer sum, taken back off.
    bias: [i32; GROUP],
    /// Each row's `d`.
    d: [f16; GROUP],
    /// Each row's `dmin` (Q4_K; zero for Q6_K).
    dmin: [f16; GROUP],
    /// Q4_K's offsets `m_k`, laid out for the SIMD kernels: in half `h`, 16-bit element
    /// `2 * (2 * r + e) + t` is row `r`'s `m` of 32-value sub-block `4h + 2e + t`.
    mins: [[i16; 4 * GROUP]; 2],
}

impl GroupBlock {
    /// Stores row `r` of the group.
    fn set_row(&mut self, r: usize, row: &DecodedBlock) {
        for (c, &q) in row.w.iter().enumerate() {
            self.qs[interleaved(r, c)] = q;
        }
        for (j, &scale) in row.scales.iter().enumerate() {
            self.scales[j][r] = scale;
            let sum: i32 = row.w[j * SUB..(j + 1) * SUB]
                .iter()
                .map(|&q| q as i32)
                .sum();
            self.bias[r] += 128 * scale as i32 * sum;
        }
        for (k, &m) in row.mins.iter().enumerate() {
            self.mins[k / 4][2 * (2 * r + (k % 4) / 2) + k % 2] = m;
        }
        self.d[r] = row.d;
        self.dmin[r] = row.dmin;
    }

    /// Row `r`'s offset of 32-value sub-block `k`.
    fn min(&self, r: usize, k: usize) -> i16 {
        self.mins[k / 4][2 * (2 * r + (k % 4) / 2) + k % 2]
    }
}

/// A `[rows, cols]` Q4_K or Q6_K matrix, packed `[rows/8][cols/256]` group blocks.
pub struct PackedK {
    rows: usize,
    cols: usize,
    /// Whether any rows are Q4_K, whose offsets the kernels then take off (Q6_K rows have
    /// none: zero `dmin` and `m`, which take nothing off).
    offsets: bool,
    blocks: Vec<GroupBlock>,
}

/// One row's super-block, decoded: quants `w` (signed), the scale of each 16 values, the
/// offset of each 32 (Q4_K), `d` and `dmin`.
struct DecodedBlock {
    w: [i8; SUPER],
    scales: [i16; SUBS],
    mins: [i16; MINS],
    d: f16,
    dmin: f16,
}

impl PackedK {
    /// An empty matrix of `cols` columns, to be filled with [`PackedK::push_rows`].
    pub fn with_capacity(rows: usize, cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(SUPER),
            "columns must be whole super-blocks"
        );
        Self {
            rows: 0,
            cols,
            offsets: false,
            blocks: Vec::with_capacity(rows.div_ceil(GROUP) * cols / SUPER),
        }
    }

    /// Appends whole rows given as raw GGUF super-blocks of `source`; the row count of each
    /// call must be a multiple of 8 except in the last call.
    pub fn push_rows(&mut self, source: KSource, bytes: &[u8]) {
        let kb = self.cols / SUPER;
        let row_bytes = kb * source.block_bytes();
        assert!(bytes.len().is_multiple_of(row_bytes) && self.rows.is_multiple_of(GROUP));
        self.offsets |= source == KSource::Q4K;
        for group in bytes.chunks(row_bytes * GROUP) {
            let rows_here = group.len() / row_bytes;
            for b in 0..kb {
                let mut block = GroupBlock {
                    qs: [0; GROUP * SUPER],
                    scales: [[0; GROUP]; SUBS],
                    bias: [0; GROUP],
                    d: [f16::ZERO; GROUP],
                    dmin: [f16::ZERO; GROUP],
                    mins: [[0; 4 * GROUP]; 2],
                };
                for r in 0..rows_here {
                    let start = r * row_bytes + b * source.block_bytes();
                    let row = decode_block(source, &group[start..start + source.block_bytes()]);
                    block.set_row(r, &row);
                }
                self.blocks.push(block);
            }
            self.rows += rows_here;
        }
    }

    /// Stacks matrices with the same column count along their rows.
    pub fn concat(parts: Vec<PackedK>) -> PackedK {
        let cols = parts[0].cols;
        assert!(
            parts
                .iter()
                .all(|p| p.cols == cols && p.rows.is_multiple_of(GROUP))
        );
        let mut joined = PackedK::with_capacity(parts.iter().map(|p| p.rows).sum(), cols);
        for part in parts {
            joined.rows += part.rows;
            joined.offsets |= part.offsets;
            joined.blocks.extend(part.blocks);
        }
        joined
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Writes row `row` as f32 into `out` (`cols` values): `(d * s) * w - (dmin * m)`, as
    /// llama.cpp and candle dequantize.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let kb = self.cols / SUPER;
        let (group, r) = (row / GROUP, row % GROUP);
        for (b, values) in out.chunks_exact_mut(SUPER).enumerate() {
            let block = &self.blocks[group * kb + b];
            let (d, dmin) = (block.d[r].to_f32(), block.dmin[r].to_f32());
            for (c, value) in values.iter_mut().enumerate() {
                let scale = d * block.scales[c / SUB][r] as f32;
                let offset = dmin * block.min(r, c / 32) as f32;
                *value = scale * block.qs[interleaved(r, c)] as f32 - offset;
            }
        }
    }

    /// `x W^T` for `x: [m, cols]` row-major f32, giving `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, best_kernel())
    }

    /// [`PackedK::matmul`] with a given kernel (one this CPU runs).
    fn matmul_with(&self, x: &[f32], m: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols);
        let acts = SuperRows::quantize(x, m, self.cols);
        let offsets = self.offsets;
        let kb = self.cols / SUPER;
        run_tiles(self.rows, m, kernel.max_rows(), |group, row0, tile| {
            let w = &self.blocks[group * kb..(group + 1) * kb];
            match kernel {
                Kernel::Scalar => scalar::tile(w, offsets, &acts, row0, tile),
                // SAFETY: `best_kernel` chose these after detecting their features.
                Kernel::Avx2 => unsafe { avx2::tile(w, offsets, &acts, row0, tile) },
                Kernel::Vnni => unsafe { vnni::tile(w, offsets, &acts, row0, tile) },
            }
        })
    }
}

/// The fastest kernel this CPU runs for these types (each handles up to four activation
/// rows, what [`Kernel::max_rows`] gives).
fn best_kernel() -> Kernel {
    if vnni::available() {
        Kernel::Vnni
    } else if super::avx2::available() {
        Kernel::Avx2
    } else {
        Kernel::Scalar
    }
}

const _: () = assert!(super::vnni::MAX_ROWS == 4 && super::avx2::MAX_ROWS == 4);

/// Decodes one GGUF super-block.
fn decode_block(source: KSource, block: &[u8]) -> DecodedBlock {
    let half = |at: usize| f16::from_le_bytes([block[at], block[at + 1]]);
    let mut decoded = DecodedBlock {
        w: [0; SUPER],
        scales: [0; SUBS],
        mins: [0; MINS],
        d: f16::ZERO,
        dmin: f16::ZERO,
    };
    match source {
        KSource::Q4K => {
            decoded.d = half(0);
            decoded.dmin = half(2);
            let packed_scales = &block[4..16];
            for k in 0..MINS {
                let (scale, min) = q4k_scale_min(k, packed_scales);
                decoded.scales[2 * k] = scale as i16;
                decoded.scales[2 * k + 1] = scale as i16;
                decoded.mins[k] = min as i16;
            }
            // Each 32 bytes hold 64 values: 32 in the low nibbles, the next 32 in the high.
            for (c, bytes) in block[16..].chunks_exact(32).enumerate() {
                for (t, &byte) in bytes.iter().enumerate() {
                    decoded.w[c * 64 + t] = (byte & 0x0f) as i8;
                    decoded.w[c * 64 + 32 + t] = (byte >> 4) as i8;
                }
            }
        }
        KSource::Q6K => {
            let (low, high) = (&block[..128], &block[128..192]);
            for (j, &scale) in block[192..208].iter().enumerate() {
                decoded.scales[j] = scale as i8 as i16;
            }
            decoded.d = half(208);
            // Each half of 128 values: 64 low-nibble bytes and 32 bytes of 2-bit highs.
            for h in 0..2 {
                let (low, high) = (&low[h * 64..], &high[h * 32..]);
                for t in 0..32 {
                    let quants = [
                        (low[t] & 0x0f) | (high[t] & 3) << 4,
                        (low[t + 32] & 0x0f) | ((high[t] >> 2) & 3) << 4,
                        (low[t] >> 4) | ((high[t] >> 4) & 3) << 4,
                        (low[t + 32] >> 4) | ((high[t] >> 6) & 3) << 4,
                    ];
                    for (quarter, q) in quants.into_iter().enumerate() {
                        decoded.w[h * 128 + quarter * 32 + t] = q as i8 - 32;
                    }
                }
            }
        }
    }
    decoded
}

/// Q4_K's 6-bit scale and offset of 32-value sub-block `k` from its 12 packed bytes.
fn q4k_scale_min(k: usize, bytes: &[u8]) -> (u8, u8) {
    if k < 4 {
        (bytes[k] & 63, bytes[k + 4] & 63)
    } else {
        (
            (bytes[k + 4] & 0x0f) | ((bytes[k - 4] >> 6) << 4),
            (bytes[k + 4] >> 4) | ((bytes[k] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests;
