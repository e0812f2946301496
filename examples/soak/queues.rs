//! Queues: producers put sequence-numbered items on a bounded queue and acknowledge each put
//! that returned in shared memory; consumers take items, check their payload, and log each in
//! a ring of shared memory that the supervisor reads. The supervisor kills random producers and
//! consumers and starts replacements (a new producer puts a new stream).
//!
//! What must hold, checked as each logged item is read and again at the end of the phase:
//! no item arrives twice; each consumer sees each stream's items in increasing order; every
//! payload is intact; no item arrives that was never put (its number is at most the stream's
//! acknowledged count, which counts the one put in flight); and at the end every acknowledged
//! item arrived, except at most one per killed consumer (the one in its hands).

use super::{LONG, Rng, Run, Thousands, join_stopped, kill_and_join, mix, start};
use multiprocess::{Error, Process, Queue, RawArray, StartMethod};
use std::collections::HashMap;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// An item: its stream (one per producer process), its number in the stream, its payload.
type Item = (u32, u64, Vec<u8>);

/// Producers and consumers alive at a time.
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
/// The queue's bound: small enough that producers often wait for room.
const MAXSIZE: usize = 64;
/// One item in this many is a large one.
const BIG_EVERY: u64 = 50;
const BIG: usize = 64 << 10;

/// The control words: stop putting, and (once the producers are gone) drain and return.
const STOP: usize = 0;
const DRAIN: usize = 1;
/// Then one word per producer slot: how many of its puts have returned.
const ACKED: usize = 2;

/// A consumer's log: the number of entries written, the number the supervisor has read, then
/// a ring of entries.
const COUNT: usize = 0;
const READ: usize = 1;
const RING: usize = 2;
const LOG_LEN: u64 = 1 << 14;

/// A log entry: the stream in bits 40..63, the number in bits 0..40, bit 63 if the payload was
/// not what the producer put.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const STREAM_MASK: u64 = (1 << 23) - 1;
const CORRUPT: u64 = 1 << 63;

/// The payload's length for item `(stream, seq)`: mostly short, one in [`BIG_EVERY`] 64 KiB.
fn payload_len(stream: u32, seq: u64) -> usize {
    let h = mix((u64::from(stream) << SEQ_BITS) ^ seq);
    if h.is_multiple_of(BIG_EVERY) { BIG } else { ((h >> 8) % 256) as usize }
}

