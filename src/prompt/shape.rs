//! The sizes of the backbone a prompt is made for, and the one check that a prompt fits a model: every place a
//! prompt meets a model (injection in training, evaluation, generation and serving; `init_from`) goes through
//! [`Shape::fits`], so a prompt or adapter whose numbers belong to another model is refused, never reinterpreted.

use anyhow::{ensure, Result};

use crate::model::Dims;

/// The sizes of the backbone a prompt is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub embedding_dim: i64,
    /// Transformer layers (a deep prompt has keys and values for each).
    pub num_layers: i64,
    /// Width of one layer's keys for one position: the embedding size, or less with grouped-query attention.
    pub kv_dim: i64,
}

impl Shape {
    /// Checks the sizes the prompt uses against `model`: the embedding size when the model reads the prompt's
    /// input rows (`reads_embeddings`), the layers and key width when it is deep.
    pub fn fits(&self, model: &Dims, reads_embeddings: bool, deep: bool) -> Result<()> {
        let mut checks = Vec::new();
        if reads_embeddings {
            checks.push(("embedding size", self.embedding_dim, model.n_embd, "n_embd"));
        }
        if deep {
            checks.push(("layers", self.num_layers, model.n_layer, "n_layer"));
            checks.push(("key/value width", self.kv_dim, model.kv_dim, "heads × head size"));
        }
        for (what, ours, theirs, key) in checks {
            ensure!(ours == theirs, "it was made for a model with {what} {ours}, but this model has {theirs} ({key})");
        }
        Ok(())
    }
}
