//! The processes of one job: this process alone, or the ranks `mpirun` started (the `mpi` feature, over the
//! system's Open MPI). Training sums prompt gradients over them; evaluation splits items among them.

use anyhow::{bail, Result};

/// Keeps MPI up for the life of the program (finalized on drop); a plain run holds nothing.
pub struct Session {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

impl Session {
    /// Finalizes MPI before the process exits (`exit` runs no destructors); a plain run has nothing to end.
    pub fn end(self) {}
}

/// How many processes `mpirun` (or another PMI launcher) says this job has, from the environment it sets.
fn launched_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .and_then(|v| v.parse().ok())
}

/// Starts MPI when this process was launched by `mpirun`; a plain run stays a single process. A build without
/// the `mpi` feature launched as several ranks is refused: each would run the whole job and write the same files.
pub fn init() -> Result<Session> {
    let size = launched_size().unwrap_or(1);
    #[cfg(feature = "mpi")]
    {
        let universe = if launched_size().is_some() { mpi::initialize() } else { None };
        if size > 1 && universe.is_none() {
            bail!("launched as {size} MPI ranks, but MPI could not be initialized");
        }
        Ok(Session { _universe: universe })
    }
    #[cfg(not(feature = "mpi"))]
    {
        if size > 1 {
            bail!(
                "launched as {size} MPI ranks, but this ruprompts was built without MPI: rebuild it with \
                 `cargo build --release --features mpi` (needs Open MPI's libopenmpi-dev and libclang-dev)"
            );
        }
        Ok(Session {})
    }
}

/// This process's place among the job's ranks, with the collective operations training and evaluation use.
/// Every rank must make the same calls in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranks {
    pub rank: usize,
    pub size: usize,
}

impl Ranks {
    /// A job of one process.
    pub fn single() -> Self {
        Self { rank: 0, size: 1 }
    }

    /// The ranks of the running job: MPI's world once [`init`] started it, else this process alone.
    pub fn world() -> Self {
        #[cfg(feature = "mpi")]
        if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
            use mpi::traits::Communicator;
            let world = mpi::topology::SimpleCommunicator::world();
            return Self { rank: world.rank() as usize, size: world.size() as usize };
        }
        Self::single()
    }

    /// The rank that writes files and reports.
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Replaces `values` with their element-wise sum over all ranks.
    pub fn sum_f32(&self, values: &mut [f32]) {
        if self.size > 1 {
            self.all_reduce_sum(values);
        }
    }

    /// Replaces `values` with their element-wise sum over all ranks.
    pub fn sum_f64(&self, values: &mut [f64]) {
        if self.size > 1 {
            self.all_reduce_sum(values);
        }
    }

    #[cfg(feature = "mpi")]
    fn all_reduce_sum<T: mpi::datatype::Equivalence + Copy>(&self, values: &mut [T]) {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        let send = values.to_vec();
        mpi::topology::SimpleCommunicator::world().all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    #[cfg(not(feature = "mpi"))]
    fn all_reduce_sum<T>(&self, _values: &mut [T]) {
        unreachable!("a build without MPI has one rank")
    }

    /// Rank 0's `value` on every rank.
    pub fn broadcast_i64(&self, value: i64) -> i64 {
        #[cfg(feature = "mpi")]
        if self.size > 1 {
            use mpi::traits::{Communicator, Root};
            let mut value = value;
            mpi::topology::SimpleCommunicator::world().process_at_rank(0).broadcast_into(&mut value);
            return value;
        }
        value
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if self.size > 1 {
            use mpi::collective::CommunicatorCollectives;
            mpi::topology::SimpleCommunicator::world().barrier();
        }
    }

    /// Ends the whole job (every rank) with `code`: one rank's error must not leave the others waiting in a
    /// collective call.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if self.size > 1 {
            use mpi::traits::Communicator;
            mpi::topology::SimpleCommunicator::world().abort(code);
        }
        std::process::exit(code)
    }
}
