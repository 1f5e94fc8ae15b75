//! Tests of the 8-bit kernels: against candle, across the kernels, and the block formula.

use super::*;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

/// The packed kernel against candle's own quantized matmul on the same blocks.
fn check_against_candle(dtype: GgmlDType, source: SourceType, rows: usize, cols: usize, m: usize) {
    let dev = Device::Cpu;
    let w = Tensor::from_vec(pseudo_random(rows * cols, 7), (rows, cols), &dev).unwrap();
    let qw = QTensor::quantize(&w, dtype).unwrap();
    let mut packed = PackedQ8::with_capacity(rows, cols);
    packed.push_rows(source, &qw.data().unwrap());
    let x = pseudo_random(m * cols, 11);
    let ours = packed.matmul(&x, m);
    let xt = Tensor::from_vec(x, (m, cols), &dev).unwrap();
    let reference: Vec<f32> = QMatMul::from_qtensor(qw)
        .unwrap()
        .forward(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(ours.len(), reference.len());
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "element {i}: {a} vs candle {b}"
        );
    }
}

#[test]
fn matches_candle_for_q8_0_weights_over_every_tile_shape() {
    for m in [1, 2, 3, 4, 5, 7, 8, 9, 17] {
        check_against_candle(GgmlDType::Q8_0, SourceType::Q8_0, 24, 96, m);
    }
}

#[test]
fn matches_candle_for_q5_0_weights_and_rows_not_a_multiple_of_eight() {
    check_against_candle(GgmlDType::Q5_0, SourceType::Q5_0, 13, 64, 5);
}

/// `rows x cols` weights quantized to `dtype` and packed, the first block of row 0 all
/// 1.0 and of row 1 all -1.0 (the widest quants, where a 16-bit sum could overflow).
fn packed_extremes(dtype: GgmlDType, source: SourceType, rows: usize, cols: usize) -> PackedQ8 {
    let mut values = pseudo_random(rows * cols, 5);
    values[..BLOCK].fill(1.0);
    values[cols..cols + BLOCK].fill(-1.0);
    let w = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
    let qw = QTensor::quantize(&w, dtype).unwrap();
    let mut packed = PackedQ8::with_capacity(rows, cols);
    packed.push_rows(source, &qw.data().unwrap());
    packed
}

#[test]
fn every_kernel_this_cpu_runs_gives_the_portable_kernels_bits() {
    let wide = packed_extremes(GgmlDType::Q8_0, SourceType::Q8_0, 16, 128);
    let narrow = packed_extremes(GgmlDType::Q5_0, SourceType::Q5_0, 16, 128);
    assert!(wide.narrow.iter().all(|n| !n) && narrow.all_narrow());
    // A fused matrix of both, as when a layer's V projection is Q8_0 and its Q and K Q5_0.
    let mixed = PackedQ8::concat(vec![
        packed_extremes(GgmlDType::Q5_0, SourceType::Q5_0, 8, 128),
        packed_extremes(GgmlDType::Q8_0, SourceType::Q8_0, 8, 128),
    ]);
    let kernels = [
        (Kernel::Avx2, avx2::available()),
        (Kernel::Vnni, vnni::available()),
    ];
    // 1, 2 and 11 rows (tiles of 4, 4 and 3): every tile height of every kernel.
    for m in [1, 2, 11] {
        let mut x = pseudo_random(m * 128, 9);
        x[..128].fill(-1.0);
        if m > 1 {
            x[128..256].fill(1.0);
        }
        for packed in [&wide, &narrow, &mixed] {
            let portable = packed.matmul_with(&x, m, Kernel::Scalar);
            for (kernel, _) in kernels.iter().filter(|(_, runs)| *runs) {
                let simd = packed.matmul_with(&x, m, *kernel);
                // Bit for bit: every kernel sums each block exactly and rounds it once.
                for (i, (a, b)) in portable.iter().zip(&simd).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{kernel:?}, {m} rows, narrow groups {:?}, element {i}: {a} vs {b}",
                        packed.narrow
                    );
                }
            }
        }
    }
}

