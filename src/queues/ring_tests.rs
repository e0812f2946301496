//! The ring's protocol on small rings (16 KiB, a 4 KiB warm part), where every path runs
//! thousands of times: going back to 0 with a pad record, going on past the warm part,
//! records larger than the warm part, a full ring, many producers and consumers. Threads
//! stand in for processes here (the ring is shared memory either way); the queue tests run
//! the same with processes and kills.

use super::ring::{GetFail, PutFail, Ring};
use crate::sys::Deadline;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RING: u64 = 16 << 10;
const SOFT: u64 = 4 << 10;

fn small_ring(maxsize: u64) -> Arc<Ring> {
    Arc::new(Ring::with_geometry(maxsize, 7, RING, SOFT).unwrap())
}

/// xorshift64*: deterministic sizes and contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A record: producer, sequence number, then `len - 16` bytes derived from both.
fn record(producer: u64, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((16..len).map(|i| (i as u64 ^ seq ^ producer.rotate_left(8)) as u8));
    v
}

/// Checks a record's bytes and returns (producer, seq).
fn check(v: &[u8]) -> (u64, u64) {
    assert!(v.len() >= 16, "short record: {} bytes", v.len());
    let producer = u64::from_le_bytes(v[..8].try_into().unwrap());
    let seq = u64::from_le_bytes(v[8..16].try_into().unwrap());
    assert!(v == record(producer, seq, v.len()), "record ({producer}, {seq}) corrupted");
    (producer, seq)
}

fn forever() -> Deadline {
    Deadline::after(Some(Duration::from_secs(60)))
}

#[test]
fn one_producer_one_consumer_every_size() {
    let ring = small_ring(0);
    let n = 30_000;
    let producer = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(42);
            for seq in 0..n {
                // Mostly small, sometimes larger than the warm part, up to the largest.
                let len = match rng.below(10) {
                    0 => rng.below(ring.max_payload() + 1),
                    1..=3 => rng.below(2000),
                    _ => rng.below(100),
                };
                ring.put(&record(0, seq, len as usize), forever()).unwrap();
            }
        })
    };
    let mut out = Vec::new();
    for seq in 0..n {
        ring.get(&mut out, forever()).unwrap();
        assert_eq!(check(&out), (0, seq));
    }
    producer.join().unwrap();
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
}

#[test]
fn many_producers_many_consumers() {
    let ring = small_ring(0);
    let (producers, per) = (3u64, 8_000u64);
    let mut threads = Vec::new();
    for p in 0..producers {
        let ring = ring.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(p + 1);
            for seq in 0..per {
                let bound = if rng.below(20) == 0 { 6000 } else { 300 };
                let len = rng.below(bound);
                let r = ring.put(&record(p, seq, len as usize), Deadline::after(Some(Duration::from_secs(5))));
                assert!(r.is_ok(), "put of {len} bytes: {r:?}; {}", ring.describe());
            }
            Vec::new()
        }));
    }
    for _ in 0..3 {
        let ring = ring.clone();
        threads.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut out = Vec::new();
            loop {
                match ring.get(&mut out, Deadline::after(Some(Duration::from_millis(500)))) {
                    Ok(()) => got.push(check(&out)),
                    Err(GetFail::Empty) => return got,
                    Err(e) => panic!("{e:?}"),
                }
            }
        }));
    }
    let mut last: HashMap<u64, Vec<u64>> = HashMap::new();
    for t in threads {
        let got = t.join().unwrap();
        // One consumer sees each producer's records in the order they were put.
        let mut seen: HashMap<u64, u64> = HashMap::new();
        for &(p, seq) in &got {
            if let Some(&prev) = seen.get(&p) {
                assert!(seq > prev, "producer {p}: {seq} after {prev}");
            }
            seen.insert(p, seq);
            last.entry(p).or_default().push(seq);
        }
    }
    for p in 0..producers {
        let mut all = last.remove(&p).unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..per).collect::<Vec<_>>(), "producer {p}: an item lost or doubled");
    }
}

#[test]
fn bounded_ring_waits_and_times_out() {
    let ring = small_ring(2);
    ring.put(b"a", forever()).unwrap();
    ring.put(b"b", forever()).unwrap();
    let t = Instant::now();
    assert!(matches!(ring.put(b"c", Deadline::after(Some(Duration::from_millis(200)))), Err(PutFail::Full)));
    assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    let consumer = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let mut out = Vec::new();
            ring.get(&mut out, forever()).unwrap();
            out
        })
    };
    ring.put(b"c", forever()).unwrap(); // waits for the consumer's get
    assert_eq!(consumer.join().unwrap(), b"a");
    assert_eq!(ring.len(), 2);
}

