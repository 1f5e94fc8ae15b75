//! `--model DIR` with a Hugging Face safetensors checkpoint: the default GGUF is written out
//! in Hugging Face layout (names, `1 + w` norms undone, config.json, tokenizer.json) and the
//! directory must generate exactly what the GGUF generates with the same f32 weights.

mod common;

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use common::default_model_path;
use gembatch::model::argmax::{argmax, top2};
use gembatch::model::generate::generate;
use gembatch::model::sampling::SamplingParams;
use gembatch::model::{self, BatchEntry, LoadOptions, LoadedModel};
use std::path::Path;

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

/// The default model's weights as `dtype`, under Hugging Face names, with GGUF's `1 + w`
/// norm multipliers turned back into `w`.
fn hugging_face_tensors(dtype: DType) -> HashMap<String, Tensor> {
    let mut file = std::fs::File::open(default_model_path()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in content.tensor_infos.keys() {
        let weight = content
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let weight = if name.ends_with("norm.weight") {
            (weight - 1.0).unwrap()
        } else {
            weight
        };
        tensors.insert(hugging_face_name(name), weight.to_dtype(dtype).unwrap());
    }
    tensors
}

/// Writes the default model as a Hugging Face checkpoint of `dtype` matrices (multimodal
/// layout) into `dir`; returns the GGUF model, dense.
fn write_checkpoint(dir: &Path, dtype: DType) -> LoadedModel {
    let tensors = hugging_face_tensors(dtype);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    drop(tensors);
    let gguf = model::load(
        &default_model_path(),
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
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    gguf.tokenizer.save(&dir.join("tokenizer.json")).unwrap();
    gguf
}

/// Logits after each token of `ids`, fed one at a time (teacher forcing).
fn teacher_forced_logits(model: &model::Gemma3, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.new_sequence();
    ids.iter()
        .map(|id| {
            let logits = model
                .forward(&mut [BatchEntry {
                    tokens: std::slice::from_ref(id),
                    cache: &mut cache,
                }])
                .unwrap();
            logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap()
        })
        .collect()
}

/// What a GPU pod runs, run on the CPU: bf16 matrices (activations rounded to bf16 at every
/// matmul, f32 elsewhere) and candle's tensor attention over tensor KV caches, against the
/// same bf16 checkpoint read as f32 with the CPU's own attention. Only the arithmetic
/// differs, so the bounds are the rounding's: bf16 keeps 8 significant bits, an input
/// rounded by up to 2^-9 of itself at each of the 18 layers' 4 matmuls and the head moves
/// Gemma 3 270M's logits (magnitude ~20) by tenths (0.23 at most, measured on an AMD EPYC
/// with AVX2), never by whole units as a wrong RoPE, mask or cache would; where f32's best
/// token leads by more than 2 % the same token must win.
#[test]
fn the_gpu_arithmetic_on_the_cpu_follows_f32_within_bf16_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = write_checkpoint(dir.path(), DType::BF16);
    let load = |dtype| {
        model::load(
            dir.path(),
            &LoadOptions {
                dtype: Some(dtype),
                ..LoadOptions::default()
            },
        )
        .unwrap()
    };
    let mut gpu_path = load(DType::BF16);
    assert_eq!(gpu_path.weights, "bf16");
    gpu_path.model.use_tensor_attention();
    let reference = load(DType::F32);
    assert_eq!(reference.weights, "f32");
    drop(gguf);

    let text = "Kubernetes schedules pods onto nodes; a ProvisioningRequest asks the cluster \
                autoscaler for a block of GPUs that arrive together or not at all. The nightly \
                batch then sends every row of its dataset to the model pods exactly once.";
    let ids = reference.tokenizer.encode(text, true, true).unwrap();
    assert!(ids.len() > 40, "{} tokens", ids.len());
    let expected = teacher_forced_logits(&reference.model, &ids);
    let actual = teacher_forced_logits(&gpu_path.model, &ids);
    let (mut max_delta, mut agree, mut clear, mut clear_agree) = (0f32, 0, 0, 0);
    for (want, got) in expected.iter().zip(&actual) {
        let delta = want
            .iter()
            .zip(got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        max_delta = max_delta.max(delta);
        let (best, gap) = top2(want);
        let same = argmax(got) == best;
        agree += usize::from(same);
        if gap > 0.02 {
            clear += 1;
            clear_agree += usize::from(same);
        }
    }
    eprintln!(
        "bf16 + tensor attention vs f32: max |dlogit| {max_delta:.3}, top-1 {agree}/{} ({clear_agree}/{clear} where f32 leads by > 2 %)",
        ids.len()
    );
    assert!(max_delta < 0.75, "max |dlogit| {max_delta}");
    assert_eq!(clear_agree, clear, "a clear winner changed");
    assert!(
        agree * 10 >= ids.len() * 9,
        "top-1 agreement {agree}/{}",
        ids.len()
    );
}

#[test]
fn safetensors_directory_generates_what_the_gguf_generates() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = write_checkpoint(dir.path(), DType::F32);
    let hf = model::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(hf.weights, "f32");
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
