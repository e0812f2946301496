//! What the manager holds of a worker: a local process with its own orders queue, or (with
//! the feature `mpi`) a rank of an MPI job, reached through the MPI thread of rank 0. The
//! manager treats both alike; a rank is never dead to it (a rank that dies ends the whole MPI
//! job), cannot be killed (a cancelled running task runs to its end there; its result is
//! dropped) and takes no handles.

use crate::Process;
use crate::queues::{PutError, SimpleQueue};
use std::time::Duration;

/// A worker itself.
pub(crate) enum Link {
    Local(Process),
    #[cfg(feature = "mpi")]
    Rank(super::mpi::RankLink),
}

impl Link {
    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Link::Local(p) => p.pid(),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Link::Local(p) => p.name(),
            #[cfg(feature = "mpi")]
            Link::Rank(r) => r.name(),
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        match self {
            Link::Local(p) => p.is_alive(),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => true,
        }
    }

    pub(crate) fn kill(&self) -> crate::Result<()> {
        match self {
            Link::Local(p) => p.kill(),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => Ok(()),
        }
    }

    pub(crate) fn join(&mut self) -> crate::Result<()> {
        match self {
            Link::Local(p) => p.join(),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => Ok(()),
        }
    }

    pub(crate) fn join_timeout(&mut self, timeout: Duration) -> crate::Result<()> {
        match self {
            Link::Local(p) => p.join_timeout(timeout),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => Ok(()),
        }
    }

    /// Under what time from sending a chunk to its report the worker counts as quick (and is
    /// sent more chunks at once): `local` for a local process; for a rank, whose reports come
    /// over MPI through rank 0's MPI thread, the longer time of that trip.
    pub(crate) fn quick(&self, local: Duration) -> Duration {
        match self {
            Link::Local(_) => local,
            #[cfg(feature = "mpi")]
            Link::Rank(_) => local.max(super::mpi::QUICK_TRIP),
        }
    }

    /// How many chunks a quick worker holds at once: `local` for a local process; for a rank,
    /// whose chunks and reports travel in batches, a trip of tens of microseconds or more
    /// apart, and whose chunks cannot be taken back once sent, its own number.
    pub(crate) fn in_flight(&self, local: usize) -> usize {
        match self {
            Link::Local(_) => local,
            #[cfg(feature = "mpi")]
            Link::Rank(_) => super::mpi::QUICK_IN_FLIGHT,
        }
    }

    /// Moves the worker's messages along, for a rank (from the thread that waits for a
    /// result: no hop through rank 0's MPI thread); nothing for a local process.
    #[cfg(feature = "mpi")]
    pub(crate) fn poll(&self) {
        match self {
            Link::Local(_) => {}
            #[cfg(feature = "mpi")]
            Link::Rank(r) => r.poll(),
        }
    }

    pub(crate) fn exitcode(&self) -> Option<i32> {
        match self {
            Link::Local(p) => p.exitcode(),
            #[cfg(feature = "mpi")]
            Link::Rank(_) => Some(0),
        }
    }
}

/// Where a worker's orders go.
pub(crate) enum Orders {
    Local(SimpleQueue<Vec<u8>>),
    #[cfg(feature = "mpi")]
    Rank(super::mpi::RankOrders),
}

impl Orders {
    pub(crate) fn put(&self, order: Vec<u8>) -> Result<(), PutError<Vec<u8>>> {
        match self {
            Orders::Local(q) => q.put(order),
            #[cfg(feature = "mpi")]
            Orders::Rank(r) => r.put(order),
        }
    }

    /// Puts a copy of an encoded order (see [`put`](Orders::put)).
    pub(crate) fn put_slice(&self, order: &[u8]) -> crate::Result<()> {
        match self {
            Orders::Local(q) => q.put_slice(order),
            #[cfg(feature = "mpi")]
            Orders::Rank(r) => r.put(order.to_vec()).map_err(|_| crate::Error::PoolNotRunning),
        }
    }

    /// Whether the worker takes several chunks in one order (`Order::Many`): a local
    /// process does; a rank's orders travel batched by MPI already, one chunk each.
    pub(crate) fn batches(&self) -> bool {
        match self {
            Orders::Local(_) => true,
            #[cfg(feature = "mpi")]
            Orders::Rank(_) => false,
        }
    }

    /// Takes back an order not taken yet, if one is there (waiting at most `lock_wait` for
    /// a worker that holds the queue); a rank's are on their way, never taken back.
    pub(crate) fn take_back(&self, lock_wait: Duration) -> crate::Result<Vec<u8>> {
        match self {
            Orders::Local(q) => {
                let mut order = Vec::new();
                q.get_present_into(&mut order, lock_wait)?;
                Ok(order)
            }
            #[cfg(feature = "mpi")]
            Orders::Rank(_) => Err(crate::Error::Empty),
        }
    }
}