#[test]
fn a_full_ring_of_bytes_waits_for_room() {
    // Unbounded in items, but the ring holds only 16 KiB: the fourth 5,000-byte record waits.
    let ring = small_ring(0);
    let big = vec![9u8; 5000];
    for _ in 0..3 {
        ring.put(&big, Deadline::after(Some(Duration::ZERO))).unwrap();
    }
    assert!(matches!(ring.put(&big, Deadline::after(Some(Duration::from_millis(50)))), Err(PutFail::Full)));
    let mut out = Vec::new();
    ring.get(&mut out, forever()).unwrap();
    // Back at 0, ahead of the consumers, 8 bytes stay free for a jump record: a record a
    // little smaller than the one taken fits.
    assert!(matches!(ring.put(&big, Deadline::after(Some(Duration::ZERO))), Err(PutFail::Full)));
    ring.put(&big[..4992], Deadline::after(Some(Duration::ZERO))).unwrap();
    assert_eq!(ring.len(), 3);
}

#[test]
fn too_large_is_refused_at_once() {
    let ring = small_ring(0);
    let max = ring.max_payload() as usize;
    assert!(matches!(ring.put(&vec![0; max + 1], forever()), Err(PutFail::TooLarge)));
    ring.put(&vec![1; max], forever()).unwrap();
    let mut out = Vec::new();
    ring.get(&mut out, forever()).unwrap();
    assert_eq!(out, vec![1; max]);
}

