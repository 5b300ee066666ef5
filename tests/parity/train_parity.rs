//! Five AdamW steps of prompt tuning against Python ruprompts + torch.optim.AdamW (`reference/ruprompts/training*`).

use crate::common;

use common::*;
use ruprompts::format::PromptFormat;
use ruprompts::prompt::Prompt;
use ruprompts::provider::ProviderConfig;
use ruprompts::tokenizer::Tokenizer;
use ruprompts::train::{AdamW, AdamWConfig};
use tch::Tensor;

#[test]
fn five_adamw_steps_reproduce_python_losses_weights_and_moments() {
    let model = tiny_model();
    let spec = load_json("reference/ruprompts/training.json");
    let tensors = Tensor::read_safetensors(fixture("reference/ruprompts/training_weights.safetensors")).unwrap();
    let tensor =
        |name: &str| tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.shallow_clone();
    let tok = Tokenizer::from_dir(&model_dir()).unwrap();
    for (variant, v) in spec["variants"].as_object().unwrap() {
        let format = PromptFormat::compile(spec["template"].as_str().unwrap(), &tok).unwrap();
        let mut prompt = Prompt::new(format, ProviderConfig::default(), &model).unwrap();
        prompt.set_state(&[("weights".into(), tensor("initial_weights"))]).unwrap();
        let h = &v["optimizer_hyperparameters"];
        let config = AdamWConfig {
            lr: h["lr"].as_f64().unwrap(),
            betas: (h["betas"][0].as_f64().unwrap(), h["betas"][1].as_f64().unwrap()),
            eps: h["eps"].as_f64().unwrap(),
            weight_decay: h["weight_decay"].as_f64().unwrap(),
        };
        let params: Vec<(String, Tensor)> = prompt.var_store().variables().into_iter().collect();
        let mut opt = AdamW::new(config.clone(), params);
        let batch = &v["batch"];
        let ids = ids_tensor(&i64_rows(&batch["input_ids"]));
        let mask = ids_tensor(&i64_rows(&batch["attention_mask"]));
        let labels = ids_tensor(&i64_rows(&batch["labels"]));
        let loss_of = |prompt: &Prompt| {
            let embeds = prompt.embed(&model, &ids, 2000).unwrap();
            // The trainer's loss: the last block from the first labelled position on.
            model.loss(embeds.input(), Some(&mask), &labels).unwrap()
        };
        let expected_losses = f64_vec(&v["loss_before_step"]);
        let expected_norms = f64_vec(&v["grad_norm_before_clip"]);
        for step in 0..5 {
            opt.zero_grad();
            let loss = loss_of(&prompt);
            let value = loss.double_value(&[]);
            assert!(
                (value - expected_losses[step]).abs() <= 1e-5,
                "{variant} step {step}: loss {value} vs {}",
                expected_losses[step]
            );
            loss.backward();
            if step == 0 {
                let grad = prompt.var_store().variables()["weights"].grad();
                let diff = max_abs_diff(&grad, &tensor(&format!("{variant}.grad_step0")));
                assert!(diff <= 1e-7, "{variant}: first gradient differs by {diff}");
            }
            let norm = opt.clip_grad_norm(v["grad_clip_max_norm"].as_f64().unwrap_or(f64::INFINITY));
            assert!((norm - expected_norms[step]).abs() <= 1e-5, "{variant} step {step}: grad norm {norm}");
            opt.step(config.lr);
            let weights = prompt.var_store().variables()["weights"].shallow_clone();
            let diff = max_abs_diff(&weights, &tensor(&format!("{variant}.weights_after_step{}", step + 1)));
            assert!(diff <= 1e-5, "{variant} step {step}: weights differ by {diff}");
            eprintln!(
                "{variant} step {step} weights diff {diff:e} loss diff {:e}",
                (value - expected_losses[step]).abs()
            );
        }
        let after = tch::no_grad(|| loss_of(&prompt)).double_value(&[]);
        assert!((after - v["loss_after_last_step"].as_f64().unwrap()).abs() <= 1e-5, "{variant}: final loss {after}");
        let weights = prompt.var_store().variables()["weights"].shallow_clone();
        assert!(max_abs_diff(&weights, &tensor(&format!("{variant}.final_weights"))) <= 1e-5);
        let state = opt.state();
        for moment in ["exp_avg", "exp_avg_sq"] {
            let ours = &state.iter().find(|(n, _)| *n == format!("{moment}.weights")).unwrap().1;
            let diff = max_abs_diff(ours, &tensor(&format!("{variant}.{moment}")));
            assert!(diff <= 1e-7, "{variant}: {moment} differs by {diff}");
        }
        assert_eq!(opt.step_count(), v["adam_step"].as_f64().unwrap() as i64);
    }
}
