//! PEFT's P-tuning encoder (`encoder_reparameterization_type="MLP"`): a learned embedding per prompt position
//! through Linear → ReLU → Linear → ReLU → Linear. Names follow PEFT (`embedding.weight`, `mlp_head.{0,2,4}`).

use anyhow::{ensure, Result};
use tch::nn::{self, Module};
use tch::Tensor;

use super::{Provider, ProviderInit};

#[derive(Debug)]
pub struct MlpProvider {
    /// `[L, d]`, like `nn.Embedding`'s weight (standard normal).
    embedding: Tensor,
    mlp_head: nn::Sequential,
}

impl MlpProvider {
    pub fn new(path: nn::Path, init: &ProviderInit, hidden_dim: i64) -> Result<Self> {
        ensure!(
            init.init_tokens.is_empty(),
            "the mlp provider cannot start from phrase tokens (<P>phrase</P>); use the tensor provider"
        );
        ensure!(hidden_dim > 0, "mlp hidden size must be positive");
        let d = init.embedding_dim;
        let embedding =
            (&path / "embedding").var("weight", &[init.prompt_length, d], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let head = &path / "mlp_head";
        let mlp_head = nn::seq()
            .add(nn::linear(&head / "0", d, hidden_dim, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&head / "2", hidden_dim, hidden_dim, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&head / "4", hidden_dim, d, Default::default()));
        Ok(Self { embedding, mlp_head })
    }
}

impl Provider for MlpProvider {
    fn forward(&self) -> Tensor {
        self.mlp_head.forward(&self.embedding)
    }
}
