//! The limit side of the queue workloads: messages from producer processes to this process
//! with no library, through a ring in `MAP_SHARED` memory or through a raw pipe.
//!
//! - [`ring_stream`] with one producer: a single-producer single-consumer ring (Lamport's,
//!   with cached positions). The producer writes a slot and publishes its position with one
//!   release store; the consumer takes everything published in one go (up to a quarter of
//!   the ring) and publishes its own position once per batch.
//! - [`ring_stream`] with several producers: a bounded multi-producer ring with a sequence
//!   word per slot (Vyukov's): a producer claims a position with a compare-and-swap, writes
//!   the slot and publishes it by storing the slot's sequence; the one consumer takes the
//!   slots in order.
//! - [`pipe_stream`]: one `write` of the whole message per message into a pipe, one `read`
//!   (more if the pipe hands out less) per message out of it.
//!
//! In a ring, a waiter (the consumer on an empty ring, a producer on a full one) spins
//! [`SPINS`] pauses and then sleeps on a futex word, counted as a sleeper, so that the other
//! side makes a system call only when someone sleeps. Small messages are a `u64` stored into
//! the slot; byte messages are `memcpy`d from a prepared buffer into the slot, and out of it
//! into the consumer's own buffer (two copies per message, the fewest a copying queue makes).
//!
//! Every message carries its producer and sequence number (byte messages in their first 8
//! bytes); the consumer checks that each producer's messages come complete and in order.
//! Children made here call only atomics, `memcpy`, raw system calls and `_exit` (see
//! [`fork_child`]).

use super::{child_failed, fork_child, kill_and_reap, os_err, reap};
use crate::pin::{PinGuard, Spread};
use crate::shm::{Gate, Line, SharedMap, Zeroable};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

/// Pauses a waiter spins before it sleeps: long enough to cover a wake-up across cores on
/// these machines (see `sync::SPINS`).
const SPINS: u32 = 2000;
/// A sleeping waiter wakes at least this often to check that the processes it waits for are
/// alive (a sleep of the fast path never lasts this long).
const NAP: Duration = Duration::from_millis(50);
/// Bits of a message's sequence number; the producer's index is above them.
const SEQ_BITS: u32 = 40;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A `u64`, stored into the slot (`queue_small`).
    U64,
    /// This many bytes (at least 9), copied in and out.
    Bytes(usize),
}

impl Payload {
    /// Bytes per message.
    pub fn size(self) -> usize {
        match self {
            Payload::U64 => 8,
            Payload::Bytes(n) => n,
        }
    }

    /// The bytes a producer copies each message from: `x`s (its sequence number goes over the
    /// first 8).
    fn prototype(self) -> Vec<u8> {
        vec![b'x'; self.size()]
    }

    /// Writes message `seq` to `dst` from the prepared `src`.
    ///
    /// # Safety
    /// `dst` is valid for `self.size()` bytes, 8-aligned, and nobody else reads or writes them
    /// now; `src` holds `self.size()` bytes.
    #[inline]
    unsafe fn write(self, dst: *mut u8, src: &[u8], seq: u64) {
        // SAFETY: by the caller's promise.
        unsafe {
            match self {
                Payload::U64 => dst.cast::<u64>().write(seq),
                Payload::Bytes(n) => {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n);
                    dst.cast::<u64>().write(seq.to_le());
                }
            }
        }
    }

    /// Reads the message at `src` (into `buf`, for bytes): its sequence number, or `None` if
    /// it is not a whole message.
    ///
    /// # Safety
    /// `src` is valid for `self.size()` bytes, 8-aligned, and nobody writes them now; `buf`
    /// holds `self.size()` bytes.
    #[inline]
    unsafe fn read(self, src: *const u8, buf: &mut [u8]) -> Option<u64> {
        // SAFETY: by the caller's promise.
        unsafe {
            match self {
                Payload::U64 => Some(src.cast::<u64>().read()),
                Payload::Bytes(n) => {
                    std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), n);
                    (buf[n - 1] == b'x').then(|| u64::from_le_bytes(buf[..8].try_into().unwrap_or_default()))
                }
            }
        }
    }
}

