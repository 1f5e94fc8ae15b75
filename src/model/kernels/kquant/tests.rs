//! Tests of the Q4_K/Q6_K kernels: the block decoding against candle's, the products
//! against exact arithmetic and candle's matmul, and every kernel against the portable one.

use super::*;
use crate::model::kernels::pseudo_random;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// `rows x cols` pseudo-random weights quantized by candle to `dtype`.
fn quantized(dtype: GgmlDType, rows: usize, cols: usize) -> QTensor {
    let w = Tensor::from_vec(pseudo_random(rows * cols, 7), (rows, cols), &Device::Cpu).unwrap();
    QTensor::quantize(&w, dtype).unwrap()
}

/// GGUF super-blocks of `source` packed.
fn packed(source: KSource, bytes: &[u8], cols: usize) -> PackedK {
    let mut packed = PackedK::with_capacity(0, cols);
    packed.push_rows(source, bytes);
    packed
}

fn source_of(dtype: GgmlDType) -> KSource {
    match dtype {
        GgmlDType::Q4K => KSource::Q4K,
        _ => KSource::Q6K,
    }
}

const TYPES: [GgmlDType; 2] = [GgmlDType::Q4K, GgmlDType::Q6K];

#[test]
fn packed_rows_dequantize_to_candles_values() {
    for dtype in TYPES {
        let (rows, cols) = (13, 512);
        let q = quantized(dtype, rows, cols);
        let packed = packed(source_of(dtype), &q.data().unwrap(), cols);
        assert_eq!(packed.rows(), rows);
        let reference: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            packed.dequantize_row(r, &mut row);
            assert_eq!(
                &row[..],
                &reference[r * cols..(r + 1) * cols],
                "{dtype:?} row {r}"
            );
        }
    }
}

/// The product computed in f64 from the dequantized weights and the dequantized Q8_K
/// activations: what the kernels compute, rounded once.
fn exact_product(packed: &PackedK, x: &[f32], m: usize) -> Vec<f64> {
    let acts = SuperRows::quantize(x, m, packed.cols);
    let mut row = vec![0f32; packed.cols];
    let mut out = vec![0f64; m * packed.rows];
    for r in 0..packed.rows {
        packed.dequantize_row(r, &mut row);
        for i in 0..m {
            out[i * packed.rows + r] = (0..packed.cols)
                .map(|c| {
                    let at = i * acts.blocks + c / SUPER;
                    let xq = acts.quants(at)[c % SUPER] as f64 * acts.scales[at] as f64;
                    row[c] as f64 * xq
                })
                .sum();
        }
    }
    out
}

