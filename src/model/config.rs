//! Gemma 3 hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use candle_core::quantized::gguf_file;
use serde::Deserialize;

use super::error::ModelError;

/// Layer pattern of Gemma 3: five sliding-window layers, then one global layer.
const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;
/// RoPE base of the sliding-window layers; GGUF files carry only the global one.
const DEFAULT_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// The shape of one Gemma 3 text model.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemma3Config {
    /// Rows of the token embedding (and of the tied output head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the GELU MLP.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads per layer.
    pub num_heads: usize,
    /// Key/value heads per layer (grouped-query attention).
    pub num_kv_heads: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// RoPE base frequency of the global layers.
    pub rope_base_global: f64,
    /// RoPE base frequency of the sliding-window layers.
    pub rope_base_local: f64,
    /// Linear RoPE scaling factor of the global layers (8 for Gemma 3 4B+, 1 otherwise).
    pub rope_scale_global: f64,
    /// Keys a sliding-window layer attends to, the query's own included.
    pub sliding_window: usize,
    /// Every `sliding_window_pattern`-th layer is global.
    pub sliding_window_pattern: usize,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Queries are scaled by `1 / sqrt(query_pre_attn_scalar)`.
    pub query_pre_attn_scalar: f64,
}

impl Gemma3Config {
    /// Whether `layer` uses sliding-window attention (otherwise it attends globally).
    pub fn is_sliding(&self, layer: usize) -> bool {
        !(layer + 1).is_multiple_of(self.sliding_window_pattern)
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Reads the configuration from GGUF metadata (`gemma3.*` keys).
    pub fn from_gguf(content: &gguf_file::Content, path: &str) -> Result<Self, ModelError> {
        let md = &content.metadata;
        let missing = |key: &str| ModelError::Corrupt {
            path: path.to_string(),
            reason: format!("metadata key `{key}` is missing or has the wrong type"),
        };
        let get_u = |key: &str| -> Result<usize, ModelError> {
            md.get(key)
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .map(|x| x as usize)
                        .or(v.to_u64().ok().map(|x| x as usize))
                })
                .ok_or_else(|| missing(key))
        };
        let get_f =
            |key: &str| -> Option<f64> { md.get(key).and_then(|v| v.to_f32().ok()).map(f64::from) };

        let hidden_size = get_u("gemma3.embedding_length")?;
        let num_heads = get_u("gemma3.attention.head_count")?;
        let head_dim = get_u("gemma3.attention.key_length").unwrap_or(hidden_size / num_heads);
        let vocab_size = match md
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
        {
            Some(tokens) => tokens.len(),
            None => get_u("gemma3.vocab_size")?,
        };
        let rope_scale_global = match md
            .get("gemma3.rope.scaling.type")
            .and_then(|v| v.to_string().ok())
        {
            Some(kind) if kind == "linear" => get_f("gemma3.rope.scaling.factor").unwrap_or(1.0),
            _ => 1.0,
        };
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: get_u("gemma3.feed_forward_length")?,
            num_layers: get_u("gemma3.block_count")?,
            num_heads,
            num_kv_heads: get_u("gemma3.attention.head_count_kv")?,
            head_dim,
            rms_norm_eps: get_f("gemma3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_base_global: get_f("gemma3.rope.freq_base").unwrap_or(1_000_000.0),
            rope_base_local: DEFAULT_LOCAL_ROPE_BASE,
            rope_scale_global,
            sliding_window: get_u("gemma3.attention.sliding_window")?,
            sliding_window_pattern: DEFAULT_SLIDING_WINDOW_PATTERN,
            context_length: get_u("gemma3.context_length")?,
            query_pre_attn_scalar: head_dim as f64,
        })
    }

    /// Reads the configuration from a Hugging Face `config.json` (text-only or multimodal).
    pub fn from_hf_json(text: &str, path: &str) -> Result<Self, ModelError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ModelError::Corrupt {
                path: path.to_string(),
                reason: format!("not valid JSON: {e}"),
            })?;
        // Multimodal checkpoints nest the language model's settings under `text_config`.
        let text_config = value.get("text_config").cloned().unwrap_or(value);
        let hf: HfConfig =
            serde_json::from_value(text_config).map_err(|e| ModelError::Corrupt {
                path: path.to_string(),
                reason: format!("not a Gemma 3 config: {e}"),
            })?;
        let rope_scale_global = match hf.rope_scaling {
            Some(HfRopeScaling { rope_type, factor }) if rope_type == "linear" => factor,
            _ => 1.0,
        };
        Ok(Self {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads,
            head_dim: hf.head_dim,
            rms_norm_eps: hf.rms_norm_eps,
            rope_base_global: hf.rope_theta,
            rope_base_local: hf.rope_local_base_freq,
            rope_scale_global,
            sliding_window: hf.sliding_window,
            sliding_window_pattern: hf.sliding_window_pattern,
            context_length: hf.max_position_embeddings,
            query_pre_attn_scalar: hf.query_pre_attn_scalar,
        })
    }
}

#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: String,
    factor: f64,
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default = "default_local_rope")]
    rope_local_base_freq: f64,
    rope_scaling: Option<HfRopeScaling>,
    sliding_window: usize,
    #[serde(default = "default_pattern")]
    sliding_window_pattern: usize,
    max_position_embeddings: usize,
    query_pre_attn_scalar: f64,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    1_000_000.0
}
fn default_local_rope() -> f64 {
    DEFAULT_LOCAL_ROPE_BASE
}
fn default_pattern() -> usize {
    DEFAULT_SLIDING_WINDOW_PATTERN
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMMA3_4B_CONFIG: &str = r#"{
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {
            "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
            "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            "sliding_window": 1024, "sliding_window_pattern": 6, "max_position_embeddings": 131072,
            "query_pre_attn_scalar": 256, "vocab_size": 262208
        }
    }"#;

    #[test]
    fn reads_nested_text_config_of_multimodal_checkpoint() {
        let cfg = Gemma3Config::from_hf_json(GEMMA3_4B_CONFIG, "config.json").unwrap();
        assert_eq!(cfg.num_layers, 34);
        assert_eq!(cfg.num_kv_heads, 4);
        assert_eq!(cfg.rope_scale_global, 8.0);
        assert_eq!(cfg.sliding_window, 1024);
        assert!(cfg.is_sliding(0) && cfg.is_sliding(4) && !cfg.is_sliding(5) && cfg.is_sliding(6));
    }

    #[test]
    fn rejects_config_of_another_model_with_the_file_name() {
        let err =
            Gemma3Config::from_hf_json(r#"{"hidden_size": 10}"#, "/m/config.json").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/m/config.json") && msg.contains("missing field"),
            "{msg}"
        );
    }
}
