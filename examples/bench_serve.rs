//! Serving throughput: `ruprompts serve`'s HTTP server in-process on the ruGPT-3-small-shaped model (random
//! weights) with a 20-token prompt, the same requests sent one at a time and by 8 and 32 concurrent clients over
//! 127.0.0.1. Each request is ~12 text tokens and exactly `--new-tokens` greedy tokens (min_tokens holds off eos);
//! tokens/s counts new tokens, latency is per request, from sending to the whole answer. What one-at-a-time
//! serving gets is the baseline: batching's gain is the ratio.
//!
//! `cargo run --release --example bench_serve -- [--requests N] [--new-tokens N] [--threads N] [--device cpu|cuda]`

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ruprompts::prompt::MultiPrompt;
use ruprompts::serve::{serve, Connections, Limits, Options, Served};
use serde_json::json;

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let requests = flags.number("--requests", 64)?;
    let new_tokens = flags.number("--new-tokens", 32)?;
    let device = flags.device()?;
    let [_, (name, model)] = common::models(device)?;
    let [_, mut tokenizer] = common::tokenizers()?;
    let (prompt, _) = common::prefix_prompt(&model, common::PROMPT)?;
    let prompts = MultiPrompt::new(vec![("p".into(), prompt)], &mut tokenizer)?;
    let options = Options {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        api_key: None,
        limits: Limits { max_batch: 32, max_batch_tokens: 1 << 20, max_queue: 1 << 16 },
        max_n: 1,
        max_body_bytes: 1 << 20,
        max_logprobs: 0,
        connections: Connections { max: 1024, header_timeout: Duration::from_secs(30) },
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let served = Served { base: "small".into(), model, tokenizer, prompts: Some(prompts) };
    // The server runs until the process ends.
    std::thread::spawn(move || {
        serve(served, options, |address| {
            let _ = tx.send(address);
        })
    });
    let address = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| anyhow!("the server did not start"))?;
    let url = format!("http://{address}/v1/completions");
    let texts = ["Сегодня в Москве весь день шёл сильный дождь, а вечером", "Кот сидит на окне и смотрит, как"];
    let body = |i: usize| json!({"model": "p", "prompt": texts[i % 2], "max_tokens": new_tokens, "min_tokens": new_tokens, "temperature": 0});
    let send = |i: usize| -> Result<f64> {
        let start = Instant::now();
        let answer: serde_json::Value = ureq::post(&url).send_json(body(i))?.into_json()?;
        anyhow::ensure!(answer["usage"]["completion_tokens"] == new_tokens, "short answer: {answer}");
        Ok(start.elapsed().as_secs_f64())
    };
    send(0)?;
    println!(
        "{name}, {}-token prompt + ~{} text tokens, {new_tokens} new tokens a request, greedy, {requests} requests, \
         {device:?}, {} threads\n",
        common::PROMPT,
        common::GEN_TEXT,
        tch::get_num_threads()
    );
    println!("| concurrent clients | seconds | new tokens/s | vs one at a time | p50 latency (s) | p99 latency (s) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut baseline = None;
    for clients in [1, 8, 32] {
        let start = Instant::now();
        let mut latencies: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let send = &send;
                    s.spawn(move || (c..requests).step_by(clients).map(send).collect::<Result<Vec<f64>>>())
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("a client thread")).collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let seconds = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        let rate = (requests * new_tokens) as f64 / seconds;
        let gain = rate / *baseline.get_or_insert(rate);
        println!("| {clients} | {seconds:.1} | {rate:.1} | {gain:.2}× | {:.2} | {:.2} |", at(0.5), at(0.99));
    }
    Ok(())
}
