//! The Gemma 3 transformer on candle: GELU MLP, sliding-window attention in the local
//! layers, per-sequence positions and KV caches so one forward pass serves a whole batch of
//! sequences that joined at different times.

use candle_core::{DType, Device, Tensor};
use candle_nn::rotary_emb::rope_thd;

use super::activation::gelu_mul;
use super::attention::{AttentionShape, HostQueries, attend_host, attend_tensors};
use super::config::Gemma3Config;
use super::error::{ModelError, Result};
use super::kv_cache::{LayerCache, SequenceCache};
use super::linear::{Embedding, FusedLinear, Linear};
use super::norm::{add_rms_norm, rms_norm};
use super::rope::Rope;
use super::weights::WeightSource;

/// Longest run of tokens one sequence may feed in one forward pass; longer prompts are
/// prefilled in chunks of this size so they do not stall everyone else's decoding.
pub const DEFAULT_MAX_CHUNK: usize = 512;

/// One transformer block.
struct Block {
    attn_norm: Tensor,
    qkv: FusedLinear,
    q_norm: Tensor,
    k_norm: Tensor,
    attn_output: Linear,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate_up: FusedLinear,
    down: Linear,
    post_ffn_norm: Tensor,
    sliding: bool,
}

/// One sequence's share of a batched forward pass.
pub struct BatchEntry<'a> {
    /// New tokens of the sequence (one when decoding, a chunk when prefilling).
    pub tokens: &'a [u32],
    /// The sequence's cache; its positions continue from `cache.len`.
    pub cache: &'a mut SequenceCache,
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    cfg: Gemma3Config,
    device: Device,
    embedding: Embedding,
    blocks: Vec<Block>,
    final_norm: Tensor,
    output_head: Linear,
    rope_global: Rope,
    rope_local: Rope,
    context: usize,
    max_chunk: usize,
    /// Attention by gembatch's CPU kernel over host caches, rather than candle's ops.
    host_attention: bool,
}

