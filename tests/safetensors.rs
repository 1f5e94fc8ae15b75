//! `--model DIR` with a Hugging Face safetensors checkpoint: the default GGUF is written out
//! in Hugging Face layout (names, `1 + w` norms undone, config.json, tokenizer.json) and the
//! directory must generate exactly what the GGUF generates with the same f32 weights.

mod common;

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use common::default_model_path;
use gembatch::model::generate::generate;
use gembatch::model::sampling::SamplingParams;
use gembatch::model::{self, LoadOptions};

/// Hugging Face name of a GGUF tensor, written independently of the loader's own mapping.
fn hugging_face_name(gguf: &str) -> String {
    const BLOCK: [(&str, &str); 13] = [
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ];
    match gguf {
        "token_embd.weight" => "language_model.model.embed_tokens.weight".into(),
        "output_norm.weight" => "language_model.model.norm.weight".into(),
        _ => {
            let parts: Vec<&str> = gguf.split('.').collect();
            let (layer, tensor) = (parts[1], parts[2]);
            let hf = BLOCK
                .iter()
                .find(|(g, _)| *g == tensor)
                .expect("known tensor")
                .1;
            format!("language_model.model.layers.{layer}.{hf}.weight")
        }
    }
}

#[test]
fn safetensors_directory_generates_what_the_gguf_generates() {
    let gguf_path = default_model_path();
    let mut file = std::fs::File::open(&gguf_path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        let weight = content
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        // GGUF stores Gemma's norm multipliers as 1 + w; Hugging Face stores w.
        let weight = if name.ends_with("norm.weight") {
            (weight - 1.0).unwrap()
        } else {
            weight
        };
        tensors.insert(hugging_face_name(name), weight);
    }
    let dir = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    drop(tensors);

    let gguf = model::load(
        &gguf_path,
        &LoadOptions {
            dense: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let cfg = gguf.model.config();
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0, "rope_scaling": null, "sliding_window": 512,
            "sliding_window_pattern": 6, "max_position_embeddings": 32768, "query_pre_attn_scalar": 256
        }
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    gguf.tokenizer
        .save(&dir.path().join("tokenizer.json"))
        .unwrap();

    let hf = model::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(hf.model.config(), gguf.model.config());
    let prompt = "The three primary colors are";
    let ids = hf.tokenizer.encode(prompt, true, true).unwrap();
    assert_eq!(ids, gguf.tokenizer.encode(prompt, true, true).unwrap());
    let greedy = SamplingParams::default();
    let from_hf = generate(&hf.model, &hf.tokenizer, &ids, 16, &greedy, |_| Ok(())).unwrap();
    let from_gguf = generate(&gguf.model, &gguf.tokenizer, &ids, 16, &greedy, |_| Ok(())).unwrap();
    assert_eq!(from_hf.output_ids, from_gguf.output_ids);
    assert_eq!(
        hf.tokenizer.decode(&from_hf.output_ids).unwrap(),
        " red, blue, and yellow.\n\nThe primary colors are red, blue,"
    );
}
