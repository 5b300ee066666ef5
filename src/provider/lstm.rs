//! ruPrompts' LSTMPromptProvider (P-tuning, Liu et al. 2021): a learned input sequence through a
//! bidirectional LSTM and a two-layer MLP. Parameter names and layouts are PyTorch's, so a ruPrompts state
//! dict loads as is.

use anyhow::{ensure, Result};
use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use super::{Provider, ProviderInit};

#[derive(Debug)]
pub struct LstmProvider {
    /// `[1, L, input_dim]`, uniform [0, 1) like `torch.rand`.
    input: Tensor,
    lstm: nn::LSTM,
    mlp: nn::Sequential,
}

impl LstmProvider {
    pub fn new(path: nn::Path, init: &ProviderInit, input_dim: i64, hidden_dim: i64, num_layers: i64) -> Result<Self> {
        ensure!(
            init.init_tokens.is_empty(),
            "the lstm provider cannot start from phrase tokens (<P>phrase</P>); use the tensor provider"
        );
        ensure!(input_dim > 0 && hidden_dim > 0 && num_layers > 0, "lstm sizes must be positive");
        let input = path.var("input", &[1, init.prompt_length, input_dim], nn::Init::Uniform { lo: 0.0, up: 1.0 });
        let config = nn::RNNConfig { bidirectional: true, num_layers, batch_first: true, ..Default::default() };
        let lstm = nn::lstm(&path / "lstm", input_dim, hidden_dim, config);
        let mlp_path = &path / "mlp";
        let mlp = nn::seq()
            .add(nn::linear(&mlp_path / "0", 2 * hidden_dim, hidden_dim, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&mlp_path / "2", hidden_dim, init.embedding_dim, Default::default()));
        Ok(Self { input, lstm, mlp })
    }
}

impl Provider for LstmProvider {
    fn forward(&self) -> Tensor {
        let (out, _) = self.lstm.seq(&self.input.to_kind(Kind::Float));
        self.mlp.forward(&out).squeeze_dim(0)
    }
}