impl Gemma3 {
    /// Builds the model from its weights; `context` caps the positions a sequence may use.
    pub fn load(
        cfg: Gemma3Config,
        weights: &mut WeightSource,
        device: &Device,
        context: usize,
    ) -> Result<Self> {
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            blocks.push(Block {
                attn_norm: weights.norm(&name("attn_norm"), device)?,
                qkv: weights.fused(&[&name("attn_q"), &name("attn_k"), &name("attn_v")], device)?,
                q_norm: weights.norm(&name("attn_q_norm"), device)?,
                k_norm: weights.norm(&name("attn_k_norm"), device)?,
                attn_output: weights.linear(&name("attn_output"), device)?,
                post_attn_norm: weights.norm(&name("post_attention_norm"), device)?,
                ffn_norm: weights.norm(&name("ffn_norm"), device)?,
                gate_up: weights.fused(&[&name("ffn_gate"), &name("ffn_up")], device)?,
                down: weights.linear(&name("ffn_down"), device)?,
                post_ffn_norm: weights.norm(&name("post_ffw_norm"), device)?,
                sliding: cfg.is_sliding(i),
            });
        }
        let embedding = weights.embedding(device)?;
        let output_head = embedding.as_output_head(weights.dense())?;
        Ok(Self {
            rope_global: Rope::new(cfg.head_dim, cfg.rope_base_global, cfg.rope_scale_global),
            rope_local: Rope::new(cfg.head_dim, cfg.rope_base_local, 1.0),
            final_norm: weights.norm("output_norm.weight", device)?,
            context: context.min(cfg.context_length),
            max_chunk: DEFAULT_MAX_CHUNK,
            host_attention: device.is_cpu(),
            device: device.clone(),
            embedding,
            output_head,
            blocks,
            cfg,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// Positions one sequence may hold (prompt and generated tokens together).
    pub fn context(&self) -> usize {
        self.context
    }

    /// Longest chunk one sequence may feed in a single forward pass.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for a new sequence.
    pub fn new_sequence(&self) -> SequenceCache {
        let ring_slots = self.cfg.sliding_window + self.max_chunk;
        let layers = self
            .blocks
            .iter()
            .map(|b| {
                if b.sliding {
                    LayerCache::ring(ring_slots)
                } else {
                    LayerCache::growing()
                }
            })
            .collect();
        SequenceCache { layers, len: 0 }
    }

    /// Runs every entry's new tokens through the model, appending them to the entries'
    /// caches, and returns the logits after each entry's last token, `[entries, vocab]` f32.
    /// After an error the caches of this batch are unusable and must be dropped.
    pub fn forward(&self, batch: &mut [BatchEntry]) -> Result<Tensor> {
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        for entry in batch.iter() {
            self.check_entry(entry)?;
            ids.extend_from_slice(entry.tokens);
            positions.extend(entry.cache.len..entry.cache.len + entry.tokens.len());
        }
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let mut xs = (self.embedding.lookup(&ids)? * (self.cfg.hidden_size as f64).sqrt())?;
        let global = self.rope_global.cos_sin(&positions, &self.device)?;
        let local = self.rope_local.cos_sin(&positions, &self.device)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let (cos, sin) = if block.sliding { &local } else { &global };
            xs = self.block_forward(block, layer, &xs, cos, sin, batch)?;
        }
        let mut last_rows = Vec::with_capacity(batch.len());
        let mut end = 0u32;
        for entry in batch.iter_mut() {
            end += entry.tokens.len() as u32;
            last_rows.push(end - 1);
            entry.cache.len += entry.tokens.len();
        }
        let last_rows = Tensor::from_vec(last_rows, batch.len(), &self.device)?;
        let xs = xs.index_select(&last_rows, 0)?;
        let xs = rms_norm(&xs, &self.final_norm, self.eps())?;
        Ok(self.output_head.forward(&xs)?.to_dtype(DType::F32)?)
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    fn check_entry(&self, entry: &BatchEntry) -> Result<()> {
        let t = entry.tokens.len();
        let invalid = |reason: String| {
            Err(ModelError::InvalidParameter {
                name: "batch entry",
                reason,
            })
        };
        if t == 0 {
            return invalid("an entry has no tokens".into());
        }
        if t > self.max_chunk {
            return invalid(format!(
                "{t} tokens exceed the chunk limit {}",
                self.max_chunk
            ));
        }
        if entry.cache.len + t > self.context {
            return Err(ModelError::PromptTooLong {
                tokens: entry.cache.len + t,
                context: self.context,
            });
        }
        if let Some(&bad) = entry
            .tokens
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            ));
        }
        Ok(())
    }

    fn block_forward(
        &self,
        block: &Block,
        layer: usize,
        xs: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &mut [BatchEntry],
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let total = xs.dim(0)?;
        let h = rms_norm(xs, &block.attn_norm, self.eps())?;
        let [q, k, v]: [Tensor; 3] = block
            .qkv
            .forward(&h)?
            .try_into()
            .expect("three projections");
        let q = rms_norm(&q, &block.q_norm, self.eps())?.reshape((
            total,
            cfg.num_heads,
            cfg.head_dim,
        ))?;
        let k = rms_norm(&k, &block.k_norm, self.eps())?.reshape((
            total,
            cfg.num_kv_heads,
            cfg.head_dim,
        ))?;
        let v = v.reshape((total, cfg.num_kv_heads, cfg.head_dim))?;
        let q =
            (rope_thd(&q.unsqueeze(0)?, cos, sin)?.squeeze(0)? / cfg.query_pre_attn_scalar.sqrt())?;
        let k = rope_thd(&k.unsqueeze(0)?, cos, sin)?.squeeze(0)?;

        let shape = AttentionShape {
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            window: block.sliding.then_some(cfg.sliding_window),
        };
        let attn = if self.host_attention {
            self.attention_on_host(shape, layer, &q, &k, &v, batch)?
        } else {
            let mut outputs = Vec::with_capacity(batch.len());
            let mut start = 0;
            for entry in batch.iter_mut() {
                let t = entry.tokens.len();
                outputs.push(attend_tensors(
                    shape,
                    &mut entry.cache.layers[layer],
                    entry.cache.len,
                    &q.narrow(0, start, t)?,
                    &k.narrow(0, start, t)?,
                    &v.narrow(0, start, t)?,
                )?);
                start += t;
            }
            Tensor::cat(&outputs, 0)?
        };
        let xs = add_rms_norm(
            xs,
            &block.attn_output.forward(&attn)?,
            &block.post_attn_norm,
            self.eps(),
        )?;

        let h = rms_norm(&xs, &block.ffn_norm, self.eps())?;
        let [gate, up]: [Tensor; 2] = block
            .gate_up
            .forward(&h)?
            .try_into()
            .expect("two projections");
        let h = block.down.forward(&gelu_mul(&gate, &up)?)?;
        Ok(add_rms_norm(&xs, &h, &block.post_ffn_norm, self.eps())?)
    }

    /// Appends the batch's new keys and values (`[total, kv_heads, dim]`) to the caches
    /// of `layer` and runs the host attention kernel over all sequences at once.
    fn attention_on_host(
        &self,
        shape: AttentionShape,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        batch: &mut [BatchEntry],
    ) -> Result<Tensor> {
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let (q, k, v) = (host(q)?, host(k)?, host(v)?);
        let (kv_row, q_row) = (
            shape.kv_heads * shape.head_dim,
            shape.heads * shape.head_dim,
        );
        let mut start = 0;
        let mut seqs = Vec::with_capacity(batch.len());
        for entry in batch.iter_mut() {
            let t = entry.tokens.len();
            let rows = start * kv_row..(start + t) * kv_row;
            let cache = &mut entry.cache.layers[layer];
            cache.append_host(&k[rows.clone()], &v[rows], kv_row, entry.cache.len)?;
            // Read-only from here on, for as long as the batch is borrowed.
            let cache: &LayerCache = cache;
            seqs.push(HostQueries {
                q: &q[start * q_row..(start + t) * q_row],
                pos0: entry.cache.len,
                cache: cache.host_view().expect("keys were appended above"),
            });
            start += t;
        }
        let out = attend_host(shape, &seqs);
        Ok(Tensor::from_vec(out, (start, q_row), &self.device)?)
    }

    /// Runs attention through candle's tensor operations, as on a GPU, even on the CPU:
    /// for comparing the two paths. Call before the first forward pass.
    pub fn use_tensor_attention(&mut self) {
        self.host_attention = false;
    }
}
