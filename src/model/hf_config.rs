//! Reading a Hugging Face `config.json` of a Gemma 3 checkpoint, text-only
//! (`Gemma3ForCausalLM`) or multimodal (`Gemma3ForConditionalGeneration`, the language
//! model's settings under `text_config`), as transformers writes it before and since 5.0:
//! - before: `rope_theta`, `rope_local_base_freq`, `rope_scaling: {rope_type, factor}`,
//!   `sliding_window_pattern`;
//! - since: `rope_parameters: {full_attention: {rope_type, rope_theta, factor},
//!   sliding_attention: {...}}` and `layer_types` (one entry per layer).
//!
//! What gembatch cannot run (another RoPE type, a layer order that is not "every N-th layer
//! global") is refused with the file's name, never approximated.

use serde::Deserialize;

use super::config::{DEFAULT_LOCAL_ROPE_BASE, DEFAULT_SLIDING_WINDOW_PATTERN, Gemma3Config};
use super::error::ModelError;

const DEFAULT_GLOBAL_ROPE_BASE: f64 = 1_000_000.0;

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
    rope_theta: Option<f64>,
    rope_local_base_freq: Option<f64>,
    rope_scaling: Option<RopeParameters>,
    rope_parameters: Option<RopeByLayerType>,
    sliding_window: usize,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    max_position_embeddings: usize,
    query_pre_attn_scalar: f64,
}

/// transformers 5's RoPE settings, one set per kind of layer.
#[derive(Deserialize)]
struct RopeByLayerType {
    full_attention: Option<RopeParameters>,
    sliding_attention: Option<RopeParameters>,
}