#[test]
fn products_match_exact_arithmetic_and_candles_matmul() {
    for dtype in TYPES {
        let (rows, cols) = (21, 768);
        let q = quantized(dtype, rows, cols);
        let packed = packed(source_of(dtype), &q.data().unwrap(), cols);
        for m in [1, 3, 4, 9] {
            let x = pseudo_random(m * cols, 11);
            let ours = packed.matmul(&x, m);
            let exact = exact_product(&packed, &x, m);
            let xt = Tensor::from_vec(x, (m, cols), &Device::Cpu).unwrap();
            let candle: Vec<f32> = QMatMul::from_qtensor(quantized(dtype, rows, cols))
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(ours.len(), m * rows);
            for (i, ((&a, &e), &c)) in ours.iter().zip(&exact).zip(&candle).enumerate() {
                // The kernels' integer sums are exact; what is left is a few f32 roundings
                // of the running sum (a dozen terms of magnitude up to ~10).
                assert!(
                    (a as f64 - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{dtype:?} m {m} element {i}: {a} vs exact {e}"
                );
                // Candle sums in another order, per sub-block in f32, and rounds the
                // activations' ties away from zero: the same size of difference.
                assert!(
                    (a - c).abs() <= 1e-4 * c.abs().max(1.0),
                    "{dtype:?} m {m} element {i}: {a} vs candle {c}"
                );
            }
        }
    }
}

/// Q4_K and Q6_K blocks at the ends of their ranges: every quant and scale as wide as the
/// format allows, where a 16-bit pair sum or a 32-bit total would overflow first.
fn extreme_blocks(source: KSource, rows: usize, cols: usize) -> Vec<u8> {
    let mut block = vec![0u8; source.block_bytes()];
    match source {
        KSource::Q4K => {
            block[..2].copy_from_slice(&f16::ONE.to_le_bytes());
            block[2..4].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
            // Every 6-bit scale and offset 63, every quant 15.
            block[4..].fill(0xff);
        }
        KSource::Q6K => {
            // Every quant 0 (value -32), every scale -128.
            block[192..208].fill(0x80);
            block[208..].copy_from_slice(&f16::ONE.to_le_bytes());
        }
    }
    block.repeat(rows * cols / SUPER)
}

#[test]
fn every_kernel_this_cpu_runs_gives_the_portable_kernels_bits() {
    let mut kernels = vec![];
    if super::super::avx2::available() {
        kernels.push(Kernel::Avx2);
    }
    if vnni::available() {
        kernels.push(Kernel::Vnni);
    }
    for dtype in TYPES {
        let source = source_of(dtype);
        let (rows, cols) = (19, 512);
        let random = packed(source, &quantized(dtype, rows, cols).data().unwrap(), cols);
        let extreme = packed(source, &extreme_blocks(source, rows, cols), cols);
        for (name, packed) in [("random", &random), ("extreme", &extreme)] {
            for m in [1, 2, 3, 4, 5, 7, 8, 9, 17] {
                // Extreme inputs too: every activation quant at -127 or 127.
                let x: Vec<f32> = if name == "extreme" {
                    (0..m * cols)
                        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
                        .collect()
                } else {
                    pseudo_random(m * cols, 13)
                };
                let portable = packed.matmul_with(&x, m, Kernel::Scalar);
                if name == "extreme" {
                    let exact = exact_product(packed, &x, m);
                    for (a, e) in portable.iter().zip(&exact) {
                        assert!(
                            (*a as f64 - e).abs() <= 1e-5 * e.abs().max(1.0),
                            "{a} vs {e}"
                        );
                    }
                }
                for &kernel in &kernels {
                    let ours = packed.matmul_with(&x, m, kernel);
                    let same = ours
                        .iter()
                        .zip(&portable)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{dtype:?} {name} m {m}: {kernel:?} differs from the portable kernel"
                    );
                }
            }
        }
    }
}

#[test]
fn a_stack_of_q4_k_and_q6_k_rows_gives_each_its_own_product() {
    let cols = 256;
    let parts: Vec<(GgmlDType, usize)> = vec![(GgmlDType::Q6K, 16), (GgmlDType::Q4K, 8)];
    let separate: Vec<PackedK> = parts
        .iter()
        .map(|&(dtype, rows)| {
            packed(
                source_of(dtype),
                &quantized(dtype, rows, cols).data().unwrap(),
                cols,
            )
        })
        .collect();
    let stacked = PackedK::concat(
        parts
            .iter()
            .map(|&(dtype, rows)| {
                packed(
                    source_of(dtype),
                    &quantized(dtype, rows, cols).data().unwrap(),
                    cols,
                )
            })
            .collect(),
    );
    assert_eq!(stacked.rows(), 24);
    let m = 5;
    let x = pseudo_random(m * cols, 17);
    let joined = stacked.matmul(&x, m);
    let alone: Vec<Vec<f32>> = separate.iter().map(|p| p.matmul(&x, m)).collect();
    for i in 0..m {
        let expected: Vec<f32> = alone
            .iter()
            .zip(&separate)
            .flat_map(|(ys, p)| ys[i * p.rows()..(i + 1) * p.rows()].to_vec())
            .collect();
        // The Q6_K rows' zero offsets take nothing off: the same bits as alone.
        assert_eq!(
            &joined[i * 24..(i + 1) * 24],
            &expected[..],
            "activation row {i}"
        );
    }
}
