//! Arenas: the shared files small objects are cut from (Python's `heap.Arena`).
//!
//! An arena is one anonymous memfd, sparse and huge (16 TiB of file offsets, none of it
//! memory until touched), so a process holds one descriptor for thousands of objects. Its
//! first [`CHUNK`] holds a header with the next free offset; the rest is handed out from
//! there, never reused:
//!
//! - **Small blocks** (up to [`SMALL_MAX`] bytes, aligned to 64) are slots of one size class
//!   in a chunk of 64 KiB, whose header holds a bitmap of the slots in use. A slot is taken
//!   with a compare-exchange on its bit and given back by clearing it, so any process holding
//!   the arena may allocate and free, and a freed slot is used again.
//! - **Big blocks** get their own page-aligned run of offsets; when freed, their pages go
//!   back to the kernel (a hole is punched), and the offsets stay unused.
//!
//! Everything read from the arena is validated: another process may write anything into it,
//! which may confuse the objects in it but never make this process touch memory outside its
//! own mappings.

use crate::sys::shm::{self, Mapping};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A chunk of small blocks, and the arena's own header: 64 KiB.
pub(super) const CHUNK: u64 = 64 << 10;
/// The chunk header: slots start after it.
const CHUNK_HEADER: u64 = 256;
/// The smallest slot, and the alignment of every block.
pub(super) const SLOT_MIN: u64 = 64;
/// The largest small block.
pub(super) const SMALL_MAX: u64 = 8192;
/// Size classes: 64, 128, ... 8192.
const CLASSES: usize = 8;
/// How many file offsets an arena spans.
const SPAN: u64 = 1 << 44;
pub(super) const PAGE: u64 = 4096;

const ARENA_MAGIC: u64 = 0x6d70_6172_656e_6131; // "mparena1"
const CHUNK_MAGIC: u32 = 0x6d70_6368; // "mpch"

/// A file's identity: (device, inode).
pub(super) type FileId = (u64, u64);

#[repr(C)]
struct ArenaHeader {
    magic: AtomicU64,
    /// The next offset not yet handed out (page-aligned, from `CHUNK` on).
    next: AtomicU64,
}

#[repr(C)]
struct ChunkHeader {
    magic: AtomicU32,
    /// The slot size of this chunk.
    class: AtomicU32,
    /// One bit a slot, set while the slot is in use.
    used: [AtomicU64; 16],
}

const _: () = assert!(std::mem::size_of::<ChunkHeader>() as u64 <= CHUNK_HEADER);
const _: () = assert!((CHUNK - CHUNK_HEADER) / SLOT_MIN <= 16 * 64);

/// The size class (slot size) a block of `len` bytes needs.
pub(super) fn class_of(len: u64) -> u64 {
    len.max(SLOT_MIN).next_power_of_two()
}

/// The slots a chunk of class `class` holds.
fn slots(class: u64) -> u64 {
    (CHUNK - CHUNK_HEADER) / class
}

/// One arena as this process holds it: the descriptor, the header page, and the chunks
/// mapped here (shared by every block in them).
pub(super) struct Arena {
    fd: OwnedFd,
    id: FileId,
    span: u64,
    header: Mapping,
    chunks: Mutex<HashMap<u64, Weak<Mapping>>>,
}

impl Arena {
    /// A new arena of this process's.
    pub(super) fn create() -> io::Result<Arena> {
        // Smaller under a file-size limit, which a larger file would exceed (`SIGXFSZ`).
        let span = shm::file_size_limit().map_or(SPAN, |limit| SPAN.min(limit / CHUNK * CHUNK));
        if span < 4 * CHUNK {
            return Err(io::Error::other(format!("RLIMIT_FSIZE of {span} bytes leaves no room for shared objects")));
        }
        let fd = shm::sparse_memfd(c"multiprocess-heap", span)?;
        let arena = Arena::map(fd, span)?;
        arena.head().next.store(CHUNK, Ordering::Relaxed);
        arena.head().magic.store(ARENA_MAGIC, Ordering::Release);
        Ok(arena)
    }

