//! Gemma 3 hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use candle_core::quantized::gguf_file;

use super::error::ModelError;

/// Layer pattern of Gemma 3: five sliding-window layers, then one global layer.
pub(super) const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;
/// RoPE base of the sliding-window layers; GGUF files carry only the global one.
pub(super) const DEFAULT_LOCAL_ROPE_BASE: f64 = 10_000.0;

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
}
