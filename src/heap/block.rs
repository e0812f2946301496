//! Blocks: one object's memory in an arena, as this process holds it, and the count of the
//! processes that hold it, which says when the memory may be used again.
//!
//! Each block starts with a small header in shared memory: a mark, the block's length, and
//! `refs`, the number of holds on it. A process holds a block once however many handles it
//! has on it (they share one [`Block`]), and lets go when the last goes, or when it ends as
//! a child of ours. Handing a block to another process adds a hold first, which the receiver
//! takes over: in a child's arguments (a ticket, given back if the child never got them) and
//! across a fork (a pin for each block the child inherits). The last to let go frees the
//! block. A process killed while holding a block never lets go: the block stays unused until
//! the arena itself goes, with the last process that maps it.

use super::arena::{self, Allocator, Arena, CHUNK, FileId, PAGE, SMALL_MAX};
use crate::sys::proc;
use crate::sys::shm::Mapping;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

const BLOCK_MAGIC: u32 = 0x6d70_626b; // "mpbk"

/// The header at the start of every block; the object's state follows at [`super::FIRST`].
#[repr(C, align(64))]
pub(super) struct BlockHeader {
    magic: AtomicU32,
    refs: AtomicU32,
    len: AtomicU64,
}

#[cfg(test)]
impl BlockHeader {
    pub(super) fn refs_for_test(&self) -> u32 {
        self.refs.load(Ordering::Relaxed)
    }
}

/// Where a block's bytes are mapped here.
enum Place {
    /// In a chunk mapping, which the other small blocks of the chunk share.
    Small { chunk: u64, map: Arc<Mapping> },
    /// In windows of its own: the first one, then larger ones as the block is used further
    /// out (a queue's ring). Old windows stay until the block goes, since other threads may
    /// still be using addresses in them.
    Big { windows: Mutex<Vec<Mapping>>, ptr: AtomicPtr<u8>, len: AtomicUsize },
}

/// A block as this process holds it.
pub(crate) struct Block {
    arena: Arc<Arena>,
    offset: u64,
    len: u64,
    /// The block's first byte in the first window, which stays mapped as long as `self`.
    base: NonNull<u8>,
    first: usize,
    place: Place,
    /// Whether this process's hold is counted in `refs` (not for a block alone in its file).
    counted: bool,
    /// Set once this hold is given back.
    released: AtomicBool,
}

// SAFETY: the block's bytes are reached only through atomics or the objects' own locks, and
// the mappings live as long as the block.
unsafe impl Send for Block {}
// SAFETY: as above.
unsafe impl Sync for Block {}

/// The process whose holds the blocks in memory count for: 0 before the first, -1 after
/// [`release_all`]. A fork child that does not take over its parent's holds (one forked
/// outside this crate) leaves them uncounted, since its drops would give back its parent's.
static OWNER: AtomicI32 = AtomicI32::new(0);

fn owner_is_me() -> bool {
    let me = proc::cached_pid();
    match OWNER.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => true,
        Err(owner) => owner == me,
    }
}

#[derive(Default)]
struct Registry {
    arenas: HashMap<FileId, Weak<Arena>>,
    blocks: HashMap<(FileId, u64), Weak<Block>>,
    /// The blocks map's size after its last pruning.
    pruned: usize,
    alloc: Option<Allocator>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    fn remember(&mut self, block: &Arc<Block>) {
        if self.blocks.len() >= 2 * self.pruned.max(64) {
            self.blocks.retain(|_, b| b.strong_count() > 0);
            self.arenas.retain(|_, a| a.strong_count() > 0);
            self.pruned = self.blocks.len();
        }
        self.blocks.insert((block.arena.id(), block.offset), Arc::downgrade(block));
    }

    /// The allocator, on the first arena this process knows (its parent's, often), or a new one.
    fn allocator(&mut self) -> io::Result<&mut Allocator> {
        if self.alloc.is_none() {
            let arena = match self.arenas.values().find_map(Weak::upgrade) {
                Some(arena) => arena,
                None => self.new_arena()?,
            };
            self.alloc = Some(Allocator::new(arena));
        }
        Ok(self.alloc.as_mut().expect("set above"))
    }

    fn new_arena(&mut self) -> io::Result<Arc<Arena>> {
        let arena = Arc::new(Arena::create()?);
        self.arenas.insert(arena.id(), Arc::downgrade(&arena));
        Ok(arena)
    }
}

