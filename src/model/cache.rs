//! Incremental key/value cache for decoding: each layer keeps `[B, heads, S, head_dim]` keys and values.

use tch::Tensor;

/// Keys and values of all past positions, per layer. Get an empty one from [`super::Gpt2::new_cache`] and
/// pass it to every [`super::Gpt2::forward`] call of one decoding run.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<(Option<Tensor>, Option<Tensor>)>,
}

impl KvCache {
    pub(super) fn new(n_layer: usize) -> Self {
        Self { layers: (0..n_layer).map(|_| (None, None)).collect() }
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.layers.first().and_then(|(k, _)| k.as_ref()).map_or(0, |k| k.size()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batch size of the cached rows (0 while empty).
    pub fn batch_size(&self) -> i64 {
        self.layers.first().and_then(|(k, _)| k.as_ref()).map_or(0, |k| k.size()[0])
    }

    pub(super) fn layer_mut(&mut self, i: usize) -> &mut (Option<Tensor>, Option<Tensor>) {
        &mut self.layers[i]
    }
}
