//! How long work reports on itself: the library calls the [`Progress`] it is given (a training run, an
//! evaluation, building the demo model, decoding), and the caller decides what to show. The CLI draws bars and
//! prints warnings on stderr; tests and library users who want quiet pass [`Silent`].

/// What long work says while it runs. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// Work of `total` steps starts (`what`: "training", "TERRa zero-shot", …), `done` of them already done (a
    /// resumed run, cached items).
    fn start(&self, _what: &str, _total: u64, _done: u64) {}
    /// `n` more steps are done; `detail` (may be empty) says how it goes ("loss 0.6931").
    fn advance(&self, _n: u64, _detail: &str) {}
    /// The work started last is over.
    fn finish(&self) {}
    /// Something the user should know that is not an error: rows left out, text cut to fit.
    fn warn(&self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}