impl Block {
    /// A new zeroed block of `len` bytes, its first `first` bytes mapped (all of a small one).
    /// `align` above 64 makes it a big block, which starts on a page.
    pub(super) fn allocate(len: u64, first: u64, align: u64) -> io::Result<Arc<Block>> {
        let mut reg = registry();
        let reg = reg.get_or_insert_with(Registry::default);
        let counted = owner_is_me();
        for _ in 0..2 {
            let alloc = reg.allocator()?;
            let arena = alloc.arena.clone();
            let made = if len <= SMALL_MAX && align <= arena::SLOT_MIN {
                alloc.take_small(len)?.map(|(offset, chunk, map)| Block::small(arena, offset, len, chunk, map, counted))
            } else {
                match arena.take_big(len) {
                    Some(offset) => Some(Block::big(arena, offset, len, first, counted)?),
                    None => None,
                }
            };
            if let Some(block) = made {
                block.header().len.store(len, Ordering::Relaxed);
                block.header().refs.store(1, Ordering::Relaxed);
                block.header().magic.store(BLOCK_MAGIC, Ordering::Release);
                let block = Arc::new(block);
                reg.remember(&block);
                return Ok(block);
            }
            // The arena is spent: go on in a new one.
            let fresh = reg.new_arena()?;
            reg.alloc = Some(Allocator::new(fresh));
        }
        Err(io::Error::other("a shared object larger than an arena"))
    }

    /// A big block of `len` bytes alone in a file of its own, whose descriptor is
    /// [`Block::fd`]: for memory to share with one peer and nothing else (a manager's mailbox).
    pub(super) fn alone(len: u64) -> io::Result<Arc<Block>> {
        let arena = Arc::new(Arena::create_alone(CHUNK + len)?);
        let block = Block::big(arena, CHUNK, len, len, false)?;
        block.header().len.store(len, Ordering::Relaxed);
        block.header().magic.store(BLOCK_MAGIC, Ordering::Release);
        Ok(Arc::new(block))
    }

