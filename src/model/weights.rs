//! Reading weights from a GGUF file or a safetensors directory into candle tensors, with the
//! load-time conversions the CPU kernels want (Q5_0 to Q8_0, fused projections).

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::error::{ModelError, Result, one_line};
use super::quant::q5_0_to_q8_0;

/// A linear layer (`y = x W^T`) whose weight may be quantized.
pub struct Linear {
    inner: QMatMul,
}

impl Linear {
    /// Applies the layer to `[tokens, in]` activations.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.inner.forward(xs)
    }
}

/// Several linear layers over the same input (QKV, gate+up), stored as one matrix where
/// their types allow, so that the input is quantized once and the weights are streamed in
/// one pass; otherwise one matrix each.
pub struct FusedLinear {
    /// Each matrix with the output widths of the layers stacked in it.
    matrices: Vec<(Linear, Vec<usize>)>,
}

impl FusedLinear {
    /// Applies all layers, returning one output per layer.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for (matrix, out_dims) in &self.matrices {
            let ys = matrix.forward(xs)?;
            let mut start = 0;
            for &dim in out_dims {
                out.push(ys.narrow(candle_core::D::Minus1, start, dim)?);
                start += dim;
            }
        }
        Ok(out)
    }
}

/// The token embedding, also used (tied) as the output head.
pub enum Embedding {
    /// Rows kept quantized; a lookup dequantizes only the rows asked for.
    Quantized(Arc<QTensor>),
    /// A dense `[vocab, hidden]` matrix.
    Dense(Tensor),
}

impl Embedding {
    /// Looks up the rows of `ids` (a `u32` vector), giving `[ids, hidden]` in f32.
    pub fn lookup(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Quantized(q) => q.embedding(ids),
            Self::Dense(w) => w.index_select(ids, 0)?.to_dtype(DType::F32),
        }
    }

    /// The same matrix as an output projection to vocabulary logits.
    /// With `dense`, a quantized matrix is expanded to f32 for the projection.
    pub fn as_output_head(&self, dense: bool) -> candle_core::Result<Linear> {
        let inner = match self {
            Self::Quantized(q) => quantized_matmul(q.clone(), dense)?,
            Self::Dense(w) => QMatMul::Tensor(w.to_dtype(DType::F32)?),
        };
        Ok(Linear { inner })
    }
}

/// Where the weights come from.
pub enum WeightSource {
    /// A GGUF file (tensor names `blk.N.attn_q.weight`, ...).
    Gguf {
        /// The file, for messages.
        path: PathBuf,
        /// Parsed header.
        content: gguf_file::Content,
        /// Open handle to read tensor data from.
        file: File,
        /// Expand quantized matrices to f32 (exact, batch-invariant arithmetic; slower).
        dense: bool,
    },
    /// A Hugging Face safetensors checkpoint (tensor names `model.layers.N.self_attn.q_proj.weight`, ...).
    Safetensors {
        /// The directory, for messages.
        dir: PathBuf,
        /// Memory-mapped tensors.
        vb: VarBuilder<'static>,
        /// `model.` or, in multimodal checkpoints, `language_model.model.`.
        prefix: String,
    },
}