/// The sequence number of message `i` of producer `producer`.
pub fn seq_of(producer: usize, i: u64) -> u64 {
    (producer as u64) << SEQ_BITS | i
}

/// Checks that each producer's messages arrive in order, none missing.
pub struct InOrder {
    next: Vec<u64>,
}

impl InOrder {
    pub fn new(producers: usize) -> InOrder {
        InOrder { next: vec![0; producers] }
    }

    /// Takes message `seq`; false if it is not the next one of its producer.
    #[inline]
    pub fn see(&mut self, seq: u64) -> bool {
        match self.next.get_mut((seq >> SEQ_BITS) as usize) {
            Some(next) if *next == seq & ((1 << SEQ_BITS) - 1) => {
                *next += 1;
                true
            }
            _ => false,
        }
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: a valid aligned word in a shared mapping; `ts` lives for the call.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &ts as *const _) };
    // Woken, or the word had changed, or a signal: look again. Only a timeout says false.
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE uses the address only as a key.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Where one side of a ring sleeps: a futex word, and how many sleep on it.
#[repr(C)]
#[derive(Default)]
struct Sleepers {
    word: AtomicU32,
    count: AtomicU32,
}

impl Sleepers {
    /// After publishing: wakes the sleepers if there are any; no system call otherwise. The
    /// look at `count` is not fenced against the publishing store, so a sleeper that went to
    /// sleep just then may be missed; it is woken by the next `notify`, or by the
    /// [`notify_fenced`](Self::notify_fenced) the other side makes before it sleeps or stops.
    #[inline]
    fn notify(&self) {
        if self.count.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
        futex_wake_all(&self.word);
    }

    /// `notify`, surely seeing a sleeper that counted itself before our last publication.
    fn notify_fenced(&self) {
        fence(Ordering::SeqCst);
        self.notify();
    }

    /// Waits until `ready()`: spins, then sleeps here, waking `other` (fenced) before each
    /// sleep, so that a wake-up it missed from us cannot leave both sides asleep. Every
    /// [`NAP`] asleep it asks `alive()`; false when that says no.
    fn wait(&self, other: &Sleepers, mut ready: impl FnMut() -> bool, mut alive: impl FnMut() -> bool) -> bool {
        for _ in 0..SPINS {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        let ok = loop {
            let seen = self.word.load(Ordering::SeqCst);
            if ready() {
                break true;
            }
            other.notify_fenced();
            if !futex_wait(&self.word, seen, NAP) && !alive() {
                break ready();
            }
        };
        self.count.fetch_sub(1, Ordering::SeqCst);
        ok
    }
}

/// A ring's control words, each on a cache line of its own; the slots follow in the mapping.
#[repr(C)]
#[derive(Default)]
struct Control {
    /// One producer: how many messages it published.
    tail: Line<AtomicU64>,
    /// How many messages the consumer took.
    head: Line<AtomicU64>,
    /// Several producers: the next position to claim.
    claim: Line<AtomicU64>,
    consumer: Line<Sleepers>,
    producers: Line<Sleepers>,
    gate: Gate,
}

// SAFETY: atomics only; zero is an empty ring, nobody asleep, a closed gate.
unsafe impl Zeroable for Control {}

/// This process's view of a ring (the mapping is at the same address in every fork child).
struct Ring<'a> {
    ctl: &'a Control,
    slots: *mut u8,
    cap: u64,
    /// Bytes per slot: the payload, after a sequence word in a multi-producer ring.
    stride: usize,
    /// Where the payload starts in a slot.
    offset: usize,
    payload: Payload,
}

