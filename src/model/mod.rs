//! The Gemma 3 model: loading (GGUF or safetensors), CPU kernels, tokenizer, batched forward pass,
//! sampling and single-sequence generation.

pub mod activation;
pub mod argmax;
pub mod attention;
pub mod choice;
pub mod config;
pub mod control_tokens;
pub mod device;
pub mod draw;
pub mod error;
pub mod fetch;
pub mod gemma3;
pub mod generate;
pub mod hf_config;
pub mod host_rows;
pub mod kernels;
pub mod kv_cache;
pub mod linear;
pub mod logprobs;
pub mod norm;
pub mod rope;
pub mod sampling;
pub mod simd;
pub mod tanh;
pub mod text_stream;
pub mod threads;
pub mod token_reach;
pub mod tokenizer;
pub mod weights;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};

pub use config::Gemma3Config;
pub use error::ModelError;
pub use gemma3::{BatchEntry, Gemma3};
pub use tokenizer::GemmaTokenizer;
use tokenizer::GgufVocab;
use weights::WeightSource;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to run it.
    pub device: Device,
    /// The dtype of a safetensors checkpoint's matrices; `None`: f32 on the CPU, bf16 on a
    /// GPU ([`device::safetensors_dtype`]). GGUF weights keep their own block types.
    pub dtype: Option<DType>,
    /// Cap on positions per sequence; `None` means the model's trained context.
    pub context: Option<usize>,
    /// Expand quantized weights to f32: exact arithmetic, identical results whatever the
    /// batch, at several times the memory and time. For checks, not for serving.
    pub dense: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            context: None,
            dense: false,
        }
    }
}

/// A model with its tokenizer, ready to run.
pub struct LoadedModel {
    /// The transformer.
    pub model: Gemma3,
    /// Its tokenizer.
    pub tokenizer: GemmaTokenizer,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Wall-clock seconds the load took.
    pub load_seconds: f64,
    /// What the matrices are stored as (`bf16`, `f32`, `gguf`, ...), for the start-up log.
    pub weights: String,
}

/// Loads a Gemma 3 GGUF file, or a directory with `config.json`, `tokenizer.json` and
/// `*.safetensors`.
pub fn load(path: &Path, options: &LoadOptions) -> error::Result<LoadedModel> {
    let started = Instant::now();
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(ModelError::NotFound { path: shown });
    }
    let (cfg, tokenizer, mut weights) = if path.is_dir() {
        let dtype = options
            .dtype
            .unwrap_or_else(|| device::safetensors_dtype(&options.device));
        open_safetensors_dir(path, &options.device, dtype)?
    } else {
        open_gguf(path, options.dense)?
    };
    let weights_description = weights.describe();
    let context = options.context.unwrap_or(cfg.context_length);
    if context == 0 {
        return Err(ModelError::InvalidParameter {
            name: "--context",
            reason: "must be at least 1".into(),
        });
    }
    // The tokenizer (a BPE over 262k tokens) builds on another thread while the weights load.
    let (model, tokenizer) = std::thread::scope(|scope| {
        let tokenizer = scope.spawn(move || tokenizer.build());
        let model = Gemma3::load(cfg, &mut weights, &options.device, context);
        (
            model,
            tokenizer
                .join()
                .expect("the tokenizer thread does not panic"),
        )
    });
    let (model, tokenizer) = (model?, tokenizer?);
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
        load_seconds: started.elapsed().as_secs_f64(),
        weights: weights_description,
    })
}

/// A model's tokenizer and context length, read without its weights: what checking a
/// dataset's prompt lengths needs.
pub fn load_tokenizer(path: &Path) -> error::Result<(GemmaTokenizer, usize)> {
    if !path.exists() {
        return Err(ModelError::NotFound {
            path: path.display().to_string(),
        });
    }
    let (cfg, tokenizer, _weights) = if path.is_dir() {
        open_safetensors_dir(path, &Device::Cpu, DType::F32)?
    } else {
        open_gguf(path, false)?
    };
    Ok((tokenizer.build()?, cfg.context_length))
}

/// Where the tokenizer comes from, read but not yet built.
enum TokenizerSource {
    /// Vocabulary and scores from GGUF metadata.
    Gguf(GgufVocab),
    /// A `tokenizer.json` file.
    File(PathBuf),
}

impl TokenizerSource {
    fn build(self) -> error::Result<GemmaTokenizer> {
        match self {
            Self::Gguf(vocab) => GemmaTokenizer::from_vocab(vocab),
            Self::File(path) => GemmaTokenizer::from_file(&path),
        }
    }
}

fn open_gguf(
    path: &Path,
    dense: bool,
) -> error::Result<(Gemma3Config, TokenizerSource, WeightSource)> {
    let shown = path.display().to_string();
    let corrupt = |reason: String| ModelError::Corrupt {
        path: shown.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| corrupt(e.to_string()))?;
    // Buffered: the header holds ~800k small fields (the vocabulary), one read call each.
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| corrupt(format!("not a GGUF file ({})", error::one_line(&e))))?;
    let file = reader.into_inner();
    let architecture = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| corrupt("metadata key `general.architecture` is missing".into()))?;
    if architecture != "gemma3" {
        return Err(ModelError::UnsupportedArchitecture {
            path: shown,
            architecture,
        });
    }
    let cfg = Gemma3Config::from_gguf(&content, &shown)?;
    let tokenizer = TokenizerSource::Gguf(GgufVocab::read(&content, &shown)?);
    Ok((
        cfg,
        tokenizer,
        WeightSource::Gguf {
            path: path.to_path_buf(),
            content,
            file,
            dense,
        },
    ))
}

fn open_safetensors_dir(
    dir: &Path,
    device: &Device,
    dtype: DType,
) -> error::Result<(Gemma3Config, TokenizerSource, WeightSource)> {
    let config_path = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path).map_err(|e| ModelError::Corrupt {
        path: config_path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    let cfg = Gemma3Config::from_hf_json(&config_text, &config_path.display().to_string())?;
    let tokenizer = TokenizerSource::File(dir.join("tokenizer.json"));
    Ok((
        cfg,
        tokenizer,
        WeightSource::open_safetensors(dir, device, dtype)?,
    ))
}
