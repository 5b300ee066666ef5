//! Libtorch's random generator is one per process: seeding it and drawing from it happen under one lock here, so a
//! seeded prompt init, sampled generation or demo pretraining gives the same result while other threads draw too.

use std::sync::{Mutex, PoisonError};

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Runs `draw` with libtorch's generator seeded by `seed`, no other seeded draw of this process in between.
pub fn seeded<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    let _only_user = TORCH_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn draw(seed: u64) -> Vec<i64> {
        seeded(seed, || Vec::<i64>::try_from(Tensor::randperm(1000, (Kind::Int64, Device::Cpu))).unwrap())
    }

    #[test]
    fn seeded_draws_repeat_while_other_threads_seed_and_draw() {
        let expected = [draw(5), draw(8)];
        assert_ne!(expected[0], expected[1]);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let expected = expected.clone();
                std::thread::spawn(move || (0..50).all(|_| draw([5, 8][t % 2]) == expected[t % 2]))
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
    }
}
