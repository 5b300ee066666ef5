//! `ruprompts serve`: the OpenAI-compatible server of one model and its prompts.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use super::bars::Bars;
use super::generate::load_prompt;
use super::Placement;
use crate::model::Backbone;
use crate::prompt::MultiPrompt;
use crate::resolve;
use crate::serve::{serve, Connections, Limits, Options, Served};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The frozen model: a folder, a Hub id or `demo` (default: the model the first prompt was trained on). Its
    /// id in the API is this value, or --served-model-name.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A prompt to serve as KEY=DIR or KEY=owner/name (a Hub id); repeat for more. A request names it as
    /// `"model": "KEY"`.
    #[arg(long, value_name = "KEY=DIR|KEY=HUB-ID")]
    pub prompt: Vec<String>,
    /// The model's id in the API (default: --model as given).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Address to listen on; 127.0.0.1 keeps the server on this machine.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every route but /health (an empty key is refused, not taken as
    /// none).
    #[arg(long, env = "RUPROMPTS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The most rows (sequences) decoded together.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// The most tokens the running batch may come to hold (each row's prompt and max_tokens); a larger request
    /// decodes alone.
    #[arg(long, default_value_t = 32768)]
    pub max_batch_tokens: usize,
    /// The most sequences (prompts × n) that may wait for room in the batch, all requests together. A request
    /// that would pass it gets 429 with Retry-After; one larger than it alone, 400. Requests take turns in the
    /// batch, so a large one does not hold the others back.
    #[arg(long, default_value_t = 4096)]
    pub max_queue: usize,
    /// The most sequences one request may ask for (`n`).
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// The largest request body in bytes (larger ones get 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// The most alternatives per token a request's `logprobs` may ask for.
    #[arg(long, default_value_t = 20)]
    pub max_logprobs: usize,
    /// The most connections open at once; more wait until one closes.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's head (an idle keep-alive connection counts as
    /// sending one): past it the connection is closed, so silent sockets cannot hold the server.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub header_timeout: f64,
    #[command(flatten)]
    pub placement: Placement,
}

/// The smallest `--max-body-bytes`: a minimal completion request with room for a short prompt.
const MIN_BODY_BYTES: usize = 256;

pub fn run(args: ServeArgs) -> Result<()> {
    ensure!(args.max_batch >= 1 && args.max_n >= 1, "--max-batch and --max-n must be at least 1");
    ensure!(
        args.max_queue >= args.max_n,
        "--max-queue {} is below --max-n {}: no request with n = --max-n would fit",
        args.max_queue,
        args.max_n
    );
    ensure!(args.max_batch_tokens >= 1, "--max-batch-tokens must be at least 1");
    ensure!(args.max_connections >= 1, "--max-connections must be at least 1");
    let header_timeout = Duration::try_from_secs_f64(args.header_timeout)
        .ok()
        .filter(|t| !t.is_zero() && t.as_secs() < 1 << 32)
        .with_context(|| format!("--header-timeout {}: give seconds above 0", args.header_timeout))?;
    ensure!(
        args.max_body_bytes >= MIN_BODY_BYTES,
        "--max-body-bytes {}: no request fits in fewer than {MIN_BODY_BYTES} bytes",
        args.max_body_bytes
    );
    if let Some(key) = &args.api_key {
        // An empty key would serve without one, silently: whoever set it meant a key.
        ensure!(
            !key.is_empty() && !key.chars().any(|c| c.is_whitespace() || c.is_control()),
            "--api-key (or RUPROMPTS_API_KEY) is {}: give a key without spaces, or unset it to serve without one",
            if key.is_empty() { "empty" } else { "not sendable as a bearer token (spaces or control characters)" }
        );
    }
    let device = args.placement.device().resolve()?;
    let mut loaded = Vec::new();
    for spec in &args.prompt {
        ensure!(spec.contains('='), "--prompt {spec}: give each prompt a key, as KEY=DIR");
        let (key, prompt) = load_prompt(spec, device)?;
        loaded.push((key.expect("KEY=DIR has a key"), prompt));
    }
    let named = match (&args.model, loaded.first()) {
        (Some(model), _) => model.clone(),
        (None, Some((key, prompt))) => match &prompt.pretrained_model_name {
            Some(name) => PathBuf::from(name),
            None => bail!("the prompt {key} names no model (config.pretrained_model_name): pass --model"),
        },
        (None, None) => bail!("nothing to serve: pass --model (and --prompt KEY=DIR for each prompt)"),
    };
    let base = args.served_model_name.clone().unwrap_or_else(|| named.to_string_lossy().into_owned());
    if let Some((key, _)) = loaded.iter().find(|(k, _)| *k == base) {
        bail!("the prompt key {key} is also the model's id: pick another key or --served-model-name");
    }
    let Backbone { model, mut tokenizer, .. } =
        resolve::backbone(&args.placement.model(named), &Bars::default()).context("--model")?;
    let prompts = match loaded.is_empty() {
        true => None,
        false => Some(MultiPrompt::new(loaded, &mut tokenizer)?),
    };
    if args.api_key.is_none() && !args.host.is_loopback() {
        eprintln!("serve: no --api-key, so anyone who can reach {} may use this server", args.host);
    }
    let options = Options {
        host: args.host,
        port: args.port,
        api_key: args.api_key,
        limits: Limits {
            max_batch: args.max_batch,
            max_batch_tokens: args.max_batch_tokens,
            max_queue: args.max_queue,
        },
        max_n: args.max_n,
        max_body_bytes: args.max_body_bytes,
        max_logprobs: args.max_logprobs,
        connections: Connections { max: args.max_connections, header_timeout },
    };
    let keys: Vec<String> = prompts.iter().flat_map(|m| m.keys().map(str::to_string)).collect();
    let served = Served { base: base.clone(), model, tokenizer, prompts };
    serve(served, options, |address| {
        println!(
            "serving {base}{} on http://{address}/v1 (Ctrl-C stops)",
            match keys.is_empty() {
                true => String::new(),
                false => format!(" with prompts {}", keys.join(", ")),
            }
        );
    })
}