    /// A file of `span` bytes for one block alone (at [`CHUNK`]), marked as an arena with
    /// nothing left to hand out.
    pub(super) fn create_alone(span: u64) -> io::Result<Arena> {
        let span = span.checked_next_multiple_of(PAGE).ok_or_else(|| invalid("too large"))?;
        let arena = Arena::map(shm::sparse_memfd(c"multiprocess-heap", span)?, span)?;
        arena.head().next.store(span, Ordering::Relaxed);
        arena.head().magic.store(ARENA_MAGIC, Ordering::Release);
        Ok(arena)
    }

    /// The arena behind `fd`, received from another process: sealed, and marked as ours.
    pub(super) fn open(fd: OwnedFd) -> io::Result<Arena> {
        let span = shm::sealed_size(fd.as_fd())?;
        if span < CHUNK + PAGE {
            return Err(invalid("an arena smaller than its header"));
        }
        let arena = Arena::map(fd, span)?;
        if arena.head().magic.load(Ordering::Acquire) != ARENA_MAGIC {
            return Err(invalid("not a multiprocess shared object"));
        }
        Ok(arena)
    }

    fn map(fd: OwnedFd, span: u64) -> io::Result<Arena> {
        let id = shm::file_id(fd.as_fd())?;
        let header = Mapping::new(fd.as_fd(), 0, PAGE as usize)?;
        Ok(Arena { fd, id, span, header, chunks: Mutex::new(HashMap::new()) })
    }

    fn head(&self) -> &ArenaHeader {
        // SAFETY: the header page is mapped for as long as `self`, page-aligned, and holds
        // atomics only, for which any bytes are valid.
        unsafe { &*self.header.as_ptr().cast::<ArenaHeader>() }
    }

    pub(super) fn id(&self) -> FileId {
        self.id
    }

    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(super) fn span(&self) -> u64 {
        self.span
    }

