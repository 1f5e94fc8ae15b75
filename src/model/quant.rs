//! Exact re-encoding of quantized blocks into types that have fast CPU kernels.
//!
//! A Q5_0 block is `d: f16, qh: u32, qs: [u8; 16]` holding 32 values `(q - 16) * d` with
//! 5-bit `q`. Q8_0 is `d: f16, qs: [i8; 32]` holding `q * d`. With the same `d` and
//! `q8 = q5 - 16` the two encode identical numbers, and a Q8_0 x Q8_0 dot product computes
//! exactly what llama.cpp's Q5_0 x Q8_0 one does, with candle's AVX2 kernel.

const Q5_0_BLOCK_BYTES: usize = 22;
const Q8_0_BLOCK_BYTES: usize = 34;
const BLOCK_VALUES: usize = 32;

/// Re-encodes raw Q5_0 blocks as raw Q8_0 blocks (bit-exact values).
pub fn q5_0_to_q8_0(src: &[u8]) -> Vec<u8> {
    debug_assert!(src.len().is_multiple_of(Q5_0_BLOCK_BYTES));
    let blocks = src.len() / Q5_0_BLOCK_BYTES;
    let mut out = vec![0u8; blocks * Q8_0_BLOCK_BYTES];
    for (block, dst) in src
        .chunks_exact(Q5_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(Q8_0_BLOCK_BYTES))
    {
        dst[..2].copy_from_slice(&block[..2]);
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..];
        for j in 0..BLOCK_VALUES / 2 {
            let high_lo = ((qh >> j) & 1) << 4;
            let high_hi = ((qh >> (j + 16)) & 1) << 4;
            let lo = (qs[j] as u32 & 0x0f) | high_lo;
            let hi = (qs[j] as u32 >> 4) | high_hi;
            dst[2 + j] = (lo as i32 - 16) as i8 as u8;
            dst[2 + j + BLOCK_VALUES / 2] = (hi as i32 - 16) as i8 as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::{Device, Tensor};
    use std::borrow::Cow;

    fn dequantize(bytes: Vec<u8>, dtype: GgmlDType, n: usize) -> Vec<f32> {
        let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype).unwrap();
        let q = QTensor::new(storage, (1, n)).unwrap();
        q.dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn q8_0_reencoding_holds_exactly_the_q5_0_values() {
        let n = 4 * BLOCK_VALUES;
        // Values spanning the full 5-bit range, including both extremes, in every block.
        let xs: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 61) as f32 - 30.0) * 0.173)
            .collect();
        let q5 = QTensor::quantize(
            &Tensor::from_vec(xs, (1, n), &Device::Cpu).unwrap(),
            GgmlDType::Q5_0,
        )
        .unwrap();
        let q5_bytes = q5.data().unwrap().into_owned();
        let expected = dequantize(q5_bytes.clone(), GgmlDType::Q5_0, n);
        let actual = dequantize(q5_0_to_q8_0(&q5_bytes), GgmlDType::Q8_0, n);
        assert_eq!(expected, actual);
        assert!(expected.iter().any(|&v| v != 0.0));
    }
}