#[derive(Deserialize)]
struct RopeParameters {
    #[serde(default = "default_rope_type")]
    rope_type: String,
    rope_theta: Option<f64>,
    factor: Option<f64>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_rope_type() -> String {
    "default".into()
}

impl Gemma3Config {
    /// Reads the configuration from a Hugging Face `config.json` (text-only or multimodal).
    pub fn from_hf_json(text: &str, path: &str) -> Result<Self, ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt {
            path: path.to_string(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        let text_config = value.get("text_config").cloned().unwrap_or(value);
        let hf: HfConfig = serde_json::from_value(text_config)
            .map_err(|e| corrupt(format!("not a Gemma 3 config: {e}")))?;
        let by_type = hf.rope_parameters.as_ref();
        let global = by_type
            .and_then(|p| p.full_attention.as_ref())
            .or(hf.rope_scaling.as_ref());
        let local = by_type.and_then(|p| p.sliding_attention.as_ref());
        let rope_scale_global = linear_factor(global, "full_attention").map_err(corrupt)?;
        if linear_factor(local, "sliding_attention").map_err(corrupt)? != 1.0 {
            return Err(corrupt(
                "RoPE scaling on the sliding-window layers is not supported".into(),
            ));
        }
        let sliding_window_pattern = match &hf.layer_types {
            Some(types) => pattern_of(types).map_err(corrupt)?,
            None => hf
                .sliding_window_pattern
                .unwrap_or(DEFAULT_SLIDING_WINDOW_PATTERN),
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
            rope_base_global: global
                .and_then(|p| p.rope_theta)
                .or(hf.rope_theta)
                .unwrap_or(DEFAULT_GLOBAL_ROPE_BASE),
            rope_base_local: local
                .and_then(|p| p.rope_theta)
                .or(hf.rope_local_base_freq)
                .unwrap_or(DEFAULT_LOCAL_ROPE_BASE),
            rope_scale_global,
            sliding_window: hf.sliding_window,
            sliding_window_pattern,
            context_length: hf.max_position_embeddings,
            query_pre_attn_scalar: hf.query_pre_attn_scalar,
        })
    }
}

/// The position scale of a RoPE setting: 1 for `default`, the factor for `linear`.
fn linear_factor(parameters: Option<&RopeParameters>, layers: &str) -> Result<f64, String> {
    match parameters {
        None => Ok(1.0),
        Some(p) if p.rope_type == "default" => Ok(1.0),
        Some(p) if p.rope_type == "linear" => p
            .factor
            .filter(|f| f.is_finite() && *f > 0.0)
            .ok_or_else(|| format!("{layers}: linear RoPE scaling needs a positive `factor`")),
        Some(p) => Err(format!(
            "{layers}: RoPE type `{}` is not supported (gembatch runs `default` and `linear`)",
            p.rope_type
        )),
    }
}

/// The N of "every N-th layer is global", from one type per layer.
fn pattern_of(types: &[String]) -> Result<usize, String> {
    let global = |t: &String| t == "full_attention";
    if let Some(unknown) = types
        .iter()
        .find(|t| !global(t) && *t != "sliding_attention")
    {
        return Err(format!("layer_types: unknown layer type `{unknown}`"));
    }
    let pattern = types
        .iter()
        .position(global)
        .map_or(types.len() + 1, |i| i + 1);
    match types
        .iter()
        .enumerate()
        .find(|(i, t)| global(t) != (i + 1).is_multiple_of(pattern))
    {
        None => Ok(pattern),
        Some((i, _)) => Err(format!(
            "layer_types: only orders with every N-th layer global are supported; \
             layer {i} breaks every {pattern}-th"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// google/gemma-3-4b-it's `config.json`, language model part (transformers 4.5x).
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

    /// The same model as transformers 5.25 writes it (`Gemma3TextConfig(...).to_dict()`).
    fn transformers_5_config(layer_types: &[&str], sliding_rope: &str) -> String {
        format!(
            r#"{{"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": {},
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
            "rms_norm_eps": 1e-6, "layer_types": {:?}, "sliding_window": 1024,
            "max_position_embeddings": 131072, "query_pre_attn_scalar": 256, "vocab_size": 262208,
            "rope_parameters": {{
                "full_attention": {{"rope_theta": 1000000.0, "rope_type": "linear", "factor": 8.0}},
                "sliding_attention": {sliding_rope}
            }}}}"#,
            layer_types.len(),
            layer_types
        )
    }

    const SIX: [&str; 6] = [
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ];

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
    fn transformers_5_rope_parameters_and_layer_types_read_as_the_same_model() {
        let old = Gemma3Config::from_hf_json(GEMMA3_4B_CONFIG, "config.json").unwrap();
        let layer_types: Vec<&str> = SIX.iter().cycle().take(34).copied().collect();
        let text = transformers_5_config(
            &layer_types,
            r#"{"rope_theta": 10000.0, "rope_type": "default"}"#,
        );
        assert_eq!(
            Gemma3Config::from_hf_json(&text, "config.json").unwrap(),
            old
        );
    }

    #[test]
    fn what_gembatch_cannot_run_is_refused_with_the_file_and_the_field() {
        let default_local = r#"{"rope_theta": 10000.0, "rope_type": "default"}"#;
        let cases = [
            (
                transformers_5_config(&SIX, r#"{"rope_theta": 10000.0, "rope_type": "yarn"}"#),
                "RoPE type `yarn`",
            ),
            (
                transformers_5_config(
                    &SIX,
                    r#"{"rope_theta": 10000.0, "rope_type": "linear", "factor": 2.0}"#,
                ),
                "sliding-window layers",
            ),
            (
                transformers_5_config(
                    &["full_attention", "sliding_attention", "full_attention"],
                    default_local,
                ),
                "layer 1 breaks every 1-th",
            ),
            (
                transformers_5_config(&["sliding_attention", "chunked"], default_local),
                "unknown layer type `chunked`",
            ),
            (
                GEMMA3_4B_CONFIG.replace(r#""factor": 8.0"#, r#""factor": 0.0"#),
                "positive `factor`",
            ),
        ];
        for (text, needle) in cases {
            let err = Gemma3Config::from_hf_json(&text, "/m/config.json").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("/m/config.json") && msg.contains(needle),
                "{msg}"
            );
        }
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
