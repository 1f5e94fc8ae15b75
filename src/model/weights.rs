//! Reading weights from a GGUF file or a safetensors directory: 8-bit blocks and Q4_K/Q6_K
//! super-blocks are streamed into gembatch's packed CPU formats, other types become candle
//! tensors; projections that share an input are stacked into one matrix.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::error::{ModelError, Result, one_line};
use super::kernels::{GROUP, K_SUPER, KSource, PackedK, PackedQ8, SourceType};
use super::linear::{Embedding, FusedLinear, Linear};

/// Rows read from the file at once while packing (bounds the transient memory).
const PACK_CHUNK_ROWS: usize = 256 * GROUP;

/// gembatch's packed CPU weight formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// Q8_0 and Q5_0 blocks: [`PackedQ8`].
    Q8,
    /// Q4_K and Q6_K super-blocks: [`PackedK`].
    K,
}

/// Where a safetensors checkpoint keeps the language model's tensors: a text-only one
/// (`Gemma3ForCausalLM`), a multimodal one as Google ships Gemma 3 4B
/// (`Gemma3ForConditionalGeneration`), and the multimodal layout transformers 5 keeps in
/// memory, which it writes when saving with `save_original_format=False`.
const LANGUAGE_MODEL_PREFIXES: [&str; 3] =
    ["model.", "language_model.model.", "model.language_model."];

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
        /// One of [`LANGUAGE_MODEL_PREFIXES`]; `model.` when none holds the embeddings.
        prefix: String,
    },
}

impl WeightSource {
    /// Opens a safetensors directory (all `*.safetensors` files in it), its matrices to be
    /// read as `dtype`.
    pub fn open_safetensors(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
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
        // SAFETY: the files are mapped read-only; gembatch never writes to its model files.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(|e| corrupt(one_line(&e)))?;
        let prefix = LANGUAGE_MODEL_PREFIXES
            .into_iter()
            .find(|prefix| vb.contains_tensor(&format!("{prefix}embed_tokens.weight")))
            .unwrap_or("model.");
        Ok(Self::Safetensors {
            dir: dir.to_path_buf(),
            vb,
            prefix: prefix.to_string(),
        })
    }

    /// What the matrices are stored as, for the start-up log: `bf16`, `f32`, `gguf` (its own
    /// block types) or `gguf expanded to f32`.
    pub fn describe(&self) -> String {
        match self {
            Self::Gguf { dense: false, .. } => "gguf".into(),
            Self::Gguf { dense: true, .. } => "gguf expanded to f32".into(),
            Self::Safetensors { vb, .. } => format!("{:?}", vb.dtype()).to_lowercase(),
        }
    }

    /// Whether quantized matrices are expanded to f32.
    pub fn dense(&self) -> bool {
        matches!(self, Self::Gguf { dense: true, .. })
    }

