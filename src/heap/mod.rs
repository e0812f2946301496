//! Where shared objects live (Python's `multiprocessing.heap`): blocks cut from a few large
//! shared files, the arenas, so that thousands of locks, values and queues hold one
//! descriptor between them, not one each. The kernel frees an arena when the last process
//! holding it lets go, and nothing ever appears in `/dev/shm`.
//!
//! - `arena.rs`: the files, and how blocks are cut from them and given back.
//! - `block.rs`: a block as one process holds it, and the count of processes holding it
//!   (which says when its memory may be used again).
//!
//! A [`Shared<S>`] is a typed view of a state struct `S` at an offset in a block. The state
//! is made of atomics only ([`SharedState`]): another process may write anything into it, and
//! any bit pattern is still a valid value, so a hostile or crashed peer can confuse the
//! object's logic (which validates what it reads) but never this process's memory safety.
//! A view travels to a child as its arena's descriptor (once, however many objects share it)
//! and the block's place in it; the child maps it and checks that the state fits before it
//! makes the view.

mod arena;
mod block;

pub(crate) use block::{ForkPins, Ticket, allocator_fd, before_fork, release_all};

use crate::reduction::{RecvFd, SendFd};
use block::Block;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

/// A type that may live in shared memory and be read while other processes write it.
///
/// # Safety
/// Every bit pattern must be a valid value (atomics, or plain integers only ever reached
/// through atomics), all zeroes must be a valid initial state, and the type must be `Sync`.
pub(crate) unsafe trait SharedState: Sync {}

/// Where an object's state goes in its block: past the block's header, on its own cache line.
pub(crate) const FIRST: usize = std::mem::size_of::<block::BlockHeader>();

/// A typed view of a `S` at `offset` in a shared block. Clones share the block.
pub(crate) struct Shared<S> {
    block: Arc<Block>,
    offset: usize,
    _state: PhantomData<S>,
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared { block: self.block.clone(), offset: self.offset, _state: PhantomData }
    }
}

impl<S: SharedState> Shared<S> {
    /// A new block holding a zeroed `S` at [`FIRST`], followed by `extra` zeroed bytes, all
    /// mapped.
    pub(crate) fn new(extra: usize) -> io::Result<Shared<S>> {
        Shared::with_layout(extra, 64, None)
    }

    /// As [`new`](Shared::new), with the block aligned to `align` (a power of two, at most a
    /// page): a larger alignment than 64 puts it on a page of its own.
    pub(crate) fn aligned(extra: usize, align: usize) -> io::Result<Shared<S>> {
        Shared::with_layout(extra, align, None)
    }

    /// As [`new`](Shared::new), with only the first `first` bytes of the block mapped at
    /// first (the state among them): the rest is reached through [`reach`](Shared::reach),
    /// which maps it as it is needed. For a queue's ring, whose address space is large and
    /// mostly unused.
    pub(crate) fn lazy(extra: usize, first: usize) -> io::Result<Shared<S>> {
        Shared::with_layout(extra, arena::PAGE as usize, Some(first))
    }

