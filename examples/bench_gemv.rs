//! Decoding one token reads every weight once: a token's worth of ruGPT-3-small-shaped f32 products (12 blocks'
//! four layers and the 50,264-row head, ~494 MB of distinct weights, so each product reads DRAM), one row each,
//! through libtorch's BLAS (`mm`) and through ours ([`ruprompts::model::row_times`]), side by side in one run, as
//! GB/s of weights read. The bound is the machine's read bandwidth (`bench/compare.py` measures it).
//!
//! `--shape smollm2`: SmolLM2-135M's products instead (30 blocks of seven layers, width 576, and the 49,152-row
//! head, ~538 MB): narrow rows, where each product's fixed costs weigh more.
//!
//! `cargo run --release --example bench_gemv -- [--threads N] [--shape small|smollm2]`

mod common;

use std::time::Instant;

use anyhow::Result;
use ruprompts::model::row_times;
use tch::{Device, Kind, Tensor};

fn seconds(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() -> Result<()> {
    let flags = common::Flags::parse();
    let device = flags.device()?;
    anyhow::ensure!(device == Device::Cpu, "bench_gemv times the CPU path");
    let shapes: Vec<(i64, i64)> = match flags.value("--shape").unwrap_or("small") {
        "small" => {
            (0..12).flat_map(|_| [(2304, 768), (768, 768), (3072, 768), (768, 3072)]).chain([(50264, 768)]).collect()
        }
        "smollm2" => (0..30)
            .flat_map(|_| [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)])
            .chain([(49152, 576)])
            .collect(),
        other => anyhow::bail!("--shape {other}: the shapes are small (ruGPT-3 small) and smollm2"),
    };
    let products: Vec<(Tensor, Tensor)> = shapes
        .iter()
        .map(|&(n, k)| {
            let w = Tensor::randn([n, k], (Kind::Float, Device::Cpu));
            (w, Tensor::randn([1, k], (Kind::Float, Device::Cpu)))
        })
        .collect();
    let bytes: f64 = shapes.iter().map(|(n, k)| (n * k * 4) as f64).sum();
    // Each product after a libtorch op on its own threads, as in decoding (a layer norm of a 64-token sequence).
    let h = Tensor::randn([1, 64, 768], (Kind::Float, Device::Cpu));
    let norm = || drop(h.layer_norm([768], None::<Tensor>, None::<Tensor>, 1e-5, true));
    let alone = seconds(|| products.iter().for_each(|_| norm()), 5);
    let theirs = seconds(
        || {
            products.iter().for_each(|(w, x)| {
                norm();
                drop(w.mm(&x.tr()))
            })
        },
        5,
    ) - alone;
    let ours = seconds(
        || {
            products.iter().for_each(|(w, x)| {
                norm();
                drop(row_times(w, x, None).expect("AVX2 and FMA"))
            })
        },
        5,
    ) - alone;
    println!("{} threads, {:.0} MB of weights a token", tch::get_num_threads(), bytes / 1e6);
    println!("libtorch mm:     {:5.1} GB/s ({:.1} ms a token)", bytes / theirs / 1e9, theirs * 1e3);
    println!("ours (row_times): {:5.1} GB/s ({:.1} ms a token), {:.2}×", bytes / ours / 1e9, ours * 1e3, theirs / ours);
    Ok(())
}
