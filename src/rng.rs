//! Libtorch's random generator is one per process. Every draw the library makes goes through here, under one
//! lock: a seeded prompt init, sampled generation or demo pretraining gives the same result while other threads
//! of the process initialise prompts, sample or build models too.

use std::cell::Cell;
use std::sync::{Mutex, PoisonError};

static TORCH_RNG: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`TORCH_RNG`] (a seeded section may build a prompt, which draws again).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`HELD`] when the section ends, by return or by panic.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        HELD.set(false);
    }
}

fn exclusive<T>(draw: impl FnOnce() -> T) -> T {
    if HELD.get() {
        return draw();
    }
    let _lock = TORCH_RNG.lock().unwrap_or_else(PoisonError::into_inner);
    HELD.set(true);
    let _release = Release;
    draw()
}

/// Runs `draw` with libtorch's generator seeded by `seed`, no other draw of this process in between.
pub fn seeded<T>(seed: u64, draw: impl FnOnce() -> T) -> T {
    exclusive(|| {
        tch::manual_seed(seed as i64);
        draw()
    })
}

/// Runs `draw`, which takes unseeded random numbers, outside every other thread's seeded section.
pub fn unseeded<T>(draw: impl FnOnce() -> T) -> T {
    exclusive(draw)
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