    fn with_layout(extra: usize, align: usize, first: Option<usize>) -> io::Result<Shared<S>> {
        let len = FIRST
            .checked_add(std::mem::size_of::<S>())
            .and_then(|l| l.checked_add(extra))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))? as u64;
        let first = first.map_or(len, |f| (f.max(FIRST + std::mem::size_of::<S>()) as u64).min(len));
        let block = Block::allocate(len, first, align.max(std::mem::align_of::<S>()) as u64)?;
        Ok(Shared { block, offset: FIRST, _state: PhantomData })
    }

    /// A new block alone in a file of its own: the file's descriptor (see
    /// [`alone_fd`](Shared::alone_fd)) gives whoever gets it this block and nothing else.
    pub(crate) fn alone(extra: usize) -> io::Result<Shared<S>> {
        let len = (FIRST + std::mem::size_of::<S>()).checked_add(extra).ok_or(io::ErrorKind::InvalidInput)?;
        Ok(Shared { block: Block::alone(len as u64)?, offset: FIRST, _state: PhantomData })
    }

    /// The block alone in the file behind `fd` (made by [`alone`](Shared::alone) in another
    /// process), checked to be one, and to hold a `S`.
    pub(crate) fn from_alone_fd(fd: OwnedFd) -> io::Result<Shared<S>> {
        let block = Block::open_alone(fd)?;
        Shared::<S>::check(&block, FIRST)?;
        Ok(Shared { block, offset: FIRST, _state: PhantomData })
    }

    /// The descriptor of the file a block made by [`alone`](Shared::alone) is alone in.
    pub(crate) fn alone_fd(&self) -> BorrowedFd<'_> {
        self.block.fd()
    }

    /// A view of the `T` at `offset` in the same block, checked to fit and be aligned.
    pub(crate) fn view<T: SharedState>(&self, offset: usize) -> io::Result<Shared<T>> {
        Shared::<T>::check(&self.block, offset)?;
        Ok(Shared { block: self.block.clone(), offset, _state: PhantomData })
    }

    fn check(block: &Block, offset: usize) -> io::Result<()> {
        let end = offset.checked_add(std::mem::size_of::<S>());
        let (base, mapped) = block.base();
        if offset < FIRST
            || end.is_none_or(|end| end > mapped)
            || !(base as usize + offset).is_multiple_of(std::mem::align_of::<S>())
        {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "shared object out of its block"));
        }
        Ok(())
    }

    /// The state.
    #[inline]
    pub(crate) fn state(&self) -> &S {
        // SAFETY: `check` (or the constructor) made sure an aligned `S` fits at `offset` in
        // the block's first window, which lives as long as `self`; `S: SharedState` makes any
        // content a valid `S`.
        unsafe { &*self.block.base().0.add(self.offset).cast::<S>() }
    }

    /// The mapped bytes after the state (`extra` in `new`; for a lazy block, what the first
    /// window holds of them).
    pub(crate) fn tail(&self) -> (*mut u8, usize) {
        let start = self.offset + std::mem::size_of::<S>();
        let (base, mapped) = self.block.base();
        // SAFETY: `start` is within the first window (checked at construction).
        (unsafe { base.add(start) }, mapped - start)
    }

    /// Where the state's offset is in its block.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// The block's length: the state's offset, its size and the bytes after it.
    pub(crate) fn block_len(&self) -> u64 {
        self.block.len()
    }

    /// The block's first byte in a window of this process's that maps at least its first
    /// `end` bytes; mapped now if none does yet. The pointer stays valid as long as `self`.
    #[inline]
    pub(crate) fn reach(&self, end: usize) -> io::Result<*mut u8> {
        self.block.reach(end)
    }

    /// Gives the memory behind bytes `[from, from + len)` of the block back to the kernel, for
    /// every process: they read as zeros afterwards. Page-aligned, in a block that is not
    /// small. The caller makes sure nobody uses those bytes meanwhile.
    pub(crate) fn discard(&self, from: u64, len: u64) -> io::Result<()> {
        self.block.discard(from, len)
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    fd: SendFd<'a>,
    block: u64,
    len: u64,
    first: u64,
    offset: u64,
}

#[derive(Deserialize)]
struct WireIn {
    fd: RecvFd,
    block: u64,
    len: u64,
    first: u64,
    offset: u64,
}

impl<S: SharedState> Serialize for Shared<S> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let (fd, block, len, first) = self.block.wire();
        let done = WireOut { fd: SendFd(fd), block, len, first, offset: self.offset as u64 }.serialize(s)?;
        // The child takes over a hold of ours on the block (given back if it never gets it).
        if let Some(ticket) = Ticket::take(&self.block) {
            crate::reduction::add_ticket(ticket);
        }
        Ok(done)
    }
}

impl<'de, S: SharedState> Deserialize<'de> for Shared<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shared<S>, D::Error> {
        let w = WireIn::deserialize(d)?;
        let offset = usize::try_from(w.offset).map_err(crate::error::de_custom)?;
        let block = block::attach(w.fd.0, w.block, w.len, w.first).map_err(crate::error::de_custom)?;
        Shared::<S>::check(&block, offset).map_err(crate::error::de_custom)?;
        Ok(Shared { block, offset, _state: PhantomData })
    }
}

#[cfg(test)]
mod tests;