impl Ring<'_> {
    /// Slot of position `pos`.
    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        // SAFETY: `pos % cap < cap`, and the mapping holds `cap * stride` bytes of slots.
        unsafe { self.slots.add((pos % self.cap) as usize * self.stride) }
    }

    /// Payload of position `pos`.
    #[inline]
    fn data(&self, pos: u64) -> *mut u8 {
        // SAFETY: `offset` is inside the slot.
        unsafe { self.slot(pos).add(self.offset) }
    }

    /// Multi-producer ring: the sequence word of position `pos`'s slot (`pos`: free for the
    /// producer of `pos`; `pos + 1`: holds message `pos`; less than `pos`: not yet taken
    /// from the previous lap).
    #[inline]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: each slot starts with an 8-aligned word that is only used as this atomic.
        unsafe { AtomicU64::from_ptr(self.slot(pos).cast()) }
    }

    /// One producer: puts messages `first..first + count` of producer 0.
    fn spsc_put(&self, src: &[u8], first: u64, count: u64) -> bool {
        let ctl = self.ctl;
        let mut tail = ctl.tail.load(Ordering::Relaxed);
        let mut head = ctl.head.load(Ordering::Acquire);
        for i in 0..count {
            if tail - head == self.cap {
                head = ctl.head.load(Ordering::Acquire);
                if tail - head == self.cap {
                    let room = || {
                        head = ctl.head.load(Ordering::Acquire);
                        tail - head < self.cap
                    };
                    if !ctl.producers.wait(&ctl.consumer, room, || true) {
                        return false;
                    }
                }
            }
            // SAFETY: the slot of `tail` is free (`tail - head < cap`): the consumer has taken
            // it and does not read it again until `tail` is published past it.
            unsafe { self.payload.write(self.data(tail), src, seq_of(0, first + i)) };
            tail += 1;
            ctl.tail.store(tail, Ordering::Release);
            ctl.consumer.notify();
        }
        ctl.consumer.notify_fenced();
        true
    }

    /// One producer: takes `count` messages, in batches.
    fn spsc_get(&self, count: u64, buf: &mut [u8], order: &mut InOrder, alive: impl FnMut() -> bool + Copy) -> bool {
        let ctl = self.ctl;
        let mut head = ctl.head.load(Ordering::Relaxed);
        let end = head + count;
        let batch = (self.cap / 4).max(1);
        while head < end {
            let mut tail = ctl.tail.load(Ordering::Acquire);
            if tail == head {
                let came = || {
                    tail = ctl.tail.load(Ordering::Acquire);
                    tail != head
                };
                if !ctl.consumer.wait(&ctl.producers, came, alive) {
                    return false;
                }
            }
            let stop = tail.min(end).min(head + batch);
            while head < stop {
                // SAFETY: `head < tail`: published by the producer (release store of `tail`,
                // which our acquire load saw), and not written again until `head` passes it.
                let seq = unsafe { self.payload.read(self.data(head), buf) };
                if !seq.is_some_and(|s| order.see(s)) {
                    return false;
                }
                head += 1;
            }
            ctl.head.store(head, Ordering::Release);
            ctl.producers.notify();
        }
        ctl.producers.notify_fenced();
        true
    }

    /// Several producers: producer `producer` puts its messages `first..first + count`.
    fn mpsc_put(&self, producer: usize, src: &[u8], first: u64, count: u64) -> bool {
        let ctl = self.ctl;
        for i in 0..count {
            let pos = loop {
                let pos = ctl.claim.load(Ordering::Relaxed);
                let seq = self.seq(pos).load(Ordering::Acquire);
                if seq == pos {
                    if ctl.claim.compare_exchange_weak(pos, pos + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                        break pos;
                    }
                } else if seq < pos {
                    // Full: the consumer has not taken this slot's previous message yet.
                    let freed = || self.seq(pos).load(Ordering::Acquire) >= pos;
                    if !ctl.producers.wait(&ctl.consumer, freed, || true) {
                        return false;
                    }
                }
                // Otherwise another producer claimed `pos`: try the next one.
            };
            // SAFETY: we claimed `pos` and its slot is free (sequence `pos`): nobody else
            // reads or writes it until we publish it.
            unsafe { self.payload.write(self.data(pos), src, seq_of(producer, first + i)) };
            self.seq(pos).store(pos + 1, Ordering::Release);
            ctl.consumer.notify();
        }
        ctl.consumer.notify_fenced();
        true
    }

    /// Several producers: takes `count` messages, one slot at a time.
    fn mpsc_get(&self, count: u64, buf: &mut [u8], order: &mut InOrder, alive: impl FnMut() -> bool + Copy) -> bool {
        let ctl = self.ctl;
        let mut pos = ctl.head.load(Ordering::Relaxed);
        for _ in 0..count {
            let seq = self.seq(pos);
            if seq.load(Ordering::Acquire) != pos + 1 {
                let came = || seq.load(Ordering::Acquire) == pos + 1;
                if !ctl.consumer.wait(&ctl.producers, came, alive) {
                    return false;
                }
            }
            // SAFETY: sequence `pos + 1`: published by its producer (release store, seen by
            // our acquire load), and nobody writes it until we hand it back below.
            let got = unsafe { self.payload.read(self.data(pos), buf) };
            if !got.is_some_and(|s| order.see(s)) {
                return false;
            }
            seq.store(pos + self.cap, Ordering::Release);
            pos += 1;
            ctl.producers.notify();
        }
        ctl.head.store(pos, Ordering::Relaxed);
        ctl.producers.notify_fenced();
        true
    }
}