    /// Loads a 1-D norm weight as the multiplier actually applied (GGUF already stores
    /// `1 + w`; Hugging Face checkpoints store `w`).
    pub fn norm(&mut self, gguf_name: &str, device: &Device) -> Result<Tensor> {
        match self {
            Self::Gguf { .. } => Ok(self.read_qtensor(gguf_name, device)?.dequantize(device)?),
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
        Ok(self.fused(&[gguf_name], device)?.into_single())
    }

    /// Loads several linear layers with the same input, stacked where their formats allow.
    pub fn fused(&mut self, gguf_names: &[&str], device: &Device) -> Result<FusedLinear> {
        match self {
            Self::Gguf { dense, .. } => {
                let dense = *dense;
                match self.packing(gguf_names, device) {
                    Some(Packing::Q8) => {
                        let parts = gguf_names
                            .iter()
                            .map(|name| self.read_packed(name))
                            .collect::<Result<Vec<_>>>()?;
                        let out_dims = parts.iter().map(PackedQ8::rows).collect();
                        let matrix = Linear::Packed(Arc::new(PackedQ8::concat(parts)));
                        return Ok(FusedLinear::stacked(matrix, out_dims));
                    }
                    Some(Packing::K) => {
                        let parts = gguf_names
                            .iter()
                            .map(|name| self.read_packed_k(name))
                            .collect::<Result<Vec<_>>>()?;
                        let out_dims = parts.iter().map(PackedK::rows).collect();
                        let matrix = Linear::PackedK(Arc::new(PackedK::concat(parts)));
                        return Ok(FusedLinear::stacked(matrix, out_dims));
                    }
                    None => {}
                }
                let parts = gguf_names
                    .iter()
                    .map(|name| self.read_qtensor(name, device))
                    .collect::<Result<Vec<_>>>()?;
                stack_qtensors(parts, device, dense)
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
                let matrix = Linear::Candle(QMatMul::Tensor(Tensor::cat(&parts, 0)?));
                Ok(FusedLinear::stacked(matrix, out_dims))
            }
        }
    }

    /// Loads the token embedding.
    pub fn embedding(&mut self, device: &Device) -> Result<Embedding> {
        match self {
            Self::Gguf { .. }
                if self.packing(&["token_embd.weight"], device) == Some(Packing::Q8) =>
            {
                Ok(Embedding::Packed(Arc::new(
                    self.read_packed("token_embd.weight")?,
                )))
            }
            Self::Gguf { .. } => {
                let q = self.read_qtensor("token_embd.weight", device)?;
                Ok(Embedding::Quantized(Arc::new(q)))
            }
            Self::Safetensors { dir, vb, prefix } => {
                let name = format!("{prefix}embed_tokens.weight");
                Ok(Embedding::Dense(
                    vb.get_unchecked(&name)
                        .map_err(|e| missing(dir, &name, e))?,
                ))
            }
        }
    }

    /// Which of gembatch's packed CPU formats the named GGUF matrices go to, if any: on the
    /// CPU, not dense, whole groups of rows, and all of them 8-bit block types, or all
    /// Q4_K/Q6_K of whole super-blocks.
    fn packing(&self, names: &[&str], device: &Device) -> Option<Packing> {
        let Self::Gguf {
            content,
            dense: false,
            ..
        } = self
        else {
            return None;
        };
        let kinds: Option<Vec<Packing>> = names
            .iter()
            .map(|name| {
                let info = content.tensor_infos.get(*name)?;
                let [rows, cols] = info.shape.dims() else {
                    return None;
                };
                if !rows.is_multiple_of(GROUP) {
                    return None;
                }
                match info.ggml_dtype {
                    GgmlDType::Q8_0 | GgmlDType::Q5_0 => Some(Packing::Q8),
                    GgmlDType::Q4K | GgmlDType::Q6K if cols.is_multiple_of(K_SUPER) => {
                        Some(Packing::K)
                    }
                    _ => None,
                }
            })
            .collect();
        let kinds = kinds?;
        let first = *kinds.first()?;
        (device.is_cpu() && kinds.iter().all(|&kind| kind == first)).then_some(first)
    }

    /// Where tensor `name` lies in the file: its info, first byte and size in bytes.
    fn locate(&self, name: &str) -> Result<(GgmlDType, candle_core::Shape, u64, usize)> {
        let Self::Gguf { path, content, .. } = self else {
            unreachable!("only GGUF sources are read by name")
        };
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let info = content
            .tensor_infos
            .get(name)
            .ok_or_else(|| corrupt(format!("tensor `{name}` is missing")))?;
        let (dtype, elems) = (info.ggml_dtype, info.shape.elem_count());
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(corrupt(format!(
                "tensor `{name}` has {elems} elements, not whole {dtype:?} blocks"
            )));
        }
        let size = elems / dtype.block_size() * dtype.type_size();
        Ok((
            dtype,
            info.shape.clone(),
            content.tensor_data_offset + info.offset,
            size,
        ))
    }

    /// Reads `buffer.len()` bytes of tensor `name` starting `offset` bytes into it.
    fn read_bytes(
        &mut self,
        name: &str,
        start: u64,
        offset: usize,
        buffer: &mut [u8],
    ) -> Result<()> {
        let Self::Gguf { path, file, .. } = self else {
            unreachable!("only GGUF sources are read by name")
        };
        file.seek(SeekFrom::Start(start + offset as u64))
            .and_then(|_| file.read_exact(buffer))
            .map_err(|e| ModelError::Corrupt {
                path: path.display().to_string(),
                reason: format!(
                    "tensor `{name}` ({} bytes at offset {}): {e}",
                    buffer.len(),
                    start + offset as u64
                ),
            })
    }

    /// Streams an 8-bit block matrix into the packed format.
    fn read_packed(&mut self, name: &str) -> Result<PackedQ8> {
        let (dtype, shape, ..) = self.locate(name)?;
        let source = if dtype == GgmlDType::Q5_0 {
            SourceType::Q5_0
        } else {
            SourceType::Q8_0
        };
        let (rows, cols) = shape.dims2()?;
        let mut packed = PackedQ8::with_capacity(rows, cols);
        self.stream_rows(name, |chunk| packed.push_rows(source, chunk))?;
        Ok(packed)
    }

    /// Streams a Q4_K or Q6_K matrix into the packed format.
    fn read_packed_k(&mut self, name: &str) -> Result<PackedK> {
        let (dtype, shape, ..) = self.locate(name)?;
        let source = if dtype == GgmlDType::Q4K {
            KSource::Q4K
        } else {
            KSource::Q6K
        };
        let (rows, cols) = shape.dims2()?;
        let mut packed = PackedK::with_capacity(rows, cols);
        self.stream_rows(name, |chunk| packed.push_rows(source, chunk))?;
        Ok(packed)
    }

