//! The shared-memory ring every queue is built on.
//!
//! One memfd segment holds a small state and a byte ring of 4 GiB of *address space*, of
//! which only the pages in use hold memory. Records are `[len: u32][kind: u32][payload]`,
//! padded to 8 bytes. Producers take turns under the put lock, consumers under the get lock;
//! a producer and a consumer never wait for each other except when the ring is empty (or the
//! queue full).
//!
//! **Positions.** The producers' `tail` and the consumers' `head` are each one 64-bit word
//! packing a byte counter (34 bits) and an item counter (30 bits), both counting since the
//! queue was made, modulo their width. A record's ring offset is its byte position modulo the
//! ring's size, and the two bits above say which lap (modulo 4) it is in. A record is
//! published by one store of `tail`, and consumed by one store of `head`: a process killed
//! anywhere in a `put` or `get` leaves either the whole record or none of it, never half.
//! (The item counters make `qsize` and a `JoinableQueue`'s unfinished count exact for the
//! same reason: they move in the same store.)
//!
//! **Growing without moving.** Records normally cycle through the first `soft` bytes (1 MiB),
//! whose pages stay mapped and warm: past them a producer ends the lap with a pad record and
//! goes back to 0, if the queue is empty or the consumers have left the warm part too.
//! Otherwise it carries on into untouched address space, so a record larger than the warm
//! part (64 MiB, say) simply lies further out. A producer that went back to 0 and then
//! catches up with consumers still in the last lap (they stalled) writes a jump record and
//! goes on past the end of their lap, where that lap left nothing. So an unbounded queue
//! never makes a `put` wait for its consumers: only 4 GiB of records waiting would. Pages
//! past `soft + KEEP` go back to the kernel behind a consumer that lags its producers,
//! a chunk at a time, and all at once when the queue is found empty.
//!
//! **Crashes.** Both locks know their holder (see `synchronize::mutex`): a process killed
//! holding one is noticed by the next taker, which goes on from the last published position.
//! What the dead producer had half-written lies beyond `tail` and is overwritten; what the
//! dead consumer was reading is still before `head` and goes to the next consumer. Only the
//! record a consumer had taken (`head` stored) but not yet returned is lost with it.

use super::signal::Signal;
use crate::heap::{Shared, SharedState};
use crate::synchronize::mutex::{Acquired, RawMutex};
use crate::sys::{Deadline, futex, proc};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Address space of a ring: records of up to almost this size pass.
pub(crate) const RING_LEN: u64 = 1 << 32;
/// The warm part that records cycle through while the consumers keep up.
pub(crate) const SOFT_LEN: u64 = 1 << 20;
/// The warm part of a pool's queues (a worker's orders, the workers' reports). What waits
/// there is bounded by the chunks the workers may hold, a few KiB of small records, and a
/// part this small stays in the CPUs' caches as the records cycle through it: a map of
/// chunk size 1 runs 13% faster than through 1 MiB, its first maps in a fresh pool more (no
/// page of 1 MiB to fault in, in each process, on the first laps). A user's queue keeps
/// `SOFT_LEN`: there a producer may run far ahead of its consumer, and past the warm part
/// it writes to cold pages (a 64 KiB part cost bursts of small records 10 to 25%).
pub(crate) const POOL_SOFT_LEN: u64 = 64 << 10;
/// How much of the space past `soft` stays mapped after the queue drains: enough for a few
/// large records in flight, so that a stream of them does not fault pages in each time.
const KEEP: u64 = 8 << 20;
/// The pages a consumer gives back at once behind itself, past the kept part.
const RELEASE_CHUNK: u64 = 4 << 20;

/// Bits of a position's byte counter: two more than the ring needs, so that the lap of a
/// position is known modulo 4, and a producer one lap ahead of the consumers is told from one
/// in the same lap.
const BYTE_BITS: u32 = 34;
const BYTE_MASK: u64 = (1 << BYTE_BITS) - 1;
const ITEM_MASK: u64 = (1 << (64 - BYTE_BITS)) - 1;
/// The most items a queue holds (and the most unfinished tasks a `JoinableQueue` counts):
/// well below the item counter's wrap.
pub(crate) const MAX_ITEMS: u64 = (1 << 29) - 1;

const HEADER: u64 = 8;
const PAGE: u64 = 4096;
const KIND_DATA: u32 = 0x7175_6401; // "qud\x01"
/// The lap ends here: the next record is at ring offset 0.
const KIND_PAD: u32 = 0x7175_6402;
/// The next record is `len` bytes further on in this lap (a producer that went back to 0
/// with records still waiting, and caught up with them, jumps past them).
const KIND_JUMP: u32 = 0x7175_6403;
const MAGIC: u64 = 0x6d70_7175_6575_6531; // "mpqueue1"

