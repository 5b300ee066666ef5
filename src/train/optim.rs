//! AdamW and gradient-norm clipping with PyTorch's exact arithmetic (`torch.optim.AdamW`, single-tensor path;
//! `clip_grad_norm_`). Written out rather than taken from tch's optimizer because a resumable run must save and
//! restore the moments, which tch's wrapper keeps out of reach.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The `optimizer` section of a config (PyTorch's defaults, except `lr`, which every config sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    #[serde(default = "default_eps")]
    pub eps: f64,
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.01
}

/// AdamW over named parameters, with its moments in reach for checkpoints.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    /// (name, parameter, exp_avg, exp_avg_sq), sorted by name.
    params: Vec<(String, Tensor, Tensor, Tensor)>,
    step: i64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, mut named: Vec<(String, Tensor)>) -> Self {
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params = named
            .into_iter()
            .map(|(n, p)| {
                let (m, v) = (p.zeros_like().detach(), p.zeros_like().detach());
                (n, p, m, v)
            })
            .collect();
        Self { config, params, step: 0 }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// One update with learning rate `lr` (the scheduler's value for this step), from the current gradients.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let (beta1, beta2) = self.config.betas;
        let bias_correction1 = 1.0 - beta1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        tch::no_grad(|| {
            for (_, param, exp_avg, exp_avg_sq) in &mut self.params {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                let mut param = param.shallow_clone();
                let _ = param.g_mul_scalar_(1.0 - lr * self.config.weight_decay);
                let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                // addcmul_(grad, grad, value = 1 - beta2), in the kernel's order: (value * grad) * grad.
                let _ = exp_avg_sq.g_mul_scalar_(beta2).g_add_(&((&grad * (1.0 - beta2)) * &grad));
                let denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt) + self.config.eps;
                // addcdiv_(exp_avg, denom, value = -step_size): (value * exp_avg) / denom.
                let _ = param.addcdiv_(&(&*exp_avg * (-lr / bias_correction1)), &denom);
            }
        });
    }

    /// Clears the gradients of every parameter.
    pub fn zero_grad(&mut self) {
        for (_, param, _, _) in &mut self.params {
            param.zero_grad();
        }
    }

    /// The moments as named tensors (`exp_avg.<name>`, `exp_avg_sq.<name>`), for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|(n, _, m, v)| {
                [(format!("exp_avg.{n}"), m.shallow_clone()), (format!("exp_avg_sq.{n}"), v.shallow_clone())]
            })
            .collect()
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, state: &[(String, Tensor)], step: i64) -> Result<()> {
        for (name, _, m, v) in &mut self.params {
            for (prefix, moment) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let key = format!("{prefix}.{name}");
                let saved = state
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, t)| t)
                    .with_context(|| format!("optimizer state has no '{key}'"))?;
                ensure!(
                    saved.size() == moment.size(),
                    "optimizer state '{key}' has shape {:?}, expected {:?}",
                    saved.size(),
                    moment.size()
                );
                tch::no_grad(|| moment.copy_(saved));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_` does;
/// returns the norm before clipping.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> f64 {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&coef);
        }
        total.to_kind(Kind::Double).double_value(&[])
    })
}
