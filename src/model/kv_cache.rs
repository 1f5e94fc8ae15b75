//! Per-sequence key/value caches: a growing buffer for global layers, a ring for
//! sliding-window layers, so memory per sequence is bounded by the context and the window.
//! On the CPU the keys and values live in plain host memory that the attention kernel reads
//! in place; on other devices they are tensors for candle's attention.

use candle_core::{Error, Result, Tensor};

/// Allocation granularity of growing caches, in positions.
const GROW_STEP: usize = 256;

/// Keys and values of one layer of one sequence.
pub struct LayerCache {
    store: Store,
    /// Position held by each slot (`usize::MAX` for an empty slot).
    slot_positions: Vec<usize>,
    /// Slots holding a position: always a prefix, as positions arrive in order from 0.
    filled: usize,
    /// `Some(n)`: a ring of `n` slots; `None`: slot `p` holds position `p`, growing.
    ring: Option<usize>,
}

enum Store {
    Empty,
    /// Host memory, slot-major `[slots, row]` (`row` = kv heads x head dim), as the
    /// projections produce them: appending is a copy, the CPU attention reads in place.
    Host {
        k: Vec<f32>,
        v: Vec<f32>,
        row: usize,
    },
    /// Tensors `[kv_heads, slots, head_dim]` on the model's device.
    Device {
        k: Tensor,
        v: Tensor,
    },
}

/// The keys and values a query chunk attends to, with each key's position (tensors).
pub struct AttendView<'a> {
    /// `[kv_heads, n, head_dim]`.
    pub k: Tensor,
    /// `[kv_heads, n, head_dim]`.
    pub v: Tensor,
    /// Position of each of the `n` keys.
    pub positions: &'a [usize],
}

/// The keys and values a query chunk attends to, in host memory.
#[derive(Clone, Copy)]
pub struct HostView<'a> {
    /// `[n, kv_heads, head_dim]`.
    pub k: &'a [f32],
    /// `[n, kv_heads, head_dim]`.
    pub v: &'a [f32],
    /// Position of each of the `n` keys.
    pub positions: &'a [usize],
}

/// Consecutive new positions stored in consecutive slots.
struct Run {
    slot: usize,
    /// Index of the run's first position among the appended ones.
    first: usize,
    len: usize,
}

impl LayerCache {
    /// A cache that grows with the sequence (global attention).
    pub fn growing() -> Self {
        Self {
            store: Store::Empty,
            slot_positions: Vec::new(),
            filled: 0,
            ring: None,
        }
    }

    /// A ring of `slots` entries (sliding-window attention); `slots` must be at least the
    /// window plus the longest chunk appended at once, minus one.
    pub fn ring(slots: usize) -> Self {
        Self {
            ring: Some(slots),
            ..Self::growing()
        }
    }

    /// Bytes held by this cache.
    pub fn bytes(&self) -> usize {
        match &self.store {
            Store::Empty => 0,
            Store::Host { k, v, .. } => (k.len() + v.len()) * size_of::<f32>(),
            Store::Device { k, v } => [k, v]
                .into_iter()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
        }
    }

    /// Appends host keys and values `[t, row]` for positions `pos0..pos0+t`; read them back
    /// with [`LayerCache::host_view`].
    pub fn append_host(
        &mut self,
        k_new: &[f32],
        v_new: &[f32],
        row: usize,
        pos0: usize,
    ) -> Result<()> {
        let t = k_new.len() / row;
        let capacity = self.capacity_for(pos0, t);
        match &mut self.store {
            Store::Empty => {
                self.store = Store::Host {
                    k: Vec::new(),
                    v: Vec::new(),
                    row,
                }
            }
            Store::Host { row: stored, .. } if *stored == row => {}
            _ => return Err(mixed_use()),
        }
        let runs = self.place(capacity, pos0, t);
        let Store::Host { k, v, .. } = &mut self.store else {
            unreachable!("set above")
        };
        // Slot-major: growing keeps what is stored as a prefix.
        grow_exact(k, capacity * row);
        grow_exact(v, capacity * row);
        for run in runs {
            let (dst, src) = (
                run.slot * row..(run.slot + run.len) * row,
                run.first * row..(run.first + run.len) * row,
            );
            k[dst.clone()].copy_from_slice(&k_new[src.clone()]);
            v[dst].copy_from_slice(&v_new[src]);
        }
        Ok(())
    }

