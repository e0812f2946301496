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

    /// Takes back an order not taken yet; a rank's are on their way, never taken back.
    pub(crate) fn get_timeout(&self, timeout: Duration) -> crate::Result<Vec<u8>> {
        match self {
            Orders::Local(q) => q.get_timeout(timeout),
            #[cfg(feature = "mpi")]
            Orders::Rank(_) => Err(crate::Error::Empty),
        }
    }
}