/// Looks before yielding (with backoff, some 2,000 pauses in all): a producer on another
/// core usually comes within a few µs.
const SPINS: u32 = 64;
/// Then yields of the CPU before sleeping.
const YIELDS: u32 = 16;
/// The spin round from which a plain queue's waits also yield (some microseconds in).
const PLAIN_FIRST_YIELD: u32 = 16;

/// Waits a little without sleeping: spins, then gives the CPU away a few times (when there
/// are more busy processes than cores, the one we wait for may be waiting for ours), and
/// says whether `ready()` came true. A sleep would cost the other side a system call to wake
/// us, on every record.
fn patiently(deadline: Deadline, first_yield: u32, peer_cpu: u32, mut ready: impl FnMut() -> bool) -> bool {
    if deadline.expired() {
        return false;
    }
    // Backing off (1, 2, 4 ... 32 pauses between looks) lets records pile up a little while
    // we wait, so that we then take several per cache line instead of fighting the producer
    // for each line as it is written.
    // From round `first_yield` on, the CPU is also given away every eighth look: if the
    // process or thread we wait for shares our CPU it runs then (spinning could not help
    // it), and if not, the yield returns at once. Not sooner for a plain queue: a record
    // usually comes within a microsecond, and a system call in that time costs more than it
    // saves. A pool's queues yield at once: there a wait is a task's round trip, and the
    // pool's own threads may be what it waits for.
    // With the peer last seen on our CPU only the yields can help: it runs only when we let
    // it (`peer_cpu` 0: not known).
    let spins = if futex::worth_spinning(proc::current_cpu(), peer_cpu) { SPINS } else { 0 };
    for round in 0..spins {
        for _ in 0..1u32 << round.min(5) {
            std::hint::spin_loop();
        }
        if ready() {
            return true;
        }
        if round >= first_yield && round % 8 == 7 {
            std::thread::yield_now();
            if ready() {
                return true;
            }
        }
    }
    for _ in 0..YIELDS {
        std::thread::yield_now();
        if ready() {
            return true;
        }
    }
    false
}

/// A position: bytes and items put (or taken) so far, modulo their widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos(u64);

impl Pos {
    fn bytes(self) -> u64 {
        self.0 & BYTE_MASK
    }
    fn items(self) -> u64 {
        self.0 >> BYTE_BITS
    }
    fn advance(self, bytes: u64, items: u64) -> Pos {
        let b = self.bytes().wrapping_add(bytes) & BYTE_MASK;
        let i = self.items().wrapping_add(items) & ITEM_MASK;
        Pos(i << BYTE_BITS | b)
    }
    /// Bytes from `self` to `later`.
    fn bytes_to(self, later: Pos) -> u64 {
        later.bytes().wrapping_sub(self.bytes()) & BYTE_MASK
    }
    /// Items from `self` to `later`.
    fn items_to(self, later: Pos) -> u64 {
        later.items().wrapping_sub(self.items()) & ITEM_MASK
    }
}

/// Fixed when the queue is made; checked by every process that attaches.
#[repr(C, align(64))]
#[derive(Default)]
struct Config {
    magic: AtomicU64,
    ring_len: AtomicU64,
    soft_len: AtomicU64,
    maxsize: AtomicU64,
    type_tag: AtomicU64,
}

/// The producers' lock, and what only its holder uses.
#[repr(C, align(64))]
#[derive(Default)]
struct PutSide {
    lock: RawMutex,
    /// `head` as the holder last read it: the consumers have taken at least this much, so
    /// the holder reads the consumers' line only when this says the ring is full.
    head_seen: AtomicU64,
    /// Ring offset of the pad record that ended the last lap: past it, that lap has nothing.
    lap_end: AtomicU64,
    /// Set while the holder waits for room: a `put_nowait` that finds the lock taken then
    /// knows the queue is full, instead of waiting for the lock.
    waiting_for_room: AtomicU32,
    /// The CPU the last producer ran on, plus one (0: none yet): a consumer waiting on that
    /// same CPU does not spin (the producer cannot run while it does). A hint only.
    cpu: AtomicU32,
}

/// The consumers' lock, and what only its holder uses.
#[repr(C, align(64))]
#[derive(Default)]
struct GetSide {
    lock: RawMutex,
    /// `tail` as the holder last read it: at least this much is published.
    tail_seen: AtomicU64,
    /// Ring offset from which the pages behind the consumers were not yet given back (0:
    /// from the end of the kept part).
    released: AtomicU64,
}

/// A position on a cache line of its own: written once per record by its side, read by
/// the other, and by nothing else that is written as often.
#[repr(C, align(64))]
#[derive(Default)]
struct Position {
    pos: AtomicU64,
}

