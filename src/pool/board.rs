//! A worker's board: a few words in shared memory that its manager reads and writes without
//! a message. The worker notes there the chunk it begins; the manager notes the chunks the
//! worker is to pass over, cancelled or to be sent to another worker after the worker took
//! them (several come in one order) but before it began them. Together the two notes say,
//! without a race, whether such a chunk will run: see [`Board::ask`] and [`Board::withdraw`].

use crate::heap::{Shared, SharedState};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Chunks the manager may ask one worker to pass over at once; past that, a cancel of a
/// chunk the worker holds treats it as running (its worker is replaced). As many as one
/// order brings (the manager's `BATCH`).
pub(crate) const SKIPS: usize = 16;

#[repr(C)]
struct State {
    /// The place, in the stream of chunks sent to the worker, of the one it began last (0:
    /// none yet). A place, not a task number: a chunk taken back from a worker may be sent
    /// to it again, behind the first copy it passes over.
    begun: AtomicU64,
    /// Tasks to pass over (0: a free place).
    skip: [AtomicU64; SKIPS],
}

// SAFETY: atomics only; any value is a task number (0: none), never used as an index.
unsafe impl SharedState for State {}

/// One worker's board, held by the worker and by its manager.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Board(Shared<State>);

impl Board {
    pub(crate) fn new() -> std::io::Result<Board> {
        Ok(Board(Shared::new(0)?))
    }

    /// In the worker, before it runs `task`, sent to it at place `seq` of its stream: notes
    /// the place as begun, and says whether to run the task (false: the manager asked it to
    /// be passed over, cancelled or sent to another worker).
    pub(crate) fn begin(&self, task: u64, seq: u64) -> bool {
        let state = self.0.state();
        // Noted before the requests are read, and the manager asks before it reads this
        // note (all `SeqCst`): at least one side sees the other's write.
        state.begun.store(seq, SeqCst);
        !state.skip.iter().any(|s| s.load(SeqCst) == task && s.compare_exchange(task, 0, SeqCst, SeqCst).is_ok())
    }

    /// In the manager: asks the worker to pass over `task`, which it took and has not
    /// reported. Returns where the request is, and the place of the chunk the worker had
    /// begun last when it was made (read after asking: the worker begins any later chunk
    /// after this reading, and then sees the request); `None` if there is no room to ask.
    pub(crate) fn ask(&self, task: u64) -> Option<(usize, u64)> {
        let state = self.0.state();
        let place = state.skip.iter().position(|p| p.compare_exchange(0, task, SeqCst, SeqCst).is_ok())?;
        Some((place, state.begun.load(SeqCst)))
    }

    /// In the manager: takes back the request at `place` for `task`; false if the worker took
    /// it first (it passes over the task).
    pub(crate) fn withdraw(&self, place: usize, task: u64) -> bool {
        self.0.state().skip.get(place).is_some_and(|p| p.compare_exchange(task, 0, SeqCst, SeqCst).is_ok())
    }
}