/// The kind of ring [`ring_stream`] uses for `producers` producers, for the table.
pub fn ring_label(payload: Payload, producers: usize, cap: u64) -> String {
    let what = match payload {
        Payload::U64 => "u64 stores".to_string(),
        Payload::Bytes(_) => "memcpy in and out".to_string(),
    };
    if producers == 1 {
        format!("SPSC ring of {cap} slots, MAP_SHARED, {what}, spin then futex sleep")
    } else {
        format!("MPSC ring of {cap} slots (CAS claim, per-slot sequence), MAP_SHARED, {what}, spin then futex sleep")
    }
}

/// Forks one producer per CPU of `spread.producers`, each of which puts `warmup` messages,
/// waits at the gate and puts `n` more; this process (pinned to `spread.consumer`) takes the
/// warm-up messages untimed, opens the gate and takes the rest. Returns the time from the
/// opening of the gate to the last message taken.
pub fn ring_stream(payload: Payload, cap: u64, warmup: u32, n: u32, spread: &Spread) -> Result<Duration, String> {
    let _pin = PinGuard::pin(Some(spread.consumer)).map_err(|e| format!("pin: {e}"))?;
    let producers = spread.producers.len();
    let many = producers > 1;
    let offset = if many { 8 } else { 0 };
    let stride = (offset + payload.size()).next_multiple_of(8);
    let map = SharedMap::<Control>::with_extra(cap as usize * stride).map_err(|e| format!("mmap: {e}"))?;
    let ring = Ring { ctl: &map, slots: map.extra(), cap, stride, offset, payload };
    if many {
        (0..cap).for_each(|pos| ring.seq(pos).store(pos, Ordering::Relaxed));
    }
    let src = payload.prototype();
    let (warmup, n) = (u64::from(warmup), u64::from(n));
    let gate = &map.gate;
    let mut pids = Vec::new();
    for (k, &cpu) in spread.producers.iter().enumerate() {
        let (ring, src) = (&ring, &src[..]);
        let forked = fork_child(Some(cpu), move || {
            let put = |first, count| {
                if many { ring.mpsc_put(k, src, first, count) } else { ring.spsc_put(src, first, count) }
            };
            put(0, warmup) && {
                if !gate.arrive() {
                    return true; // the parent gave up
                }
                let ok = put(warmup, n);
                gate.finish();
                ok
            }
        });
        match forked {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                gate.abort();
                pids.into_iter().for_each(kill_and_reap);
                return Err(e);
            }
        }
    }
    let alive = || !pids.iter().any(|&pid| child_failed(pid));
    let mut buf = vec![0u8; payload.size()];
    let mut order = InOrder::new(producers);
    let mut get = |count| {
        let ok = if many {
            ring.mpsc_get(count, &mut buf, &mut order, alive)
        } else {
            ring.spsc_get(count, &mut buf, &mut order, alive)
        };
        if ok { Ok(()) } else { Err("a message came out of order or damaged, or a producer failed".to_string()) }
    };
    let mut run = || -> Result<Duration, String> {
        get(producers as u64 * warmup)?;
        gate.wait_ready(producers as u32, alive)?;
        let t = Instant::now();
        gate.open();
        get(producers as u64 * n)?;
        Ok(t.elapsed())
    };
    match run() {
        Ok(elapsed) => {
            let reaped: Vec<Result<(), String>> = pids.into_iter().map(reap).collect();
            reaped.into_iter().collect::<Result<(), String>>()?;
            Ok(elapsed)
        }
        Err(e) => {
            gate.abort();
            pids.into_iter().for_each(kill_and_reap);
            Err(e)
        }
    }
}