/// Rarely written: how far past `soft + KEEP` producers went.
#[repr(C, align(64))]
#[derive(Default)]
struct Extent {
    /// The furthest byte ever written past `soft + KEEP` (0 if none since the last trim).
    end: AtomicU64,
}

#[repr(C, align(64))]
#[derive(Default)]
struct Tasks {
    /// `task_done` calls so far, modulo the item counter's width.
    done: AtomicU64,
}

/// The shared state in front of the ring bytes.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RingState {
    config: Config,
    put: PutSide,
    get: GetSide,
    tail: Position,
    head: Position,
    extent: Extent,
    /// Consumers wait here for records.
    data: Signal,
    /// Producers wait here for room.
    space: Signal,
    tasks: Tasks,
    /// `JoinableQueue::join` waits here for the unfinished count to reach zero.
    joined: Signal,
}

// SAFETY: atomics only (the locks are atomic words too). Any content is a valid value: every
// position and length read from it is validated before it is used.
unsafe impl SharedState for RingState {}

/// Ring byte 0 in a window that maps the ring's first `.1` bytes.
#[derive(Clone, Copy)]
struct Ring0(*mut u8, u64);

impl Ring0 {
    /// A pointer to ring byte `at`, with `len` bytes mapped from it.
    fn at(self, at: u64, len: u64) -> *mut u8 {
        assert!(at.checked_add(len).is_some_and(|end| end <= self.1), "ring byte {at} out of the window");
        // SAFETY: `[at, at + len)` lies inside the window (asserted above).
        unsafe { self.0.add(at as usize) }
    }

    /// The 32-bit word at ring byte `at` (8-aligned).
    fn word<'a>(self, at: u64) -> &'a AtomicU32 {
        // SAFETY: the word lies in the window (checked by `at`), aligned since `at` is 8-aligned
        // and the window page-aligned; the caller's ring keeps the window mapped.
        unsafe { AtomicU32::from_ptr(self.at(at, 4).cast()) }
    }

    fn write_header(self, at: u64, len: u32, kind: u32) {
        self.word(at).store(len, Ordering::Relaxed);
        self.word(at + 4).store(kind, Ordering::Relaxed);
    }
}

/// Where ring byte 0 is in a ring's block: the first page boundary after its state.
fn ring_start() -> usize {
    (crate::heap::FIRST + std::mem::size_of::<RingState>()).next_multiple_of(PAGE as usize)
}

/// Where a record goes: ring offset `at`, after `skip` bytes taken by a `lead` record (a pad
/// or a jump) at the tail, if `skip > 0`.
#[derive(Clone, Copy, Debug)]
struct Place {
    at: u64,
    skip: u64,
    lead: u32,
}

/// Why a `put` did not happen.
#[derive(Debug)]
pub(crate) enum PutFail {
    /// The queue held `maxsize` items, or the ring had no room, until the deadline.
    Full,
    /// The record can never fit.
    TooLarge,
    /// The ring's pages could not be mapped here (no address space left).
    Map(io::Error),
}

/// Why a `get` gave nothing.
#[derive(Debug)]
pub(crate) enum GetFail {
    /// Nothing came before the deadline.
    Empty,
    /// Another consumer held the ring past the deadline (`get_present` only: what the ring
    /// holds is not known).
    Busy,
    /// What the ring holds is not a record: another process wrote into it.
    Corrupt(&'static str),
    /// The ring's pages could not be mapped here (no address space left).
    Map(io::Error),
}

/// This process's handle on a ring: the mapping and the geometry it checked when it made or
/// attached it (kept here, so that a later scribble on the shared copy changes nothing).
pub(crate) struct Ring {
    shared: Shared<RingState>,
    /// Where ring byte 0 is in the block: on the first page boundary after the state.
    ring_off: usize,
    ring_len: u64,
    soft_len: u64,
    /// Where trimming starts: `soft_len + KEEP` (less in tests, so that they trim).
    keep_end: u64,
    maxsize: u64,
    /// The spin round from which waits also yield (see `patiently`); this handle's choice.
    first_yield: u32,
}

// SAFETY: the ring's bytes lie in windows that `shared` keeps mapped; they are only
// touched under the put lock (free space) or the get lock (published records), which is what
// the protocol below is about, so the handle can be shared and sent between threads.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A new empty ring; `maxsize` 0 means unbounded.
    pub(crate) fn new(maxsize: u64, type_tag: u64) -> io::Result<Ring> {
        Ring::with_geometry(maxsize, type_tag, RING_LEN, SOFT_LEN)
    }