#[test]
fn the_portable_kernel_rounds_each_block_once() {
    let packed = packed_extremes(GgmlDType::Q8_0, SourceType::Q8_0, 8, 96);
    let x = pseudo_random(96, 4);
    let acts = QuantizedRows::quantize(&x, 1, 96);
    let ours = packed.matmul_with(&x, 1, Kernel::Scalar);
    for (r, value) in ours.iter().enumerate() {
        let (mut expected, mut exact, mut magnitude) = (0f32, 0f64, 0f64);
        for b in 0..3 {
            let (wd, xd) = (packed.scales[b][r].to_f32(), acts.scales[b]);
            let dot: i32 = (0..BLOCK)
                .map(|c| {
                    packed.qs[b][interleaved(r, c)] as i32 * unbiased(acts.biased[b][c]) as i32
                })
                .sum();
            expected = (dot as f32).mul_add(wd * xd, expected);
            let term = dot as f64 * wd as f64 * xd as f64;
            exact += term;
            magnitude += term.abs();
        }
        assert_eq!(value.to_bits(), expected.to_bits(), "row {r}");
        // Each block's scale product and its fused add round once (2^-24 each): with
        // three blocks the error stays under 6 roundings of the terms' magnitude.
        let bound = 6.0 * magnitude / (1u64 << 24) as f64;
        assert!(
            (*value as f64 - exact).abs() <= bound,
            "row {r}: {value} vs exact {exact}"
        );
    }
}

#[test]
fn a_group_with_any_wide_quant_is_not_narrow_and_its_neighbours_stay_so() {
    let narrow = packed_extremes(GgmlDType::Q5_0, SourceType::Q5_0, 8, 64);
    let wide = packed_extremes(GgmlDType::Q8_0, SourceType::Q8_0, 8, 64);
    assert_eq!(narrow.narrow, [true]);
    let joined = PackedQ8::concat(vec![narrow, wide]);
    assert_eq!(joined.narrow, [true, false]);
    assert!(!joined.all_narrow());
}

#[test]
fn each_blocks_weight_sums_are_its_rows_quant_sums() {
    let packed = PackedQ8::concat(vec![
        packed_extremes(GgmlDType::Q5_0, SourceType::Q5_0, 8, 64),
        packed_extremes(GgmlDType::Q8_0, SourceType::Q8_0, 8, 64),
    ]);
    // The extremes: rows 0 and 1 of each part start with a block of one repeated quant.
    assert_eq!(packed.sums[0][0], -16 * 32);
    assert_eq!(packed.sums[2][0], 127 * 32);
    for (at, (qs, sums)) in packed.qs.iter().zip(&packed.sums).enumerate() {
        for (r, &sum) in sums.iter().enumerate() {
            let expected: i32 = (0..BLOCK).map(|c| qs[interleaved(r, c)] as i32).sum();
            assert_eq!(sum as i32, expected, "block {at}, row {r}");
        }
    }
}

#[test]
fn dequantized_rows_and_concatenation_keep_values() {
    let dev = Device::Cpu;
    let w = Tensor::from_vec(pseudo_random(16 * 64, 3), (16, 64), &dev).unwrap();
    let qw = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let expected: Vec<Vec<f32>> = qw.dequantize(&dev).unwrap().to_vec2().unwrap();
    let half = qw.data().unwrap().len() / 2;
    let mut top = PackedQ8::with_capacity(8, 64);
    top.push_rows(SourceType::Q8_0, &qw.data().unwrap()[..half]);
    let mut bottom = PackedQ8::with_capacity(8, 64);
    bottom.push_rows(SourceType::Q8_0, &qw.data().unwrap()[half..]);
    let joined = PackedQ8::concat(vec![top, bottom]);
    assert_eq!(joined.rows(), 16);
    let mut row = vec![0f32; 64];
    for (r, want) in expected.iter().enumerate() {
        joined.dequantize_row(r, &mut row);
        assert_eq!(&row, want);
    }
}
