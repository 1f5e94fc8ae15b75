//! Per-sequence key/value caches: a growing buffer for global layers, a ring for
//! sliding-window layers, so memory per sequence is bounded by the context and the window.

use candle_core::{DType, Device, Result, Tensor};

/// Allocation granularity of growing caches, in positions.
const GROW_STEP: usize = 256;

/// Keys and values of one layer of one sequence, laid out `[kv_heads, slots, head_dim]`.
pub struct LayerCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Position held by each slot (`usize::MAX` for an empty slot).
    slot_positions: Vec<usize>,
    /// `Some(n)`: a ring of `n` slots; `None`: slot `p` holds position `p`, growing.
    ring: Option<usize>,
}

/// The keys and values a query chunk attends to, with each key's position.
pub struct AttendView<'a> {
    /// `[kv_heads, n, head_dim]`.
    pub k: Tensor,
    /// `[kv_heads, n, head_dim]`.
    pub v: Tensor,
    /// Position of each of the `n` keys.
    pub positions: &'a [usize],
}

impl LayerCache {
    /// A cache that grows with the sequence (global attention).
    pub fn growing() -> Self {
        Self {
            k: None,
            v: None,
            slot_positions: Vec::new(),
            ring: None,
        }
    }

    /// A ring of `slots` entries (sliding-window attention); `slots` must be at least the
    /// window plus the longest chunk appended at once, minus one.
    pub fn ring(slots: usize) -> Self {
        Self {
            k: None,
            v: None,
            slot_positions: Vec::new(),
            ring: Some(slots),
        }
    }

    /// Bytes held by this cache.
    pub fn bytes(&self) -> usize {
        [&self.k, &self.v]
            .into_iter()
            .flatten()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Appends `k_new`/`v_new` (`[kv_heads, t, head_dim]`) for positions `pos0..pos0+t` and
    /// returns every key/value in the cache, including the new ones.
    pub fn append(
        &mut self,
        k_new: &Tensor,
        v_new: &Tensor,
        pos0: usize,
    ) -> Result<AttendView<'_>> {
        let (heads, t, head_dim) = k_new.dims3()?;
        // Rings grow like the other caches until they reach their size, so a short
        // sequence holds memory for its length only.
        let needed = (pos0 + t).next_multiple_of(GROW_STEP);
        let capacity = self.ring.map_or(needed, |slots| needed.min(slots));
        self.reserve(capacity, heads, head_dim, k_new.dtype(), k_new.device())?;
        let (k, v) = (
            self.k.as_ref().expect("reserved"),
            self.v.as_ref().expect("reserved"),
        );
        // Slot of position p: p modulo the ring's full size (never reached before the ring
        // has grown to it), or p itself in a growing cache.
        let slots = self.ring.unwrap_or(self.slot_positions.len());
        // Write the chunk in at most two contiguous runs (a ring may wrap once).
        let mut written = 0;
        while written < t {
            let slot = (pos0 + written) % slots;
            let run = (t - written).min(slots - slot);
            k.slice_set(&k_new.narrow(1, written, run)?.contiguous()?, 1, slot)?;
            v.slice_set(&v_new.narrow(1, written, run)?.contiguous()?, 1, slot)?;
            for i in 0..run {
                self.slot_positions[slot + i] = pos0 + written + i;
            }
            written += run;
        }
        // Positions arrive in order from 0, so the filled slots are always a prefix.
        let n = (pos0 + t).min(slots);
        Ok(AttendView {
            k: k.narrow(1, 0, n)?,
            v: v.narrow(1, 0, n)?,
            positions: &self.slot_positions[..n],
        })
    }

    /// Makes room for `capacity` slots, keeping what is stored.
    fn reserve(
        &mut self,
        capacity: usize,
        heads: usize,
        head_dim: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<()> {
        if self.slot_positions.len() >= capacity {
            return Ok(());
        }
        let grow = |old: &Option<Tensor>| -> Result<Tensor> {
            let fresh = Tensor::zeros((heads, capacity, head_dim), dtype, dev)?;
            if let Some(old) = old {
                fresh.slice_set(old, 1, 0)?;
            }
            Ok(fresh)
        };
        self.k = Some(grow(&self.k)?);
        self.v = Some(grow(&self.v)?);
        self.slot_positions.resize(capacity, usize::MAX);
        Ok(())
    }
}

/// All layers' caches of one sequence, plus how many positions it holds.
pub struct SequenceCache {
    /// One cache per layer.
    pub layers: Vec<LayerCache>,
    /// Positions already in the cache; the next token goes at this position.
    pub len: usize,
}

impl SequenceCache {
    /// Bytes held by all layers.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }
}

/// The additive attention mask of a query chunk at `q_pos0..q_pos0+t` against keys at
/// `key_positions`: 0 where visible (causal, and within `window` when given), -inf elsewhere.
/// `None` when every key is visible to every query.
pub fn attention_mask(
    q_pos0: usize,
    t: usize,
    key_positions: &[usize],
    window: Option<usize>,
) -> Option<Vec<f32>> {
    let visible = |q: usize, k: usize| k <= q && window.is_none_or(|w| q - k < w);
    if t == 1 && key_positions.iter().all(|&k| visible(q_pos0, k)) {
        return None;
    }
    let mut mask = Vec::with_capacity(t * key_positions.len());
    for q in q_pos0..q_pos0 + t {
        mask.extend(key_positions.iter().map(|&k| {
            if visible(q, k) {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        }));
    }
    Some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize, pos0: usize) -> Tensor {
        let data: Vec<f32> = (pos0..pos0 + n).map(|p| p as f32).collect();
        Tensor::from_vec(data, (1, n, 1), &Device::Cpu).unwrap()
    }

    fn stored(view: &AttendView) -> Vec<f32> {
        view.k.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn growing_cache_keeps_every_position_in_order() {
        let mut cache = LayerCache::growing();
        cache.append(&keys(300, 0), &keys(300, 0), 0).unwrap();
        let view = cache.append(&keys(2, 300), &keys(2, 300), 300).unwrap();
        assert_eq!(view.positions, (0..302).collect::<Vec<_>>());
        assert_eq!(
            stored(&view),
            (0..302).map(|p| p as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ring_wraps_and_each_slot_knows_its_position() {
        let slots = 2 * GROW_STEP;
        let mut cache = LayerCache::ring(slots);
        cache.append(&keys(6, 0), &keys(6, 0), 0).unwrap();
        assert_eq!(
            cache.bytes(),
            2 * GROW_STEP * 4,
            "a short sequence holds one growth step"
        );
        cache
            .append(&keys(slots - 8, 6), &keys(slots - 8, 6), 6)
            .unwrap();
        let view = cache
            .append(&keys(4, slots - 2), &keys(4, slots - 2), slots - 2)
            .unwrap();
        let mut expected: Vec<usize> = (0..slots).collect();
        expected[0] = slots;
        expected[1] = slots + 1;
        assert_eq!(view.positions, expected);
        assert_eq!(
            stored(&view),
            expected.iter().map(|&p| p as f32).collect::<Vec<_>>()
        );
        assert_eq!(cache.bytes(), 2 * slots * 4);
    }

    #[test]
    fn mask_is_causal_and_windowed() {
        let mask = attention_mask(2, 2, &[0, 1, 2, 3], Some(2)).unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(mask, vec![inf, 0., 0., inf, inf, inf, 0., 0.]);
        assert!(attention_mask(3, 1, &[0, 1, 2, 3], None).is_none());
        assert!(attention_mask(3, 1, &[0, 1, 2, 3], Some(3)).is_some());
    }
}