    /// Hands matrix `name`'s raw rows to `sink` in order, [`PACK_CHUNK_ROWS`] at a time
    /// (bounding the transient memory).
    fn stream_rows(&mut self, name: &str, mut sink: impl FnMut(&[u8])) -> Result<()> {
        let (_, shape, start, size) = self.locate(name)?;
        let rows = shape.dims2()?.0;
        let row_bytes = size / rows;
        let mut buffer = vec![0u8; PACK_CHUNK_ROWS.min(rows) * row_bytes];
        for first in (0..rows).step_by(PACK_CHUNK_ROWS) {
            let chunk = &mut buffer[..(rows - first).min(PACK_CHUNK_ROWS) * row_bytes];
            self.read_bytes(name, start, first * row_bytes, chunk)?;
            sink(chunk);
        }
        Ok(())
    }

    /// Reads a tensor as a candle `QTensor` on `device`.
    fn read_qtensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        let (dtype, shape, start, size) = self.locate(name)?;
        let mut bytes = vec![0u8; size];
        self.read_bytes(name, start, 0, &mut bytes)?;
        let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
        Ok(QTensor::new(storage, shape)?)
    }
}

/// Stacks candle matrices of one type along their rows into one layer group; matrices of
/// different types stay apart (converting would change their values).
fn stack_qtensors(parts: Vec<QTensor>, device: &Device, dense: bool) -> Result<FusedLinear> {
    let first = &parts[0];
    let (dtype, cols) = (first.dtype(), first.shape().dims()[1]);
    let same_type = parts
        .iter()
        .all(|q| q.dtype() == dtype && q.shape().dims()[1] == cols);
    if parts.len() == 1 || !same_type {
        let layers = parts
            .into_iter()
            .map(|q| Linear::from_qtensor(Arc::new(q), dense))
            .collect::<candle_core::Result<_>>()?;
        return Ok(FusedLinear::separate(layers)?);
    }
    let out_dims: Vec<usize> = parts.iter().map(|q| q.shape().dims()[0]).collect();
    let mut bytes = Vec::with_capacity(parts.iter().map(|q| q.storage_size_in_bytes()).sum());
    for q in &parts {
        bytes.extend_from_slice(&q.data()?);
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), device, dtype)?;
    let joined = QTensor::new(storage, (out_dims.iter().sum::<usize>(), cols))?;
    Ok(FusedLinear::stacked(
        Linear::from_qtensor(Arc::new(joined), dense)?,
        out_dims,
    ))
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
    fn candle_matrices_of_one_type_are_stacked_and_of_different_types_kept_apart() {
        let dev = Device::Cpu;
        let x = Tensor::ones((3, 256), DType::F32, &dev).unwrap();
        let values: Vec<f32> = (0..512)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let w = Tensor::from_vec(values, (2, 256), &dev).unwrap();
        let quantize = |dtype| QTensor::quantize(&w, dtype).unwrap();
        // With all-ones input each output is the row sum of the dequantized weights.
        let row_sums = |q: &QTensor| -> Vec<f32> {
            q.dequantize(&dev)
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (a, b) in [
            (GgmlDType::Q4K, GgmlDType::Q4K),
            (GgmlDType::Q4K, GgmlDType::Q6K),
        ] {
            let (qa, qb) = (quantize(a), quantize(b));
            let expected = [row_sums(&qa), row_sums(&qb)];
            let fused = stack_qtensors(vec![qa, qb], &dev, false).unwrap();
            let outputs = fused.forward(&x).unwrap();
            assert_eq!(outputs.len(), 2);
            for (y, want) in outputs.iter().zip(&expected) {
                assert_eq!(y.dims(), &[3, 2]);
                for row in y.to_vec2::<f32>().unwrap() {
                    for (got, want) in row.iter().zip(want) {
                        assert!(
                            (got - want).abs() < 0.05 * want.abs().max(1.0),
                            "{a:?}/{b:?}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn finds_the_language_model_in_each_checkpoint_layout() {
        let dev = Device::Cpu;
        for prefix in LANGUAGE_MODEL_PREFIXES {
            let dir = tempfile::tempdir().unwrap();
            let embeddings = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
            let tensors = std::collections::HashMap::from([(
                format!("{prefix}embed_tokens.weight"),
                embeddings,
            )]);
            candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
            let source = WeightSource::open_safetensors(dir.path(), &dev, DType::F32).unwrap();
            let WeightSource::Safetensors { prefix: found, .. } = source else {
                panic!("a safetensors directory opened as GGUF");
            };
            assert_eq!(found, prefix);
        }
    }
}