/// The payload of item `(stream, seq)`: bytes from a generator seeded by both, so that a
/// byte out of place, a truncation or a swap with another item shows.
fn payload(stream: u32, seq: u64) -> Vec<u8> {
    let len = payload_len(stream, seq);
    let mut out = Vec::with_capacity(len + 8);
    let mut s = mix(u64::from(stream) ^ (seq << 23));
    while out.len() < len {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A producer: puts `(stream, 0), (stream, 1), ...` until told to stop (or killed), and after
/// each put returns records how many have.
fn producer(q: Queue<Item>, ctl: RawArray<u64>, slot: u64, stream: u32, seed: u64) -> multiprocess::Result<()> {
    let mut rng = Rng::new(seed);
    let acked = ACKED + slot as usize;
    let mut burst = 0;
    for seq in 0.. {
        if ctl.get(STOP) != Some(0) {
            return Ok(());
        }
        q.put((stream, seq, payload(stream, seq)))?;
        ctl.set(acked, seq + 1)?;
        // Bursts of 1 to 64 items and short rests: some 20,000 items a second at most, a
        // modest share of the machine, and the queue fills when a consumer pauses, so that
        // kills find producers copying, resting and asleep waiting for room.
        if burst == 0 {
            std::thread::sleep(rng.micros(200, 3000));
            burst = 1 + rng.below(64);
        }
        burst -= 1;
    }
    Ok(())
}

/// A consumer: takes items, checks each payload and logs it, until told to drain and the
/// queue is empty.
fn consumer(q: Queue<Item>, ctl: RawArray<u64>, log: RawArray<u64>, seed: u64) -> multiprocess::Result<()> {
    let mut rng = Rng::new(seed);
    let mut count = 0u64;
    loop {
        let (stream, seq, data) = match q.get_timeout(Duration::from_millis(50)) {
            Ok(item) => item,
            Err(Error::Empty) => {
                if ctl.get(DRAIN) != Some(0) && q.empty() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let intact = u64::from(stream) <= STREAM_MASK && seq <= SEQ_MASK && data == payload(stream, seq);
        let entry =
            ((u64::from(stream) & STREAM_MASK) << SEQ_BITS) | (seq & SEQ_MASK) | if intact { 0 } else { CORRUPT };
        // Wait for room in the ring: the supervisor reads it every millisecond or so.
        while count.saturating_sub(log.get(READ).unwrap_or(0)) >= LOG_LEN {
            std::thread::sleep(Duration::from_micros(200));
        }
        fence(Ordering::Acquire); // the supervisor's reads of the slot come before our write
        log.set(RING + (count % LOG_LEN) as usize, entry)?;
        fence(Ordering::Release); // the entry before the count that publishes it
        count += 1;
        log.set(COUNT, count)?;
        if rng.below(3000) == 0 {
            // A pause: the queue fills up and the producers wait for room.
            std::thread::sleep(rng.millis(2, 30));
        }
    }
}

/// What the queues did, summed over phases.
#[derive(Default)]
pub struct Stats {
    pub items: u64,
    pub big: u64,
    pub producer_kills: u64,
    pub consumer_kills: u64,
    /// Acknowledged items that never arrived (each in a killed consumer's hands).
    pub lost: u64,
    /// Unacknowledged items of killed producers that arrived anyway.
    pub in_flight_delivered: u64,
    pub duplicates: u64,
    /// Samples of the queue's fill (about one a millisecond), and how many found it full.
    pub samples: u64,
    pub full: u64,
    /// The longest the queue held items while no consumer took one.
    pub max_wait: Duration,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.items += o.items;
        self.big += o.big;
        self.producer_kills += o.producer_kills;
        self.consumer_kills += o.consumer_kills;
        self.lost += o.lost;
        self.in_flight_delivered += o.in_flight_delivered;
        self.duplicates += o.duplicates;
        self.samples += o.samples;
        self.full += o.full;
        self.max_wait = self.max_wait.max(o.max_wait);
    }

    pub fn line(&self) -> String {
        format!(
            "queues {} items, {}+{} kills, {} lost",
            Thousands(self.items),
            Thousands(self.producer_kills),
            Thousands(self.consumer_kills),
            Thousands(self.lost)
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "queues: {} items moved (64 KiB: {}), {} producer kills, {} consumer kills, lost in consumers' hands: {} \
             (≤ {} allowed), in flight at a producer's kill and delivered: {}, duplicates {}, queue full {:.0}% of the \
             time, longest wait with items queued and none taken {}",
            Thousands(self.items),
            Thousands(self.big),
            Thousands(self.producer_kills),
            Thousands(self.consumer_kills),
            Thousands(self.lost),
            Thousands(self.consumer_kills),
            Thousands(self.in_flight_delivered),
            Thousands(self.duplicates),
            100.0 * self.full as f64 / self.samples.max(1) as f64,
            super::ms(self.max_wait)
        )
    }
}

/// What the supervisor knows of one stream.
struct Stream {
    /// Which numbers arrived.
    seen: Vec<u64>,
    /// Its producer's acknowledged count once the producer is gone (final), and whether it
    /// was killed (then number `acked` may have arrived too).
    done: Option<(u64, bool)>,
}

impl Stream {
    /// Marks `seq` as arrived; false if it had already.
    fn mark(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let was = self.seen[word] & (1 << bit) != 0;
        self.seen[word] |= 1 << bit;
        !was
    }

    fn has(&self, seq: u64) -> bool {
        self.seen.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// How many of `0..n` did not arrive.
    fn missing_below(&self, n: u64) -> u64 {
        (0..n).filter(|&s| !self.has(s)).count() as u64
    }
}

struct ProducerSlot {
    process: Process,
    stream: u32,
}

struct ConsumerSlot {
    process: Process,
    log: RawArray<u64>,
    read: u64,
    /// The last number this consumer took of each stream.
    last: HashMap<u32, u64>,
}

/// The supervisor's side of the queue component for one phase.
struct Supervisor<'a> {
    m: StartMethod,
    run: &'a Run,
    rng: Rng,
    q: Queue<Item>,
    ctl: RawArray<u64>,
    streams: Vec<Stream>,
    producers: Vec<ProducerSlot>,
    consumers: Vec<ConsumerSlot>,
    stats: Stats,
    serial: u64,
}

impl Supervisor<'_> {
    fn start_producer(&mut self, slot: usize) -> multiprocess::Result<ProducerSlot> {
        let stream = self.streams.len() as u32;
        self.streams.push(Stream { seen: Vec::new(), done: None });
        self.ctl.set(ACKED + slot, 0)?;
        let args = (self.q.clone(), self.ctl.clone(), slot as u64, stream, self.rng.fork());
        let process = start(self.m, format!("producer-{stream}"), producer, args)?;
        Ok(ProducerSlot { process, stream })
    }

    fn start_consumer(&mut self, log: RawArray<u64>) -> multiprocess::Result<ConsumerSlot> {
        log.set(COUNT, 0)?;
        log.set(READ, 0)?;
        self.serial += 1;
        let args = (self.q.clone(), self.ctl.clone(), log.clone(), self.rng.fork());
        let process = start(self.m, format!("consumer-{}", self.serial), consumer, args)?;
        Ok(ConsumerSlot { process, log, read: 0, last: HashMap::new() })
    }

    /// The acknowledged count of `stream` now: final if its producer is gone, else read from
    /// its slot.
    fn acked(&self, stream: u32) -> Option<u64> {
        if let Some((acked, _)) = self.streams.get(stream as usize)?.done {
            return Some(acked);
        }
        let slot = self.producers.iter().position(|p| p.stream == stream)?;
        self.ctl.get(ACKED + slot)
    }

    /// Reads what consumer `i` logged since last time, checking each entry; whether there was
    /// anything.
    fn read_log(&mut self, i: usize) -> bool {
        let c = &self.consumers[i];
        let count = c.log.get(COUNT).unwrap_or(0);
        fence(Ordering::Acquire); // the entries before the count that published them
        if count < c.read || count - c.read > LOG_LEN {
            let detail = format!("consumer {} logged {count} after {}", c.process.name(), c.read);
            self.run.fail("queues: consumer log sane", detail);
            return false;
        }
        let entries: Vec<u64> =
            (c.read..count).map(|n| c.log.get(RING + (n % LOG_LEN) as usize).unwrap_or(0)).collect();
        fence(Ordering::Release); // our reads of the slots before the consumer may reuse them
        let _ = c.log.set(READ, count);
        self.consumers[i].read = count;
        let any = !entries.is_empty();
        for entry in entries {
            self.check_entry(i, entry);
        }
        any
    }

    fn check_entry(&mut self, i: usize, entry: u64) {
        let (stream, seq) = (((entry >> SEQ_BITS) & STREAM_MASK) as u32, entry & SEQ_MASK);
        let name = self.consumers[i].process.name().to_string();
        if entry & CORRUPT != 0 {
            let detail = format!("{name} took item ({stream}, {seq}) with a payload other than the one put");
            return self.run.fail("queues: payloads intact", detail);
        }
        let Some(acked) = self.acked(stream) else {
            return self.run.fail(
                "queues: nothing arrives that was not put",
                format!("{name} took an item of unknown stream {stream}"),
            );
        };
        // Item `seq` exists once its put has begun, by which time the puts before it had all
        // returned: so `seq <= acked`, with `seq == acked` the put in flight (only possible
        // while the producer lives, or if it was killed).
        let killed_or_alive = self.streams[stream as usize].done.is_none_or(|(_, killed)| killed);
        if seq > acked || (seq == acked && !killed_or_alive) {
            let detail = format!("{name} took item ({stream}, {seq}) of a producer whose puts returned {acked} times");
            return self.run.fail("queues: nothing arrives that was not put", detail);
        }
        if let Some(&last) = self.consumers[i].last.get(&stream)
            && last >= seq
        {
            let detail = format!("{name} took item ({stream}, {seq}) after ({stream}, {last})");
            return self.run.fail("queues: items in order per producer", detail);
        }
        self.consumers[i].last.insert(stream, seq);
        if !self.streams[stream as usize].mark(seq) {
            self.stats.duplicates += 1;
            let detail = format!("item ({stream}, {seq}) arrived twice (the second time at {name})");
            return self.run.fail("queues: no item duplicated", detail);
        }
        self.stats.items += 1;
        if payload_len(stream, seq) == BIG {
            self.stats.big += 1;
        }
    }

    /// Fails the phase if a child died without being killed.
    fn check_alive(&mut self) {
        let dead = self.producers.iter().map(|p| &p.process).chain(self.consumers.iter().map(|c| &c.process));
        for p in dead {
            if let Some(code) = p.exitcode() {
                let detail = format!("{} exited on its own with {code} (see its message above)", p.name());
                self.run.fail("queues: children live until killed or stopped", detail);
                return;
            }
        }
    }

    fn kill_producer(&mut self) -> multiprocess::Result<()> {
        let slot = self.rng.below(PRODUCERS as u64) as usize;
        if let Err(e) = kill_and_join(&mut self.producers[slot].process) {
            self.run.fail("queues: children live until killed", e);
            return Ok(());
        }
        self.stats.producer_kills += 1;
        let stream = self.producers[slot].stream;
        let acked = self.ctl.get(ACKED + slot).unwrap_or(0);
        self.streams[stream as usize].done = Some((acked, true));
        self.producers[slot] = self.start_producer(slot)?;
        Ok(())
    }

    fn kill_consumer(&mut self) -> multiprocess::Result<()> {
        let i = self.rng.below(CONSUMERS as u64) as usize;
        if let Err(e) = kill_and_join(&mut self.consumers[i].process) {
            self.run.fail("queues: children live until killed", e);
            return Ok(());
        }
        self.stats.consumer_kills += 1;
        // Dead: its log is final. Read it all before the slot is reused.
        self.read_log(i);
        let log = self.consumers[i].log.clone();
        self.consumers[i] = self.start_consumer(log)?;
        Ok(())
    }

    fn read_all_logs(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.consumers.len() {
            any |= self.read_log(i);
        }
        any
    }

    /// The phase is over: stop the producers, let the consumers drain the queue, and check
    /// that every acknowledged item arrived (but for the allowance).
    fn wind_down(&mut self) {
        let _ = self.ctl.set(STOP, 1);
        // The producers may wait for room: keep reading the logs while they stop.
        for slot in 0..self.producers.len() {
            let deadline = Instant::now() + LONG;
            while self.producers[slot].process.exitcode().is_none() && Instant::now() < deadline {
                self.read_all_logs();
                let _ = self.producers[slot].process.join_timeout(Duration::from_millis(5));
            }
            let stopped = join_stopped(&mut self.producers[slot].process, "producer");
            if let Err(e) = &stopped {
                self.run.fail("queues: not wedged (a producer stops when told)", e);
            }
            let stream = self.producers[slot].stream;
            let acked = self.ctl.get(ACKED + slot).unwrap_or(0);
            self.streams[stream as usize].done = Some((acked, stopped.is_err()));
        }
        let _ = self.ctl.set(DRAIN, 1);
        for i in 0..self.consumers.len() {
            let deadline = Instant::now() + LONG;
            while self.consumers[i].process.exitcode().is_none() && Instant::now() < deadline {
                self.read_all_logs();
                let _ = self.consumers[i].process.join_timeout(Duration::from_millis(5));
            }
            if let Err(e) = join_stopped(&mut self.consumers[i].process, "consumer") {
                self.run.fail("queues: not wedged (the consumers drain the queue)", e);
            }
        }
        self.read_all_logs();
        self.producers.clear();
        self.consumers.clear();

        // Nothing is left, and the queue still works.
        if !self.q.empty() || !matches!(self.q.get_nowait(), Err(Error::Empty)) {
            self.run.fail("queues: drained", format!("{} items left after the consumers drained it", self.q.qsize()));
        }
        let probe: Item = (u32::MAX, 7, vec![7; 10]);
        match self.q.put(probe.clone()).map_err(Error::from).and_then(|()| self.q.get_timeout(LONG)) {
            Ok(got) if got == probe => {}
            Ok(got) => self.run.fail("queues: not wedged", format!("put then get gave item ({}, {})", got.0, got.1)),
            Err(e) => self.run.fail("queues: not wedged", format!("put then get after the phase: {e}")),
        }

        // Every acknowledged item arrived, but for one per killed consumer.
        for (id, s) in self.streams.iter().enumerate() {
            let Some((acked, killed)) = s.done else {
                self.run.fail("queues: accounting", format!("stream {id} has no final count"));
                continue;
            };
            self.stats.lost += s.missing_below(acked);
            if killed && s.has(acked) {
                self.stats.in_flight_delivered += 1;
            }
        }
        if self.stats.lost > self.stats.consumer_kills {
            let worst: Vec<String> = self
                .streams
                .iter()
                .enumerate()
                .filter_map(|(id, s)| {
                    let (acked, _) = s.done?;
                    let gaps: Vec<u64> = (0..acked).filter(|&n| !s.has(n)).take(5).collect();
                    (!gaps.is_empty()).then(|| format!("stream {id} (acked {acked}) lacks {gaps:?}"))
                })
                .take(5)
                .collect();
            let detail = format!(
                "{} acknowledged items never arrived, with {} consumer kills: {}",
                self.stats.lost,
                self.stats.consumer_kills,
                worst.join("; ")
            );
            self.run.fail("queues: no acknowledged item lost", detail);
        }
    }
}

/// Runs the queue component of a phase under `m` until `run` stops; adds what it did to
/// `stats`.
pub fn run(m: StartMethod, run: &Run, seed: u64, stats: &mut Stats) {
    if let Err(e) = run_inner(m, run, seed, stats) {
        run.fail("queues: setup", e);
    }
}

fn run_inner(m: StartMethod, run: &Run, seed: u64, stats: &mut Stats) -> multiprocess::Result<()> {
    let mut sup = Supervisor {
        m,
        run,
        rng: Rng::new(seed),
        q: Queue::with_maxsize(MAXSIZE)?,
        ctl: RawArray::new(ACKED + PRODUCERS)?,
        streams: Vec::new(),
        producers: Vec::new(),
        consumers: Vec::new(),
        stats: Stats::default(),
        serial: 0,
    };
    for slot in 0..PRODUCERS {
        let p = sup.start_producer(slot)?;
        sup.producers.push(p);
    }
    for _ in 0..CONSUMERS {
        let c = sup.start_consumer(RawArray::new(RING + LOG_LEN as usize)?)?;
        sup.consumers.push(c);
    }
    let mut next_kill = Instant::now() + sup.rng.millis(50, 300);
    let mut next_alive_check = Instant::now();
    let mut taken_at = Instant::now();
    while !run.stopping() {
        let took = sup.read_all_logs();
        let now = Instant::now();
        // Taken items, or none waiting: no wait. Else items wait (a consumer pauses, or was
        // killed and its replacement starts, or the queue is wedged).
        if took || sup.q.empty() {
            taken_at = now;
        }
        let waited = now - taken_at;
        sup.stats.max_wait = sup.stats.max_wait.max(waited);
        if waited > LONG {
            let detail = format!("{} items queued and none taken for {}", sup.q.qsize(), super::ms(waited));
            run.fail("queues: not wedged", detail);
        }
        sup.stats.samples += 1;
        sup.stats.full += u64::from(sup.q.full());
        if now >= next_alive_check {
            sup.check_alive();
            next_alive_check = now + Duration::from_millis(50);
        }
        if now >= next_kill && !run.stopping() {
            if sup.rng.below(2) == 0 {
                sup.kill_producer()?;
            } else {
                sup.kill_consumer()?;
            }
            next_kill = Instant::now() + sup.rng.millis(20, 300);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sup.wind_down();
    *stats = std::mem::take(&mut sup.stats);
    Ok(())
}
