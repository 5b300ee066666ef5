//! What the CLI shows of long work: a progress bar on stderr for the work under way (indicatif) and warnings
//! printed above it.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// One bar at a time, for the work started last.
#[derive(Default)]
pub struct Bars(Mutex<Option<ProgressBar>>);

impl Bars {
    fn with(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A panic elsewhere while the lock was held leaves the bar as it was: showing it is all that is lost.
        let mut bar = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut bar);
    }
}

impl Progress for Bars {
    fn start(&self, what: &str, total: u64, done: u64) {
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                .expect("valid template"),
        );
        bar.set_prefix(what.to_string());
        bar.set_position(done);
        self.with(|slot| {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, n: u64, detail: &str) {
        self.with(|slot| {
            if let Some(bar) = slot {
                if !detail.is_empty() {
                    bar.set_message(detail.to_string());
                }
                bar.inc(n);
            }
        });
    }

    fn finish(&self) {
        self.with(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }

    fn warn(&self, message: &str) {
        self.with(|slot| match slot {
            Some(bar) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        });
    }
}