    /// The block alone in the file behind `fd` (see [`Block::alone`]).
    pub(super) fn open_alone(fd: OwnedFd) -> io::Result<Arc<Block>> {
        let arena = Arc::new(Arena::open(fd)?);
        let room = arena.span() - CHUNK;
        let mut block = Block::big(arena, CHUNK, room, room, false)?;
        // The length its maker gave it, if it fits the file (the file's size comes from the
        // kernel; the header, from whoever wrote it).
        let len = block.header().len.load(Ordering::Relaxed);
        if len > room || len < std::mem::size_of::<BlockHeader>() as u64 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a live multiprocess shared object"));
        }
        block.check_header(len)?;
        block.len = len;
        Ok(Arc::new(block))
    }

    fn small(arena: Arc<Arena>, offset: u64, len: u64, chunk: u64, map: Arc<Mapping>, counted: bool) -> Block {
        // SAFETY: the block lies inside its chunk (`offset - chunk + len <= CHUNK`, by the
        // allocator or checked in `attach`), which `map` maps.
        let base = unsafe { NonNull::new_unchecked(map.as_ptr().add((offset - chunk) as usize)) };
        let place = Place::Small { chunk, map };
        Block { arena, offset, len, base, first: len as usize, place, counted, released: AtomicBool::new(false) }
    }

    fn big(arena: Arc<Arena>, offset: u64, len: u64, first: u64, counted: bool) -> io::Result<Block> {
        let first = first.clamp(PAGE, len.max(PAGE)) as usize;
        let window = Mapping::new(arena.fd(), offset, first)?;
        let base = NonNull::new(window.as_ptr()).ok_or_else(|| io::Error::other("null mapping"))?;
        let place = Place::Big {
            ptr: AtomicPtr::new(base.as_ptr()),
            len: AtomicUsize::new(first),
            windows: Mutex::new(vec![window]),
        };
        Ok(Block { arena, offset, len, base, first, place, counted, released: AtomicBool::new(false) })
    }

    fn header(&self) -> &BlockHeader {
        // SAFETY: every block is at least a header long and starts 64-aligned in its mapping;
        // the header is atomics only.
        unsafe { &*self.base.as_ptr().cast::<BlockHeader>() }
    }

    fn check_header(&self, len: u64) -> io::Result<()> {
        let h = self.header();
        if h.magic.load(Ordering::Acquire) != BLOCK_MAGIC || h.len.load(Ordering::Relaxed) != len {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a live multiprocess shared object"));
        }
        Ok(())
    }

    /// The block's first byte, with `first` bytes mapped from it for as long as `self`.
    pub(super) fn base(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.first)
    }

    /// The block's length.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The block's file, offset in it, length, and bytes to map at first (0 for a small
    /// block, which lives in a chunk): what a receiver needs for [`attach`].
    pub(super) fn wire(&self) -> (std::os::fd::BorrowedFd<'_>, u64, u64, u64) {
        let first = if matches!(self.place, Place::Small { .. }) { 0 } else { self.first as u64 };
        (self.arena.fd(), self.offset, self.len, first)
    }

    /// The descriptor of the file a block made by [`Block::alone`] is alone in.
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.arena.fd()
    }

    /// A pointer to the block's first byte in a window that maps at least `end` bytes of it.
    pub(super) fn reach(&self, end: usize) -> io::Result<*mut u8> {
        let Place::Big { windows, ptr, len } = &self.place else {
            return if end <= self.first { Ok(self.base.as_ptr()) } else { Err(out_of_block()) };
        };
        if end <= len.load(Ordering::Acquire) {
            return Ok(ptr.load(Ordering::Relaxed));
        }
        if end as u64 > self.len {
            return Err(out_of_block());
        }
        let mut windows = windows.lock().unwrap_or_else(|e| e.into_inner());
        let have = len.load(Ordering::Acquire);
        if end > have {
            let want = (end.max(2 * have) as u64).next_multiple_of(PAGE).min(self.len.next_multiple_of(PAGE));
            let window = Mapping::new(self.arena.fd(), self.offset, want as usize)?;
            ptr.store(window.as_ptr(), Ordering::Relaxed);
            len.store(want as usize, Ordering::Release);
            windows.push(window);
        }
        Ok(ptr.load(Ordering::Relaxed))
    }

    /// Gives the pages of `[from, from + len)` of a big block back to the kernel (page-aligned).
    pub(super) fn discard(&self, from: u64, len: u64) -> io::Result<()> {
        if !matches!(self.place, Place::Big { .. })
            || !from.is_multiple_of(PAGE)
            || from.checked_add(len).is_none_or(|end| end > self.len.next_multiple_of(PAGE))
        {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        crate::sys::shm::punch_hole(self.arena.fd(), self.offset + from, len)
    }

    /// Adds a hold, for another process to take over.
    fn add_hold(&self) {
        self.header().refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives one hold back, freeing the block if it was the last.
    fn drop_hold(&self) {
        let refs = &self.header().refs;
        let before = refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1));
        if before == Ok(1) {
            self.free();
        }
    }

    /// Gives a hold back that this process has another of, so it is never the last.
    fn merge_hold(&self) {
        let refs = &self.header().refs;
        let _ = refs.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| (r > 1).then(|| r - 1));
    }

    fn free(&self) {
        self.header().magic.store(0, Ordering::Relaxed);
        match &self.place {
            Place::Small { chunk, map } => arena::free_small(map, *chunk, self.offset, self.len),
            Place::Big { .. } => self.arena.free_big(self.offset, self.len),
        }
    }

    /// This process's hold, given back once.
    fn release(&self) {
        if self.counted && !self.released.swap(true, Ordering::AcqRel) && owner_is_me() {
            self.drop_hold();
        }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.release();
    }
}

fn out_of_block() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "beyond the shared object")
}