impl WeightSource {
    /// Opens a safetensors directory (all `*.safetensors` files in it).
    pub fn open_safetensors(dir: &Path, device: &Device) -> Result<Self> {
        let corrupt = |reason: String| ModelError::Corrupt {
            path: dir.display().to_string(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| corrupt(e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(corrupt("no *.safetensors files in the directory".into()));
        }
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        // SAFETY: the files are mapped read-only; gembatch never writes to its model files.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(|e| corrupt(one_line(&e)))?;
        let prefix = if vb.contains_tensor("language_model.model.embed_tokens.weight") {
            "language_model.model."
        } else {
            "model."
        };
        Ok(Self::Safetensors {
            dir: dir.to_path_buf(),
            vb,
            prefix: prefix.to_string(),
        })
    }

    /// Whether quantized matrices are expanded to f32.
    pub fn dense(&self) -> bool {
        matches!(self, Self::Gguf { dense: true, .. })
    }

    /// Loads a 1-D norm weight as the multiplier actually applied (GGUF already stores
    /// `1 + w`; Hugging Face checkpoints store `w`).
    pub fn norm(&mut self, gguf_name: &str, device: &Device) -> Result<Tensor> {
        match self {
            Self::Gguf { .. } => {
                let q = self.read_gguf(gguf_name, device)?;
                Ok(q.dequantize(device)?)
            }
            Self::Safetensors { dir, vb, prefix } => {
                let name = format!("{prefix}{}", hf_name(gguf_name));
                let w = vb
                    .get_unchecked_dtype(&name, DType::F32)
                    .map_err(|e| missing(dir, &name, e))?;
                Ok((w + 1.0)?)
            }
        }
    }

    /// Loads a linear layer's weight.
    pub fn linear(&mut self, gguf_name: &str, device: &Device) -> Result<Linear> {
        let fused = self.fused(&[gguf_name], device)?;
        Ok(fused.matrices.into_iter().next().expect("one matrix").0)
    }

    /// Loads several linear layers with the same input as one fused matrix.
    pub fn fused(&mut self, gguf_names: &[&str], device: &Device) -> Result<FusedLinear> {
        match self {
            Self::Gguf { dense, .. } => {
                let dense = *dense;
                let parts = gguf_names
                    .iter()
                    .map(|name| self.read_gguf(name, device))
                    .collect::<Result<Vec<_>>>()?;
                let matrices = join_rows(parts, device)?
                    .into_iter()
                    .map(|(q, dims)| {
                        Ok((
                            Linear {
                                inner: quantized_matmul(Arc::new(q), dense)?,
                            },
                            dims,
                        ))
                    })
                    .collect::<Result<_>>()?;
                Ok(FusedLinear { matrices })
            }
            Self::Safetensors { dir, vb, prefix } => {
                let mut parts = Vec::with_capacity(gguf_names.len());
                for gguf_name in gguf_names {
                    let name = format!("{prefix}{}", hf_name(gguf_name));
                    parts.push(
                        vb.get_unchecked(&name)
                            .map_err(|e| missing(dir, &name, e))?,
                    );
                }
                let out_dims = parts.iter().map(|t| t.dims()[0]).collect();
                let matrix = Linear {
                    inner: QMatMul::Tensor(Tensor::cat(&parts, 0)?),
                };
                Ok(FusedLinear {
                    matrices: vec![(matrix, out_dims)],
                })
            }
        }
    }

    /// Loads the token embedding.
    pub fn embedding(&mut self, device: &Device) -> Result<Embedding> {
        match self {
            Self::Gguf { .. } => Ok(Embedding::Quantized(Arc::new(
                self.read_gguf("token_embd.weight", device)?,
            ))),
            Self::Safetensors { dir, vb, prefix } => {
                let name = format!("{prefix}embed_tokens.weight");
                Ok(Embedding::Dense(
                    vb.get_unchecked(&name)
                        .map_err(|e| missing(dir, &name, e))?,
                ))
            }
        }
    }

    /// Reads one GGUF tensor, converting Q5_0 to the exactly equivalent Q8_0 (candle has
    /// SIMD kernels for Q8_0 only).
    fn read_gguf(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let Self::Gguf {
            path,
            content,
            file,
            ..
        } = self
        else {
            unreachable!("read_gguf is only called on GGUF sources")
        };
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let info = content
            .tensor_infos
            .get(name)
            .ok_or_else(|| corrupt(format!("tensor `{name}` is missing")))?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(corrupt(format!(
                "tensor `{name}` has {elems} elements, not whole {dtype:?} blocks"
            )));
        }
        let size = elems / dtype.block_size() * dtype.type_size();
        let start = content.tensor_data_offset + info.offset;
        let mut bytes = vec![0u8; size];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| {
                corrupt(format!(
                    "tensor `{name}` ({size} bytes at offset {start}): {e}"
                ))
            })?;
        let (dtype, bytes) = match dtype {
            GgmlDType::Q5_0 => (GgmlDType::Q8_0, q5_0_to_q8_0(&bytes)),
            other => (other, bytes),
        };
        let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
        Ok(QTensor::new(storage, info.shape.clone())?)
    }
}