#[test]
fn empty_get_times_out() {
    let ring = small_ring(0);
    let mut out = Vec::new();
    let t = Instant::now();
    assert!(matches!(ring.get(&mut out, Deadline::after(Some(Duration::from_millis(200)))), Err(GetFail::Empty)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(190) && took < Duration::from_secs(1), "{took:?}");
    assert!(matches!(ring.get(&mut out, Deadline::after(Some(Duration::ZERO))), Err(GetFail::Empty)));
}

#[test]
fn garbage_in_the_ring_is_an_error_not_a_panic() {
    let mut rng = Rng(9);
    for round in 0..200 {
        let ring = small_ring(0);
        for i in 0..(round % 7) {
            ring.put(&record(0, i, 40), forever()).unwrap();
        }
        ring.put(&record(1, 0, 64), forever()).unwrap();
        // Scribble over the ring's bytes where records are, as a hostile process could.
        let (_, base) = ring.extent_and_base();
        for _ in 0..8 {
            let at = rng.below(2048) as usize;
            // SAFETY: a test of what garbage does; `at` is inside the ring, and no other
            // thread uses this ring.
            unsafe { base.add(at).write_volatile(rng.next() as u8) };
        }
        let mut out = Vec::new();
        for _ in 0..16 {
            match ring.get(&mut out, Deadline::after(Some(Duration::ZERO))) {
                Ok(()) => {}
                Err(GetFail::Empty) | Err(GetFail::Busy) | Err(GetFail::Corrupt(_)) | Err(GetFail::Map(_)) => break,
            }
        }
    }
}

#[test]
fn pages_past_the_kept_part_are_given_back_once_drained() {
    let ring = small_ring(0);
    let big = vec![0xa5u8; 7000];
    // The first record lies at 0; the second cannot go back to 0 (the first is still
    // there), so it goes on past the warm part, up to byte 14016.
    ring.put(&big, forever()).unwrap();
    ring.put(&big, forever()).unwrap();
    let (extent, base) = ring.extent_and_base();
    assert_eq!(extent, 14016);
    // SAFETY: byte 12000 is inside the ring; nothing else uses it now.
    let probe = || unsafe { base.add(12000).read_volatile() };
    assert_eq!(probe(), 0xa5);
    let mut out = Vec::new();
    ring.get(&mut out, forever()).unwrap();
    assert_eq!(ring.extent_and_base().0, 14016, "not empty yet: nothing given back");
    ring.get(&mut out, forever()).unwrap();
    assert_eq!(out, big);
    assert_eq!(ring.extent_and_base().0, 0, "drained: the pages past 8 KiB go back");
    assert_eq!(probe(), 0, "a page given back reads as zeros");
    // And the ring goes on working from where it was.
    for i in 0..50u64 {
        ring.put(&record(0, i, 5000), forever()).unwrap();
        ring.get(&mut out, forever()).unwrap();
        assert_eq!(check(&out), (0, i));
    }
}

#[test]
fn a_stalled_consumer_never_makes_an_unbounded_put_wait() {
    // The consumers took one record and stopped. Producers must find room for everything up
    // to the ring's size without waiting: ahead of the consumers, then back at the start.
    let ring = small_ring(0);
    let mut out = Vec::new();
    ring.put(&[0u8; 3000], forever()).unwrap();
    ring.get(&mut out, forever()).unwrap();
    let now = || Deadline::after(Some(Duration::ZERO));
    for i in 0..15 {
        ring.put(&record(0, i, 1000), now()).unwrap_or_else(|e| panic!("put {i}: {e:?}"));
    }
    for i in 0..15 {
        ring.get(&mut out, now()).unwrap();
        assert_eq!(check(&out), (0, i));
    }
}

#[test]
fn pages_behind_a_lagging_consumer_are_given_back_on_the_way() {
    // 64 KiB ring: kept part 32 KiB, chunks of 16 KiB. The consumer stays one record behind,
    // so the producer never finds the queue empty and runs on past the kept part; the
    // consumer gives back what it leaves behind there.
    let ring = Arc::new(Ring::with_geometry(0, 7, 64 << 10, SOFT).unwrap());
    let mut out = Vec::new();
    ring.put(&record(0, 0, 2000), forever()).unwrap();
    for i in 1..30u64 {
        ring.put(&record(0, i, 2000), forever()).unwrap();
        ring.get(&mut out, forever()).unwrap();
        assert_eq!(check(&out), (0, i - 1));
    }
    let (_, base) = ring.extent_and_base();
    // SAFETY: offset 40,000 is inside the 64 KiB ring; no other thread uses it.
    let probe = unsafe { base.add(40_000).read_volatile() };
    assert_eq!(probe, 0, "a page behind the consumer, past the kept part, went back");
    ring.get(&mut out, forever()).unwrap();
    assert_eq!(check(&out), (0, 29));
}

#[test]
fn random_puts_and_gets_never_wait_below_a_quarter_full() {
    // One thread, random runs of puts and gets (consumers that stall for a while, then
    // catch up): every path of `fit` (warm, back to 0, on past the warm part, forced wrap,
    // jump) comes up many times. A put must succeed without waiting while the records
    // waiting take less than a quarter of the ring, unless the ring was nearly full since it
    // last drained (then the producers may have jumped to the end of the address space, and
    // wait there until the consumers reach their lap); everything comes out in order, intact.
    let ring = small_ring(0);
    let mut rng = Rng(2024);
    let mut waiting = std::collections::VecDeque::new();
    let mut bytes_waiting = 0u64;
    let (mut next, mut out) = (0u64, Vec::new());
    let (mut was_full, mut waits) = (false, 0u64);
    let now = || Deadline::after(Some(Duration::ZERO));
    for _ in 0..20_000 {
        let run = 1 + rng.below(12);
        let putting = rng.below(2) == 0;
        for _ in 0..run {
            if putting {
                let bound = if rng.below(8) == 0 { 3000 } else { 400 };
                let len = 16 + rng.below(bound) as usize;
                let size = (8 + len as u64).next_multiple_of(8);
                match ring.put(&record(0, next, len), now()) {
                    Ok(()) => {
                        waiting.push_back((next, size));
                        bytes_waiting += size;
                        next += 1;
                        was_full |= bytes_waiting > RING / 2;
                    }
                    Err(e) => {
                        let fair = !was_full && bytes_waiting + size <= RING / 4;
                        assert!(!fair, "{e:?} with {bytes_waiting} bytes waiting; {}", ring.describe());
                        waits += 1;
                        was_full = true;
                    }
                }
            } else if let Some((seq, size)) = waiting.pop_front() {
                ring.get(&mut out, now()).unwrap();
                assert_eq!(check(&out), (0, seq));
                bytes_waiting -= size;
                was_full &= bytes_waiting > 0;
            }
        }
    }
    // The ring did fill up now and then, so the paths that wait were taken too.
    assert!(next > 50_000 && waits > 0, "{next} records, {waits} puts that found no room");
}

/// Waits up to 10 s for `f()`.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A process killed inside `join` no longer leaves the sleeper count one high for ever (a
/// futex system call at every later notify): the first notify that wakes nobody takes a dead
/// process's count off. A live waiter beside it is still woken.
#[test]
fn a_join_waiter_killed_is_taken_off_the_count() {
    let ring = small_ring(0);
    ring.put(&record(0, 0, 8), forever()).unwrap();
    let in_child = Arc::clone(&ring);
    let mut child = crate::Process::from_closure(move || {
        in_child.join(Deadline::NEVER);
    });
    child.start().unwrap();
    assert!(eventually(|| ring.join_sleepers() == 1), "the child never slept in join");
    let live = Arc::clone(&ring);
    let thread = std::thread::spawn(move || live.join(Deadline::after(Some(Duration::from_secs(30)))));
    assert!(eventually(|| ring.join_sleepers() == 2), "the thread never slept in join");
    child.kill().unwrap();
    child.join().unwrap();
    assert_eq!(ring.join_sleepers(), 2, "a dead sleeper is still counted until a wake-up finds nobody");
    let mut out = Vec::new();
    ring.get(&mut out, forever()).unwrap();
    assert!(ring.task_done());
    assert!(thread.join().unwrap(), "the live waiter was woken");
    assert!(eventually(|| ring.join_sleepers() == 1));
    // The next wake-up finds no one asleep and takes the dead child off.
    ring.put(&record(0, 1, 8), forever()).unwrap();
    ring.get(&mut out, forever()).unwrap();
    assert!(ring.task_done());
    assert_eq!(ring.join_sleepers(), 0, "the dead waiter's count was not taken off");
}

/// An unbounded ring says it is full when not even an empty record fits: once its address
/// space is taken, and no more after a get makes room.
#[test]
fn an_unbounded_ring_says_when_it_is_full() {
    let ring = small_ring(0);
    assert!(!ring.is_full());
    let record = vec![1u8; 1000];
    let mut n = 0;
    while ring.put(&record, Deadline::after(Some(Duration::ZERO))).is_ok() {
        assert!(n < 10_000, "an unbounded ring of {RING} bytes took {n} records");
        n += 1;
    }
    assert!(n > 0);
    // Room for smaller records may be left: fill it with empty ones.
    while ring.put(&[], Deadline::after(Some(Duration::ZERO))).is_ok() {
        assert!(n < 20_000, "an unbounded ring of {RING} bytes took {n} records");
        n += 1;
    }
    assert!(ring.is_full(), "not even an empty record fits, yet the ring does not say it is full");
    let mut out = Vec::new();
    ring.get(&mut out, forever()).unwrap();
    assert!(!ring.is_full(), "a get made room, yet the ring says it is full");
    assert!(ring.put(&[], Deadline::after(Some(Duration::ZERO))).is_ok());
}

#[test]
fn a_pool_ring_cycles_through_its_small_warm_part_and_carries_larger_records() {
    let ring = Ring::for_pool(7).unwrap();
    assert!(ring.eager_yield());
    let mut out = Vec::new();
    // Small records, many laps of the 64 KiB warm part: each comes back whole, in order.
    for seq in 0..20_000u64 {
        ring.put(&record(1, seq, 40), forever()).unwrap();
        ring.get(&mut out, forever()).unwrap();
        assert_eq!(check(&out), (1, seq));
    }
    // A chunk of large results: four times the warm part, between small ones.
    let big = 4 * super::ring::POOL_SOFT_LEN as usize;
    for (seq, len) in [(0, 40), (1, big), (2, 40)] {
        ring.put(&record(2, seq, len), forever()).unwrap();
    }
    for (seq, len) in [(0, 40), (1, big), (2, 40)] {
        ring.get(&mut out, forever()).unwrap();
        assert_eq!((check(&out), out.len()), ((2, seq), len));
    }
    assert!(ring.is_empty());
}

#[test]
fn get_present_tells_an_empty_ring_from_a_busy_one() {
    let ring = small_ring(0);
    let mut out = Vec::new();
    let zero = || Deadline::after(Some(Duration::ZERO));
    assert!(matches!(ring.get_present(&mut out, zero()), Err(GetFail::Empty)));
    ring.put(&record(1, 1, 16), forever()).unwrap();
    ring.get_present(&mut out, zero()).unwrap();
    assert_eq!(check(&out), (1, 1));
    // Another consumer waits on the empty ring, holding its get lock: a record put now is
    // there, but not to be had without the lock.
    let waiter = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            ring.get(&mut out, forever()).map(|()| check(&out))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let got = ring.get_present(&mut out, Deadline::after(Some(Duration::from_millis(200))));
    let took = start.elapsed();
    assert!(matches!(got, Err(GetFail::Busy)), "{got:?}");
    assert!(took >= Duration::from_millis(190) && took < Duration::from_secs(1), "{took:?}");
    ring.put(&record(2, 1, 16), forever()).unwrap();
    assert_eq!(waiter.join().unwrap().ok(), Some((2, 1)));
}