/// The block at `offset` in the arena behind `fd`, `len` bytes long with `first` mapped (0:
/// a small block),
/// received from another process with a hold for us to take over. Everything is checked: the
/// file is a sealed arena of ours, the block lies inside it, and its header is live.
pub(super) fn attach(fd: OwnedFd, offset: u64, len: u64, first: u64) -> io::Result<Arc<Block>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("shared object: {what}"));
    let id = crate::sys::shm::file_id(std::os::fd::AsFd::as_fd(&fd))?;
    let mut guard = registry();
    let reg = guard.get_or_insert_with(Registry::default);
    if let Some(block) = reg.blocks.get(&(id, offset)).and_then(Weak::upgrade)
        && block.len == len
    {
        // Ours already: the hold that came with it is one too many.
        block.merge_hold();
        drop(guard);
        return Ok(block);
    }
    let arena = match reg.arenas.get(&id).and_then(Weak::upgrade) {
        Some(arena) => arena,
        None => {
            let arena = Arc::new(Arena::open(fd)?);
            reg.arenas.insert(id, Arc::downgrade(&arena));
            arena
        }
    };
    let end = offset.checked_add(len).ok_or_else(|| bad("length overflows"))?;
    if offset < CHUNK || end > arena.span() || len < std::mem::size_of::<BlockHeader>() as u64 {
        return Err(bad("out of its arena"));
    }
    let counted = owner_is_me();
    let block = if first == 0 {
        // Small: a slot inside one chunk.
        let chunk = offset / CHUNK * CHUNK;
        if len > SMALL_MAX || !(offset - chunk).is_multiple_of(arena::SLOT_MIN) || end > chunk + CHUNK {
            return Err(bad("a small block out of place"));
        }
        let map = arena.chunk(chunk)?;
        Block::small(arena, offset, len, chunk, map, counted)
    } else {
        if !offset.is_multiple_of(PAGE) || first > len.next_multiple_of(PAGE) {
            return Err(bad("a big block out of place"));
        }
        Block::big(arena, offset, len, first, counted)?
    };
    block.check_header(len)?;
    let block = Arc::new(block);
    reg.remember(&block);
    Ok(block)
}

/// A hold on a block taken for a child's arguments: the child takes it over, or, if the
/// arguments never reach it, it is given back when this drops.
pub(crate) struct Ticket {
    block: Option<Arc<Block>>,
}

impl Ticket {
    pub(super) fn take(block: &Arc<Block>) -> Option<Ticket> {
        (block.counted && owner_is_me()).then(|| {
            block.add_hold();
            Ticket { block: Some(block.clone()) }
        })
    }

    /// The arguments reached the child: the hold is its now.
    pub(crate) fn delivered(mut self) {
        self.block = None;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            block.drop_hold();
        }
    }
}

/// Holds for every block a fork child inherits, taken before the fork with the registry
/// locked (so no block comes or goes meanwhile).
pub(crate) struct ForkPins {
    guard: MutexGuard<'static, Option<Registry>>,
    pins: Vec<Arc<Block>>,
}

/// Takes a hold for each block this process holds, for the child about to be forked.
pub(crate) fn before_fork() -> ForkPins {
    let guard = registry();
    let mut pins = Vec::new();
    if let Some(reg) = guard.as_ref()
        && owner_is_me()
    {
        pins.reserve(reg.blocks.len());
        for block in reg.blocks.values().filter_map(Weak::upgrade) {
            if block.counted && !block.released.load(Ordering::Relaxed) {
                block.add_hold();
                pins.push(block);
            }
        }
    }
    ForkPins { guard, pins }
}

impl ForkPins {
    /// In the parent: the fork is done (`forked`), or it failed and the holds go back.
    pub(crate) fn in_parent(self, forked: bool) {
        let ForkPins { guard, pins } = self;
        drop(guard);
        if !forked {
            pins.iter().for_each(|b| b.drop_hold());
        }
    }

    /// In the child: the holds are the child's, and so are the blocks it inherited.
    pub(crate) fn in_child(self) {
        let ForkPins { guard, pins } = self;
        OWNER.store(proc::cached_pid(), Ordering::Relaxed);
        drop(guard);
        drop(pins);
    }
}

/// Gives back every hold of this process's, as a child ends: what it still holds (in a
/// static, or leaked) is not its any more.
pub(crate) fn release_all() {
    if !owner_is_me() {
        return;
    }
    let blocks: Vec<Arc<Block>> = match registry().as_ref() {
        Some(reg) => reg.blocks.values().filter_map(Weak::upgrade).collect(),
        None => return,
    };
    for block in &blocks {
        block.release();
    }
    OWNER.store(-1, Ordering::Relaxed);
    drop(blocks);
}

/// The descriptor of the arena this process makes its objects in, which it keeps for life
/// (for the leak checks of tests).
pub(crate) fn allocator_fd() -> Option<std::os::fd::RawFd> {
    let reg = registry();
    reg.as_ref()?.alloc.as_ref().map(|a| std::os::fd::AsRawFd::as_raw_fd(&a.arena.fd()))
}