    /// A ring for a pool's queue: unbounded, with the warm part of [`POOL_SOFT_LEN`], and
    /// waits that give the CPU away early (see [`patiently`]).
    pub(crate) fn for_pool(type_tag: u64) -> io::Result<Ring> {
        let mut ring = Ring::with_geometry(0, type_tag, RING_LEN, POOL_SOFT_LEN)?;
        ring.set_eager_yield(true);
        Ok(ring)
    }

    /// A ring of another size (a pool's, and tests of the wrap-around logic).
    pub(crate) fn with_geometry(maxsize: u64, type_tag: u64, ring_len: u64, soft_len: u64) -> io::Result<Ring> {
        let extra = usize::try_from(ring_len)
            .ok()
            .and_then(|len| len.checked_add(PAGE as usize))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Only the state and the warm part are mapped at first: the rest of the ring's
        // address space is reserved as file offsets, and mapped in each process as records
        // reach it (so a queue costs its warm part of address space, not 4 GiB).
        let first = ring_start() + soft_len as usize + PAGE as usize;
        let shared = Shared::<RingState>::lazy(extra, first)?;
        let config = &shared.state().config;
        config.ring_len.store(ring_len, Ordering::Relaxed);
        config.soft_len.store(soft_len, Ordering::Relaxed);
        config.maxsize.store(maxsize, Ordering::Relaxed);
        config.type_tag.store(type_tag, Ordering::Relaxed);
        config.magic.store(MAGIC, Ordering::Release);
        Ring::attach(shared, type_tag)
    }