    /// Every key and value appended with [`LayerCache::append_host`], newest included;
    /// `None` before the first append.
    pub fn host_view(&self) -> Option<HostView<'_>> {
        let Store::Host { k, v, row } = &self.store else {
            return None;
        };
        let n = self.filled;
        Some(HostView {
            k: &k[..n * row],
            v: &v[..n * row],
            positions: &self.slot_positions[..n],
        })
    }

    /// Appends `k_new`/`v_new` (`[kv_heads, t, head_dim]`) for positions `pos0..pos0+t` and
    /// returns every key/value in the cache, including the new ones.
    pub fn append(
        &mut self,
        k_new: &Tensor,
        v_new: &Tensor,
        pos0: usize,
    ) -> Result<AttendView<'_>> {
        if matches!(self.store, Store::Host { .. }) {
            return Err(mixed_use());
        }
        let (heads, t, head_dim) = k_new.dims3()?;
        let capacity = self.capacity_for(pos0, t);
        if self.slot_positions.len() < capacity {
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let fresh =
                    Tensor::zeros((heads, capacity, head_dim), k_new.dtype(), k_new.device())?;
                if let Some(old) = old {
                    fresh.slice_set(old, 1, 0)?;
                }
                Ok(fresh)
            };
            self.store = match &self.store {
                Store::Empty => Store::Device {
                    k: grow(None)?,
                    v: grow(None)?,
                },
                Store::Device { k, v } => Store::Device {
                    k: grow(Some(k))?,
                    v: grow(Some(v))?,
                },
                Store::Host { .. } => return Err(mixed_use()),
            };
        }
        let runs = self.place(capacity, pos0, t);
        let Store::Device { k, v } = &self.store else {
            return Err(mixed_use());
        };
        for run in runs {
            k.slice_set(
                &k_new.narrow(1, run.first, run.len)?.contiguous()?,
                1,
                run.slot,
            )?;
            v.slice_set(
                &v_new.narrow(1, run.first, run.len)?.contiguous()?,
                1,
                run.slot,
            )?;
        }
        let n = self.filled;
        Ok(AttendView {
            k: k.narrow(1, 0, n)?,
            v: v.narrow(1, 0, n)?,
            positions: &self.slot_positions[..n],
        })
    }

    /// Slots the cache needs to hold positions up to `pos0 + t`.
    fn capacity_for(&self, pos0: usize, t: usize) -> usize {
        // Rings grow like the other caches until they reach their size, so a short
        // sequence holds memory for its length only.
        let needed = (pos0 + t).next_multiple_of(GROW_STEP);
        self.ring.map_or(needed, |slots| needed.min(slots))
    }

    /// Records positions `pos0..pos0+t` in their slots (the store already holds `capacity`
    /// slots) and returns where each run of them goes: at most two runs, as a ring wraps
    /// at most once per chunk.
    fn place(&mut self, capacity: usize, pos0: usize, t: usize) -> Vec<Run> {
        if self.slot_positions.len() < capacity {
            self.slot_positions.resize(capacity, usize::MAX);
        }
        // Slot of position p: p modulo the ring's full size (never reached before the ring
        // has grown to it), or p itself in a growing cache.
        let slots = self.ring.unwrap_or(self.slot_positions.len());
        let mut runs = Vec::with_capacity(2);
        let mut first = 0;
        while first < t {
            let slot = (pos0 + first) % slots;
            let len = (t - first).min(slots - slot);
            for i in 0..len {
                self.slot_positions[slot + i] = pos0 + first + i;
            }
            runs.push(Run { slot, first, len });
            first += len;
        }
        self.filled = (pos0 + t).min(slots);
        runs
    }
}

/// Zero-extends `buffer` to `len` values, allocating exactly that (so that the memory is
/// what [`LayerCache::bytes`] reports).
fn grow_exact(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.reserve_exact(len - buffer.len());
        buffer.resize(len, 0.0);
    }
}

fn mixed_use() -> Error {
    Error::Msg("a sequence's cache was filled on one kind of device and used on another".into())
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
    use candle_core::Device;

    /// Appends positions `pos0..pos0+n`, each key and value equal to its position, through
    /// the host or the tensor path; returns the positions and keys the cache then holds.
    fn append(cache: &mut LayerCache, host: bool, n: usize, pos0: usize) -> (Vec<usize>, Vec<f32>) {
        let data: Vec<f32> = (pos0..pos0 + n).map(|p| p as f32).collect();
        if host {
            cache.append_host(&data, &data, 1, pos0).unwrap();
            let view = cache.host_view().unwrap();
            assert_eq!(view.k, view.v);
            return (view.positions.to_vec(), view.k.to_vec());
        }
        let t = Tensor::from_vec(data, (1, n, 1), &Device::Cpu).unwrap();
        let view = cache.append(&t, &t, pos0).unwrap();
        let keys = view.k.flatten_all().unwrap().to_vec1().unwrap();
        (view.positions.to_vec(), keys)
    }

    #[test]
    fn growing_cache_keeps_every_position_in_order() {
        for host in [true, false] {
            let mut cache = LayerCache::growing();
            append(&mut cache, host, 300, 0);
            let (positions, keys) = append(&mut cache, host, 2, 300);
            assert_eq!(positions, (0..302).collect::<Vec<_>>());
            assert_eq!(keys, (0..302).map(|p| p as f32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn ring_wraps_and_each_slot_knows_its_position() {
        for host in [true, false] {
            let slots = 2 * GROW_STEP;
            let mut cache = LayerCache::ring(slots);
            append(&mut cache, host, 6, 0);
            assert_eq!(
                cache.bytes(),
                2 * GROW_STEP * 4,
                "a short sequence holds one growth step"
            );
            append(&mut cache, host, slots - 8, 6);
            let (positions, keys) = append(&mut cache, host, 4, slots - 2);
            let mut expected: Vec<usize> = (0..slots).collect();
            expected[0] = slots;
            expected[1] = slots + 1;
            assert_eq!(positions, expected);
            assert_eq!(keys, expected.iter().map(|&p| p as f32).collect::<Vec<_>>());
            assert_eq!(cache.bytes(), 2 * slots * 4);
        }
    }

    #[test]
    fn a_cache_stays_on_the_kind_of_device_it_was_filled_on() {
        let mut cache = LayerCache::growing();
        append(&mut cache, true, 2, 0);
        let t = Tensor::zeros((1, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(cache.append(&t, &t, 2).is_err());
        let mut cache = LayerCache::growing();
        append(&mut cache, false, 2, 0);
        assert!(cache.append_host(&[0.0], &[0.0], 1, 2).is_err());
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