/// Writes all of `buf`; async-signal-safe. False on error.
fn write_all(fd: libc::c_int, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: reads at most `buf.len()` bytes from `buf`.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

/// Fills `buf`; false on error or end of file.
fn read_exact(fd: libc::c_int, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most `buf.len() - got` bytes inside `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        got += n as usize;
    }
    true
}

/// One producer (pinned to `spread.producers[0]`) writes `warmup`, then (after the gate)
/// `n` messages of `payload.size()` bytes into a pipe, one `write` each; this process reads
/// them one message at a time. The time from the opening of the gate to the last message read.
pub fn pipe_stream(payload: Payload, warmup: u32, n: u32, spread: &Spread) -> Result<Duration, String> {
    let _pin = PinGuard::pin(Some(spread.consumer)).map_err(|e| format!("pin: {e}"))?;
    let cpu = *spread.producers.first().ok_or("no producer")?;
    let gate = SharedMap::<Gate>::new().map_err(|e| format!("mmap: {e}"))?;
    let mut fds = [0; 2];
    // SAFETY: room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    let [rd, wr] = fds;
    let mut msg = payload.prototype();
    let (warmup, n) = (u64::from(warmup), u64::from(n));
    let g: &Gate = &gate;
    let forked = fork_child(Some(cpu), || {
        // SAFETY: the child's copy of the read end: closed so that only the parent reads.
        unsafe { libc::close(rd) };
        let mut put = |first: u64, count: u64| {
            (first..first + count).all(|i| {
                msg[..8].copy_from_slice(&seq_of(0, i).to_le_bytes());
                write_all(wr, &msg)
            })
        };
        put(0, warmup) && {
            if !g.arrive() {
                return true;
            }
            put(warmup, n)
        }
    });
    // SAFETY: our copy of the write end: closed so that a dead producer means end of file.
    unsafe { libc::close(wr) };
    let pid = match forked {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: our descriptor.
            unsafe { libc::close(rd) };
            return Err(e);
        }
    };
    let mut buf = payload.prototype();
    let mut order = InOrder::new(1);
    let mut get = |count: u64| {
        for _ in 0..count {
            if !read_exact(rd, &mut buf) {
                return Err(os_err("read (or end of file: the producer failed)"));
            }
            let seq = u64::from_le_bytes(buf[..8].try_into().unwrap_or_default());
            let intact = payload == Payload::U64 || buf[buf.len() - 1] == b'x';
            if !intact || !order.see(seq) {
                return Err("a message came out of order or damaged".to_string());
            }
        }
        Ok(())
    };
    let mut run = || -> Result<Duration, String> {
        get(warmup)?;
        g.wait_ready(1, || !child_failed(pid))?;
        let t = Instant::now();
        g.open();
        get(n)?;
        Ok(t.elapsed())
    };
    let result = run();
    if result.is_err() {
        g.abort();
        kill_and_reap(pid);
    }
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(rd) };
    let elapsed = result?;
    reap(pid)?;
    Ok(elapsed)
}