    /// Hands out `len` bytes of offsets (a multiple of `align`, itself a power of two and at
    /// least a page), or `None` when the arena is spent.
    fn take(&self, len: u64, align: u64) -> Option<u64> {
        let next = &self.head().next;
        let mut cur = next.load(Ordering::Relaxed);
        loop {
            let start = cur.max(CHUNK).checked_next_multiple_of(align)?;
            let end = start.checked_add(len).filter(|&end| end <= self.span)?;
            match next.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(start),
                Err(now) => cur = now,
            }
        }
    }

    /// The mapping of the chunk at `chunk` (shared with the other blocks in it).
    pub(super) fn chunk(&self, chunk: u64) -> io::Result<Arc<Mapping>> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = chunks.get(&chunk).and_then(Weak::upgrade) {
            return Ok(map);
        }
        let map = Arc::new(Mapping::new(self.fd.as_fd(), chunk, CHUNK as usize)?);
        if chunks.len() > 64 {
            chunks.retain(|_, m| m.strong_count() > 0);
        }
        chunks.insert(chunk, Arc::downgrade(&map));
        Ok(map)
    }

    /// A run of fresh offsets for a big block of `len` bytes, page-aligned; `None` when spent.
    pub(super) fn take_big(&self, len: u64) -> Option<u64> {
        self.take(len.checked_next_multiple_of(PAGE)?, PAGE)
    }

    /// Gives the pages of a big block back to the kernel.
    pub(super) fn free_big(&self, offset: u64, len: u64) {
        if let Some(len) = len.checked_next_multiple_of(PAGE) {
            let _ = shm::punch_hole(self.fd.as_fd(), offset, len);
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The chunk header in a chunk mapping.
fn chunk_header(map: &Mapping) -> &ChunkHeader {
    // SAFETY: a chunk mapping is CHUNK bytes, page-aligned; the header is atomics only.
    unsafe { &*map.as_ptr().cast::<ChunkHeader>() }
}

/// Frees the small block at `offset` (whose chunk is mapped as `map`): clears its bit, if the
/// chunk's header agrees that a block of `len` bytes is a slot there.
pub(super) fn free_small(map: &Mapping, chunk: u64, offset: u64, len: u64) {
    let header = chunk_header(map);
    let class = u64::from(header.class.load(Ordering::Relaxed));
    if header.magic.load(Ordering::Relaxed) != CHUNK_MAGIC || class != class_of(len) || class > SMALL_MAX {
        return;
    }
    let Some(rel) = offset.checked_sub(chunk + CHUNK_HEADER) else { return };
    if !rel.is_multiple_of(class) || rel / class >= slots(class) {
        return;
    }
    let slot = rel / class;
    header.used[(slot / 64) as usize].fetch_and(!(1 << (slot % 64)), Ordering::Release);
}

/// Where a process takes its small blocks from: the chunks of each class it knows, in one
/// arena.
pub(super) struct Allocator {
    pub(super) arena: Arc<Arena>,
    chunks: [Vec<(u64, Arc<Mapping>)>; CLASSES],
    /// Per class, the chunk the last block came from: the first to look in.
    hint: [usize; CLASSES],
}

impl Allocator {
    pub(super) fn new(arena: Arc<Arena>) -> Allocator {
        Allocator { arena, chunks: Default::default(), hint: [0; CLASSES] }
    }

    /// A zeroed small slot for `len` bytes: its offset and its chunk's mapping and offset.
    /// `None` when the arena is spent.
    pub(super) fn take_small(&mut self, len: u64) -> io::Result<Option<(u64, u64, Arc<Mapping>)>> {
        let class = class_of(len);
        let c = class.trailing_zeros() as usize - SLOT_MIN.trailing_zeros() as usize;
        let known = self.chunks[c].len();
        for i in 0..known {
            let at = (self.hint[c] + i) % known;
            let (chunk, map) = &self.chunks[c][at];
            if let Some(slot) = claim(chunk_header(map), class) {
                self.hint[c] = at;
                let (chunk, map) = (*chunk, map.clone());
                return Ok(Some((chunk + CHUNK_HEADER + slot * class, chunk, zeroed(map, slot, class))));
            }
        }
        let Some(chunk) = self.arena.take(CHUNK, CHUNK) else { return Ok(None) };
        let map = self.arena.chunk(chunk)?;
        let header = chunk_header(&map);
        header.class.store(class as u32, Ordering::Relaxed);
        header.magic.store(CHUNK_MAGIC, Ordering::Release);
        let slot = claim(header, class).ok_or_else(|| io::Error::other("a fresh chunk with no free slot"))?;
        self.chunks[c].push((chunk, map.clone()));
        self.hint[c] = self.chunks[c].len() - 1;
        Ok(Some((chunk + CHUNK_HEADER + slot * class, chunk, zeroed(map, slot, class))))
    }
}

/// Takes a free slot's bit in a chunk of class `class`.
fn claim(header: &ChunkHeader, class: u64) -> Option<u64> {
    let n = slots(class);
    for (w, word) in header.used.iter().enumerate().take(n.div_ceil(64) as usize) {
        let valid = if (w as u64 + 1) * 64 <= n { u64::MAX } else { (1u64 << (n % 64)) - 1 };
        let mut cur = word.load(Ordering::Relaxed);
        while cur & valid != valid {
            let bit = (!cur & valid).trailing_zeros();
            match word.compare_exchange_weak(cur, cur | 1 << bit, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some(w as u64 * 64 + u64::from(bit)),
                Err(now) => cur = now,
            }
        }
    }
    None
}

/// Zeroes slot `slot` of a chunk (its last user may have left anything in it) and passes the
/// mapping on.
fn zeroed(map: Arc<Mapping>, slot: u64, class: u64) -> Arc<Mapping> {
    let start = (CHUNK_HEADER + slot * class) as usize;
    debug_assert!(start + class as usize <= map.len());
    // SAFETY: the slot lies inside the chunk mapping (`slot < slots(class)`); we hold its bit,
    // so no other allocation reaches these bytes.
    unsafe { std::ptr::write_bytes(map.as_ptr().add(start), 0, class as usize) };
    map
}