    /// Checks a ring received from another process and makes a handle on it.
    pub(crate) fn attach(shared: Shared<RingState>, type_tag: u64) -> io::Result<Ring> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a queue: {what}"));
        let config = &shared.state().config;
        if config.magic.load(Ordering::Acquire) != MAGIC {
            return Err(bad("bad magic"));
        }
        if config.type_tag.load(Ordering::Relaxed) != type_tag {
            return Err(bad("it carries another item type"));
        }
        let ring_len = config.ring_len.load(Ordering::Relaxed);
        let soft_len = config.soft_len.load(Ordering::Relaxed);
        let maxsize = config.maxsize.load(Ordering::Relaxed);
        // The ring starts at the first page boundary after the state, so that its pages are
        // whole pages of the file (and can be given back whole).
        let ring_off = ring_start();
        if shared.offset() != crate::heap::FIRST
            || !ring_len.is_power_of_two()
            || !(2 * PAGE..=RING_LEN).contains(&ring_len)
            || ring_len + ring_off as u64 > shared.block_len()
            || soft_len > ring_len
            || !soft_len.is_multiple_of(PAGE)
            || maxsize > MAX_ITEMS
        {
            return Err(bad("bad geometry"));
        }
        let keep_end = (soft_len + KEEP).min(ring_len / 2);
        Ok(Ring { shared, ring_off, ring_len, soft_len, keep_end, maxsize, first_yield: PLAIN_FIRST_YIELD })
    }

    /// Makes this handle's waits yield from the start (a pool's queues).
    pub(crate) fn set_eager_yield(&mut self, eager: bool) {
        self.first_yield = if eager { 0 } else { PLAIN_FIRST_YIELD };
    }

    /// Whether this handle's waits yield from the start.
    pub(crate) fn eager_yield(&self) -> bool {
        self.first_yield == 0
    }

    pub(crate) fn shared(&self) -> &Shared<RingState> {
        &self.shared
    }

    fn state(&self) -> &RingState {
        self.shared.state()
    }

    /// `maxsize`, 0 for unbounded.
    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    fn tail(&self) -> Pos {
        Pos(self.state().tail.pos.load(Ordering::Acquire))
    }

    fn head(&self) -> Pos {
        Pos(self.state().head.pos.load(Ordering::Acquire))
    }

    /// Items in the queue now (may be stale by the time it is read, as in CPython).
    pub(crate) fn len(&self) -> u64 {
        let (head, tail) = (self.head(), self.tail());
        head.items_to(tail).min(MAX_ITEMS)
    }

    /// Whether a `put` would wait now: `maxsize` items are in, or (for an unbounded queue)
    /// the ring's address space is taken up to where not even an empty record fits.
    pub(crate) fn is_full(&self) -> bool {
        self.fit(self.head(), self.tail(), HEADER).is_none()
    }

    /// The CPU the last producer ran on, plus one (0: none yet; a hint).
    pub(crate) fn producer_cpu(&self) -> u32 {
        self.state().put.cpu.load(Ordering::Relaxed)
    }

    /// Waits until the queue holds something, or `deadline`, without taking it (nor the
    /// consumers' lock, so that other consumers may take it meanwhile); whether it does.
    pub(crate) fn wait_nonempty(&self, deadline: Deadline) -> bool {
        !self.is_empty()
            || patiently(deadline, self.first_yield, self.producer_cpu(), || !self.is_empty())
            || self.state().data.sleep_until(deadline, || !self.is_empty())
    }

    /// Whether the queue holds nothing now.
    pub(crate) fn is_empty(&self) -> bool {
        self.head().bytes() == self.tail().bytes()
    }

    /// The most payload bytes one record can carry: half the ring, so that a record always
    /// fits somewhere once the ring is empty (before the end, or after going back to 0).
    pub(crate) fn max_payload(&self) -> u64 {
        self.ring_len / 2 - HEADER
    }

    /// Ring byte 0 in a window of this process's that maps the ring up to byte `end`
    /// (`end <= ring_len`, which `attach` checked lies in the block); mapped now if no window
    /// reaches that far yet. Valid as long as `self`.
    fn ring(&self, end: u64) -> io::Result<Ring0> {
        debug_assert!(end <= self.ring_len);
        let base = self.shared.reach(self.ring_off + end as usize)?;
        // SAFETY: the window maps the block from its first byte past `ring_off + end`.
        Ok(Ring0(unsafe { base.add(self.ring_off) }, end))
    }

    /// Appends one record holding `payload`, waiting for room until `deadline`.
    pub(crate) fn put(&self, payload: &[u8], deadline: Deadline) -> Result<(), PutFail> {
        let len = payload.len() as u64;
        if len > self.max_payload() {
            return Err(PutFail::TooLarge);
        }
        let size = (HEADER + len).next_multiple_of(HEADER);
        let state = self.state();
        match self.lock_put(deadline) {
            Acquired::No => return Err(PutFail::Full),
            // The dead producer may have counted itself asleep, or left its flag: only the
            // holder sleeps there.
            Acquired::OwnerDied => {
                state.space.reset();
                state.put.waiting_for_room.store(0, Ordering::Relaxed);
            }
            Acquired::Yes => {}
        }
        state.put.cpu.store(proc::current_cpu(), Ordering::Relaxed);
        let placed = self.place(size, deadline);
        // The window must reach the record's end, and a pad record's at the old tail.
        let window = placed
            .map(|(tail, place)| {
                let lead_end = if place.skip > 0 { (tail.bytes() & (self.ring_len - 1)) + HEADER } else { 0 };
                self.ring((place.at + size).max(lead_end))
            })
            .transpose();
        let result = match (placed, window) {
            (_, Err(e)) => Err(PutFail::Map(e)),
            (Some((tail, Place { at, skip, lead })), Ok(Some(ring))) => {
                if skip > 0 {
                    let from = tail.bytes() & (self.ring_len - 1);
                    ring.write_header(from, (skip - HEADER) as u32, lead);
                    if lead == KIND_PAD {
                        state.put.lap_end.store(from, Ordering::Relaxed);
                    }
                }
                ring.write_header(at, len as u32, KIND_DATA);
                // SAFETY: `place` found `[at, at + size)` free and inside the ring: no
                // consumer reads it until `tail` moves past it, and we hold the put lock, so
                // no other producer writes it; `payload` is our own memory.
                unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), ring.at(at + HEADER, len), payload.len()) };
                let end = at + size;
                if end > self.keep_end && end > state.extent.end.load(Ordering::Relaxed) {
                    state.extent.end.store(end, Ordering::Relaxed);
                }
                state.tail.pos.store(tail.advance(skip + size, 1).0, Ordering::Release);
                Ok(())
            }
            _ => Err(PutFail::Full),
        };
        state.put.lock.unlock();
        if result.is_ok() {
            state.data.notify(1);
        }
        result
    }

    /// Takes the put lock. A call that does not wait (`put_nowait`) still waits for a holder
    /// that is only copying its record in (a moment), but not for one that waits for room:
    /// then the queue is full, and so is the answer.
    fn lock_put(&self, deadline: Deadline) -> Acquired {
        let put = &self.state().put;
        // A holder is inside a put for well under a microsecond. Spinning (looking only)
        // covers one on another CPU; yielding covers one preempted on ours, which could not
        // let go while we spin, and which a sleep would cost a system call to wake us.
        if put.lock.try_lock_free()
            || patiently(deadline, self.first_yield, 0, || put.lock.holder().is_none() && put.lock.try_lock_free())
        {
            return Acquired::Yes;
        }
        if !deadline.expired() {
            return put.lock.lock(deadline);
        }
        loop {
            match put.lock.lock(Deadline::after(Some(Duration::from_millis(1)))) {
                Acquired::No if put.waiting_for_room.load(Ordering::Relaxed) != 0 => return Acquired::No,
                Acquired::No => {}
                taken => return taken,
            }
        }
    }

    /// Under the put lock: where a record of `size` bytes goes, waiting for room (or for the
    /// item count to drop below `maxsize`) until `deadline`; with the tail it goes after.
    fn place(&self, size: u64, deadline: Deadline) -> Option<(Pos, Place)> {
        let state = self.state();
        let tail = Pos(state.tail.pos.load(Ordering::Relaxed));
        // What the last producer saw of `head` is usually room enough for a record written
        // where the tail is, in the warm part: no need to read the consumers' line, which
        // they write on every get. Anything else is decided on a fresh look.
        let seen = Pos(state.put.head_seen.load(Ordering::Relaxed));
        if let Some(place) = self.fit(seen, tail, size)
            && place.skip == 0
            && place.at + size <= self.soft_len
        {
            return Some((tail, place));
        }
        let mut placed = None;
        let mut fresh = || {
            let head = self.head();
            state.put.head_seen.store(head.0, Ordering::Relaxed);
            placed = self.fit(head, tail, size).map(|place| (tail, place));
            placed.is_some()
        };
        if fresh() {
            return placed;
        }
        state.put.waiting_for_room.store(1, Ordering::Relaxed);
        if !patiently(deadline, self.first_yield, 0, &mut fresh) {
            state.space.sleep_until(deadline, fresh);
        }
        state.put.waiting_for_room.store(0, Ordering::Relaxed);
        placed
    }

    /// The lap a position is in (modulo 4).
    fn lap(&self, pos: Pos) -> u64 {
        (pos.bytes() / self.ring_len) & 3
    }

    /// Where a record of `size` bytes goes with the consumers at `head`, or `None` if it
    /// does not fit now. The producers are either in the consumers' lap, ahead of them, or
    /// one lap ahead, behind them:
    ///
    /// - **Same lap.** Everything past the tail is free, and, in the next lap, everything
    ///   before the head. A record goes where the tail is while it ends in the warm part;
    ///   past that, back to 0 (a pad record ends the lap) if the queue is empty or the
    ///   consumers have left the warm part, so that the warm pages are used again; otherwise
    ///   on into fresh address space, up to the end of the ring, where the lap must end.
    /// - **One lap ahead.** Free is what lies between the tail and the head, less room for a
    ///   jump record. When that is not enough (the consumers stalled), the producers jump
    ///   past the end of the consumers' lap, where that lap left nothing, and go on from
    ///   there. So a stalled consumer never makes a producer wait: only the end of the
    ///   ring's 4 GiB of address space does.
    fn fit(&self, head: Pos, tail: Pos, size: u64) -> Option<Place> {
        let items = head.items_to(tail);
        if items >= MAX_ITEMS || (self.maxsize > 0 && items >= self.maxsize) {
            return None;
        }
        let len = self.ring_len;
        let (h, t) = (head.bytes() & (len - 1), tail.bytes() & (len - 1));
        let here = Place { at: t, skip: 0, lead: 0 };
        match (self.lap(tail) + 4 - self.lap(head)) & 3 {
            // Same lap: the tail is at or after the head (anything else is a scribbled head:
            // wait rather than overwrite what may be records).
            0 if t >= h => {
                let empty = t == h;
                // A record never ends a lap flush with the ring's end: a pad record does, so
                // that `lap_end` always says where the consumers' lap ends.
                let fits_here = t + size + HEADER <= len;
                if t + size <= self.soft_len || t == 0 {
                    return fits_here.then_some(here);
                }
                let back = Place { at: 0, skip: len - t, lead: KIND_PAD };
                // Back at 0 the head is ahead of us: keep room for a jump before it.
                let room_back = if empty { t } else { h };
                if (empty || h >= self.soft_len) && size + HEADER <= room_back {
                    return Some(back);
                }
                if fits_here {
                    return Some(here);
                }
                (size + HEADER <= room_back).then_some(back)
            }
            // One lap ahead, before the head: between them, less room for a jump.
            1 if t + HEADER <= h => {
                if t + size + HEADER <= h {
                    return Some(here);
                }
                let lap_end = self.state().put.lap_end.load(Ordering::Relaxed);
                let to = lap_end.checked_add(HEADER)?;
                let fits = lap_end >= h && lap_end.is_multiple_of(HEADER) && to + size + HEADER <= len;
                fits.then_some(Place { at: to, skip: to - t, lead: KIND_JUMP })
            }
            // One lap ahead, past the end of the consumers' lap (after a jump): free to the
            // end of the ring; the lap can end only once the consumers are in this one.
            1 if t > h => (t + size + HEADER <= len).then_some(here),
            _ => None,
        }
    }

    /// Takes the oldest record into `out` (cleared first), waiting until `deadline`.
    pub(crate) fn get(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<(), GetFail> {
        self.get_by(out, deadline, deadline).map_err(|e| match e {
            GetFail::Busy => GetFail::Empty,
            e => e,
        })
    }

    /// Takes the oldest record into `out` if one is there now (`Empty` if none), waiting until
    /// `deadline` only for the get lock: another consumer holds it for a moment to copy a
    /// record out, or for as long as it waits on an empty ring (`Busy` at `deadline`).
    pub(crate) fn get_present(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<(), GetFail> {
        self.get_by(out, deadline, Deadline::after(Some(Duration::ZERO)))
    }

    /// Takes the oldest record, waiting for the get lock until `locked_by` and then for a
    /// record until `record_by`.
    fn get_by(&self, out: &mut Vec<u8>, locked_by: Deadline, record_by: Deadline) -> Result<(), GetFail> {
        let state = self.state();
        match state.get.lock.lock(locked_by) {
            Acquired::No => return Err(GetFail::Busy),
            Acquired::OwnerDied => state.data.reset(),
            Acquired::Yes => {}
        }
        let result = self.take(out, record_by);
        if result.is_ok() && state.extent.end.load(Ordering::Relaxed) > self.keep_end && self.is_empty() {
            self.trim();
        }
        state.get.lock.unlock();
        if result.is_ok() {
            state.space.notify(1);
        }
        result
    }

    /// Under the get lock: waits for a record and copies its payload out.
    fn take(&self, out: &mut Vec<u8>, deadline: Deadline) -> Result<(), GetFail> {
        let state = self.state();
        let mut head = Pos(state.head.pos.load(Ordering::Relaxed));
        // What the last consumer saw of `tail`: while records remain before it, no need to
        // read the producers' line, which they write on every put.
        let mut tail = Pos(state.get.tail_seen.load(Ordering::Relaxed));
        loop {
            if head.bytes_to(tail) == 0 || head.bytes_to(tail) >= 2 * self.ring_len {
                let mut fresh = || {
                    tail = self.tail();
                    tail.bytes() != head.bytes()
                };
                let arrived = fresh()
                    || patiently(deadline, self.first_yield, self.producer_cpu(), &mut fresh)
                    || state.data.sleep_until(deadline, fresh);
                if !arrived {
                    return Err(GetFail::Empty);
                }
                state.get.tail_seen.store(tail.0, Ordering::Relaxed);
            }
            let avail = head.bytes_to(tail);
            let at = head.bytes() & (self.ring_len - 1);
            if avail >= 2 * self.ring_len || avail < HEADER || at + HEADER > self.ring_len {
                return Err(GetFail::Corrupt("positions out of range"));
            }
            let ring = self.ring(at + HEADER).map_err(GetFail::Map)?;
            let len = ring.word(at).load(Ordering::Relaxed) as u64;
            let kind = ring.word(at + 4).load(Ordering::Relaxed);
            match kind {
                KIND_PAD => {
                    let skip = HEADER + len;
                    if at + skip != self.ring_len || skip > avail {
                        return Err(GetFail::Corrupt("bad pad record"));
                    }
                    head = head.advance(skip, 0);
                    // A new lap: what is left behind goes back when the queue drains.
                    state.get.released.store(0, Ordering::Relaxed);
                }
                KIND_JUMP => {
                    let skip = HEADER + len;
                    if at + skip >= self.ring_len || skip > avail || !skip.is_multiple_of(HEADER) {
                        return Err(GetFail::Corrupt("bad jump record"));
                    }
                    head = head.advance(skip, 0);
                }
                KIND_DATA => {
                    let size = (HEADER + len).next_multiple_of(HEADER);
                    if size > avail || at + size > self.ring_len {
                        return Err(GetFail::Corrupt("record longer than what was published"));
                    }
                    let ring = self.ring(at + size).map_err(GetFail::Map)?;
                    out.clear();
                    out.reserve_exact(len as usize);
                    // SAFETY: `[at + 8, at + 8 + len)` lies in the ring (checked above) and in
                    // the published part, which producers do not write until `head` passes it
                    // and which no other consumer reads while we hold the get lock; `out` has
                    // room for `len` bytes, which the copy initialises before `set_len`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ring.at(at + HEADER, len), out.as_mut_ptr(), len as usize);
                        out.set_len(len as usize);
                    }
                    self.release_behind(at);
                    state.head.pos.store(head.advance(size, 1).0, Ordering::Release);
                    return Ok(());
                }
                _ => return Err(GetFail::Corrupt("unknown record kind")),
            }
        }
    }

    /// Under the get lock, before publishing a `head` past the record at ring offset `at`
    /// (already copied out): a producer that ran on past the kept part while records waited
    /// leaves a trail of pages behind the consumers; give them back, a chunk at a time.
    /// Only with the put lock (no producer writing meanwhile), and only while the producers
    /// are ahead in this lap, so that no record lies in the pages behind us.
    fn release_behind(&self, at: u64) {
        let state = self.state();
        let from = state.get.released.load(Ordering::Relaxed).max(self.keep_end);
        let to = at & !(PAGE - 1);
        if to < from + RELEASE_CHUNK.min(self.ring_len / 4) || to > self.ring_len {
            return;
        }
        match state.put.lock.try_lock() {
            Acquired::No => return,
            Acquired::OwnerDied => state.space.reset(),
            Acquired::Yes => {}
        }
        let head = Pos(state.head.pos.load(Ordering::Relaxed));
        let tail = self.tail();
        let (head_at, tail_at) = (head.bytes() & (self.ring_len - 1), tail.bytes() & (self.ring_len - 1));
        if self.lap(head) == self.lap(tail)
            && tail_at >= head_at
            && head_at >= to
            && self.shared.discard(self.ring_off as u64 + from, to - from).is_ok()
        {
            state.get.released.store(to, Ordering::Relaxed);
        }
        state.put.lock.unlock();
    }

    /// Under the get lock, the queue just found empty: gives back the pages past
    /// `soft + KEEP` if producers went there. Needs the put lock too (so that no producer
    /// writes meanwhile); if a producer holds it, some later drain will do it.
    fn trim(&self) {
        let state = self.state();
        let extent = state.extent.end.load(Ordering::Relaxed);
        let from = self.keep_end;
        if extent <= from {
            return;
        }
        match state.put.lock.try_lock() {
            Acquired::No => return,
            Acquired::OwnerDied => state.space.reset(),
            Acquired::Yes => {}
        }
        let extent = state.extent.end.load(Ordering::Relaxed).min(self.ring_len);
        if self.is_empty() && extent > from {
            // Both ends are page boundaries: the ring starts on one, `from` is one (half the
            // ring, or the warm part plus KEEP), and `extent` is rounded up within the ring.
            let len = extent.next_multiple_of(PAGE) - from;
            // Failure only leaves the memory in use: nothing to undo.
            if self.shared.discard(self.ring_off as u64 + from, len).is_ok() {
                state.extent.end.store(0, Ordering::Relaxed);
                state.get.released.store(0, Ordering::Relaxed);
            }
        }
        state.put.lock.unlock();
    }

    /// The positions, for a test's failure message.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let (head, tail) = (self.head(), self.tail());
        let lap_end = self.state().put.lap_end.load(Ordering::Relaxed);
        let (h, t) = (head.bytes() & (self.ring_len - 1), tail.bytes() & (self.ring_len - 1));
        format!(
            "head lap {} at {h}, tail lap {} at {t}, lap_end {lap_end}, items {}",
            self.lap(head),
            self.lap(tail),
            head.items_to(tail)
        )
    }

    /// How far producers went past the kept part, and the ring's first byte (for tests).
    #[cfg(test)]
    pub(crate) fn extent_and_base(&self) -> (u64, *mut u8) {
        (self.state().extent.end.load(Ordering::Relaxed), self.ring(self.ring_len).expect("mapping the ring").0)
    }

    /// `JoinableQueue`: items put but not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let done = self.state().tasks.done.load(Ordering::Acquire) & ITEM_MASK;
        self.tail().items().wrapping_sub(done) & ITEM_MASK
    }

    /// `JoinableQueue::task_done`: false if every item put is already done.
    pub(crate) fn task_done(&self) -> bool {
        let tasks = &self.state().tasks.done;
        let mut done = tasks.load(Ordering::Relaxed);
        loop {
            let unfinished = self.tail().items().wrapping_sub(done) & ITEM_MASK;
            if unfinished == 0 || unfinished > MAX_ITEMS {
                return false;
            }
            match tasks.compare_exchange_weak(done, (done + 1) & ITEM_MASK, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => done = now,
            }
        }
        if self.unfinished() == 0 {
            self.state().joined.notify(u32::MAX);
        }
        true
    }

    /// How many may be asleep in `join` (for tests).
    #[cfg(test)]
    pub(crate) fn join_sleepers(&self) -> u32 {
        self.state().joined.sleepers()
    }

    /// `JoinableQueue::join`: waits until every item put is done, or `deadline`.
    pub(crate) fn join(&self, deadline: Deadline) -> bool {
        self.unfinished() == 0 || self.state().joined.sleep_until(deadline, || self.unfinished() == 0)
    }
}