/// A matmul over quantized weights: kept quantized (activations quantized to Q8 on the
/// fly, as llama.cpp does on CPU), or with `dense` expanded to f32.
fn quantized_matmul(q: Arc<QTensor>, dense: bool) -> candle_core::Result<QMatMul> {
    if dense {
        Ok(QMatMul::Tensor(q.dequantize(&q.device())?))
    } else {
        QMatMul::from_arc(q)
    }
}

/// Stacks quantized matrices with the same input width along their rows, returning each
/// resulting matrix with the row counts of its parts. Matrices of different types stay
/// apart (requantizing would change their values).
fn join_rows(parts: Vec<QTensor>, device: &Device) -> Result<Vec<(QTensor, Vec<usize>)>> {
    let dtype = parts[0].dtype();
    let cols = parts[0].shape().dims()[1];
    let rows: Vec<usize> = parts.iter().map(|q| q.shape().dims()[0]).collect();
    let joinable = parts
        .iter()
        .all(|q| q.dtype() == dtype && q.shape().dims()[1] == cols);
    if parts.len() == 1 || !joinable {
        return Ok(parts
            .into_iter()
            .zip(rows)
            .map(|(q, r)| (q, vec![r]))
            .collect());
    }
    let mut bytes = Vec::with_capacity(parts.iter().map(|q| q.storage_size_in_bytes()).sum());
    for q in &parts {
        bytes.extend_from_slice(&q.data()?);
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
    Ok(vec![(
        QTensor::new(storage, (rows.iter().sum::<usize>(), cols))?,
        rows,
    )])
}

fn missing(dir: &Path, name: &str, e: candle_core::Error) -> ModelError {
    ModelError::Corrupt {
        path: dir.display().to_string(),
        reason: format!("tensor `{name}`: {}", one_line(&e)),
    }
}

/// Maps a GGUF tensor name to its Hugging Face name (without the `model.` prefix).
fn hf_name(gguf_name: &str) -> String {
    let Some(rest) = gguf_name.strip_prefix("blk.") else {
        return match gguf_name {
            "output_norm.weight" => "norm.weight".into(),
            other => other.into(),
        };
    };
    let (layer, tensor) = rest.split_once('.').unwrap_or((rest, ""));
    let hf = match tensor {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        other => other,
    };
    format!("layers.{layer}.{hf}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_gguf_names_to_hugging_face_names() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight"),
            "layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.17.post_ffw_norm.weight"),
            "layers.17.post_feedforward_layernorm.weight"
        );
        assert_eq!(hf_name("output_norm.weight"), "norm.weight");
    }

    #[test]
    fn concatenates_quantized_rows_losslessly() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 64.0 * 2.0, &dev)
            .unwrap()
            .reshape((2, 64))
            .unwrap();
        let b = Tensor::arange(-64f32, 64.0, &dev)
            .unwrap()
            .reshape((2, 64))
            .unwrap();
        let qa = QTensor::quantize(&a, GgmlDType::Q8_0).unwrap();
        let qb = QTensor::quantize(&b, GgmlDType::Q8_0).unwrap();
        let expected = Tensor::cat(
            &[qa.dequantize(&dev).unwrap(), qb.dequantize(&dev).unwrap()],
            0,
        )
        .unwrap();
        let mut joined = join_rows(vec![qa, qb], &dev).unwrap();
        assert_eq!(joined.len(), 1);
        let (joined, rows) = joined.pop().unwrap();
        assert_eq!(rows, vec![2, 2]);
        let joined = joined.dequantize(&dev).unwrap();
        let diff = (joined - expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn matrices_of_different_types_stay_apart() {
        let dev = Device::Cpu;
        let a = Tensor::ones((2, 256), DType::F32, &dev).unwrap();
        let qa = QTensor::quantize(&a, GgmlDType::Q8_0).unwrap();
        let qb = QTensor::quantize(&a, GgmlDType::Q4K).unwrap();
        let parts = join_rows(vec![qa, qb], &dev).unwrap();
        let types: Vec<_> = parts
            .iter()
            .map(|(q, rows)| (q.dtype(), rows.clone()))
            .collect();
        assert_eq!(
            types,
            vec![(GgmlDType::Q8_0, vec![2]), (GgmlDType::Q4K, vec![2])]
        );
    }
}
