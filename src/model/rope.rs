//! Rotary position embeddings computed for exactly the positions in a batch: no tables
//! sized to the trained context, so start-up and memory do not grow with it.

use candle_core::{Device, Result, Tensor};

/// The frequencies of one RoPE variant (global or sliding-window layers).
pub struct Rope {
    /// `1 / base^(2i/d) / scale` for `i in 0..d/2`, in f64 for accuracy at long positions.
    inv_freq: Vec<f64>,
}

impl Rope {
    /// RoPE over `head_dim` dimensions with the given base and linear position scale.
    pub fn new(head_dim: usize, base: f64, scale: f64) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| base.powf(-((2 * i) as f64) / head_dim as f64) / scale)
            .collect();
        Self { inv_freq }
    }

    /// `(cos, sin)`, each `[positions, head_dim / 2]` f32, one row per token.
    pub fn cos_sin(&self, positions: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &pos in positions {
            for &f in &self.inv_freq {
                let (s, c) = (pos as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (positions.len(), half), device)?,
            Tensor::from_vec(sin, (positions.len(), half), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_scale_slows_rotation() {
        let rope = Rope::new(8, 10_000.0, 1.0);
        let (cos, sin) = rope.cos_sin(&[0, 2], &Device::Cpu).unwrap();
        let cos: Vec<Vec<f32>> = cos.to_vec2().unwrap();
        let sin: Vec<Vec<f32>> = sin.to_vec2().unwrap();
        assert_eq!(cos[0], vec![1.0; 4]);
        assert_eq!(sin[0], vec![0.0; 4]);
        assert!((sin[1][0] - 2f32.sin()).abs() < 1e-6);
        let scaled = Rope::new(8, 10_000.0, 2.0);
        let (_, sin_scaled) = scaled.cos_sin(&[2], &Device::Cpu).unwrap();
        assert!((sin_scaled.to_vec2::<f32>().unwrap()[0][0] - 1f32.sin()).abs() < 1e-6);
    }
}
