//! Incremental key/value cache for decoding: each layer keeps `[B, heads, S, head_dim]` keys and values.

use tch::Tensor;

/// One layer's cached keys and values.
#[derive(Debug, Default)]
pub(super) struct LayerKv {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerKv {
    /// Appends this step's `k, v: [B, heads, T, head_dim]` and returns keys and values of all positions.
    pub(super) fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (k, v) = match &self.kv {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2), Tensor::cat(&[pv, &v], 2)),
            None => (k, v),
        };
        self.kv = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
    }
}

/// Keys and values of all past positions, per layer. Get an empty one from [`super::Gpt2::new_cache`] and
/// pass it to every [`super::Gpt2::forward`] call of one decoding run.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    pub(super) fn new(n_layer: usize) -> Self {
        Self { layers: (0..n_layer).map(|_| LayerKv::default()).collect() }
    }

    fn first_keys(&self) -> Option<&Tensor> {
        self.layers.first().and_then(|l| l.kv.as_ref()).map(|(k, _)| k)
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.first_keys().map_or(0, |k| k.size()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch size of the cached rows (0 while empty).
    pub fn batch_size(&self) -> i64 {
        self.first_keys().map_or(0, |k| k.size()[0])
    }

    /// The cache with batch rows `rows` (an index may repeat): continuations of several contexts, or several
    /// continuations of one, share the contexts' forward.
    pub fn select_rows(&self, rows: &[i64]) -> KvCache {
        // One row broadcast needs no copy.
        let broadcast = self.batch_size() == 1 && rows.iter().all(|&r| r == 0);
        let k = rows.len() as i64;
        let layers = self
            .layers
            .iter()
            .map(|l| LayerKv {
                kv: l.kv.as_ref().map(|(key, value)| {
                    if broadcast {
                        return (key.expand([k, -1, -1, -1], false), value.expand([k, -1, -1, -1], false));
                    }
                    let index = Tensor::from_slice(rows).to_device(key.device());
                    (key.index_select(0, &index), value.index_select(0, &index))
                }),
            })
            .collect();
        KvCache { layers }
    }

    /// Keeps batch rows `rows` (an index may repeat), in that order: beam search follows each hypothesis to its
    /// parent's keys and values. Leaving every row where it is costs nothing.
    pub fn reorder(&mut self, rows: &[i64]) {
        let identity = rows.len() as i64 == self.batch_size() && rows.iter().enumerate().all(|(i, &r)| r == i as i64);
        if !identity {
            *self = self.select_rows(rows);
        }
    }

    pub(super) fn layer_mut(&mut self, i: usize) -> &mut LayerKv {
        &mut self.layers[i]
    }
}
