//! ruprompts: continuous prompt tuning ("P-tuning") of frozen GPT-2-style language models on libtorch.

pub mod device;
pub mod generate;
pub mod model;
pub mod tokenizer;
