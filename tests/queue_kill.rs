//! Queues under real SIGKILLs: what CPython loses or wedges on, we must not.
//!
//! - An item whose `put` returned is delivered, even if its producer exits or is killed right
//!   after (CPython's feeder thread dies with it, and the item with it).
//! - A producer or consumer killed anywhere in `put` or `get` (holding the queue's lock,
//!   half-way through copying a record) neither wedges the queue nor corrupts it for the
//!   others; at most the one item in the killed process's hands is lost.
//!
//! Producers record, after each `put` returns, how many of theirs have returned, in shared
//! memory; consumers record each item they return. Kills land at random points.
mod common;
use common::{join_ok, start};
use multiprocess::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the parent waits for what should come at once before calling it a hang.
const LONG: Duration = Duration::from_secs(20);

/// xorshift64*: kill times that differ from run to run but can be replayed from the seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        eprintln!("seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn kill_and_join(p: &mut Process) {
    p.kill().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL), "child {} was not killed", p.name());
}

/// Puts `(id, 0), (id, 1), ...` for ever (until killed), with a payload of `pad` bytes, and
/// after each put returns records how many have returned.
fn producer(q: Queue<(u32, u64, Vec<u8>)>, returned: RawArray<u64>, id: u32, pad: usize) -> Result<()> {
    for seq in 0.. {
        q.put((id, seq, vec![id as u8; pad]))?;
        returned.set(id as usize, seq + 1)?;
    }
    Ok(())
}

/// Checks what the parent received from each killed producer: `0..n` in order, where `n` is
/// what the producer recorded as returned, or one more (the item it had just put when the
/// kill came between its `put` and its record).
fn check_producers(received: &HashMap<u32, Vec<u64>>, returned: &RawArray<u64>, ids: u32) {
    for id in 0..ids {
        let got = received.get(&id).map(Vec::as_slice).unwrap_or(&[]);
        let n = returned.get(id as usize).unwrap();
        assert!(
            got.iter().copied().eq(0..got.len() as u64),
            "producer {id}: items out of order, doubled or missing: {:?}...",
            &got[..got.len().min(20)]
        );
        let len = got.len() as u64;
        assert!(len == n || len == n + 1, "producer {id}: {n} puts returned, {len} items delivered");
    }
}

fn drain(q: &Queue<(u32, u64, Vec<u8>)>, received: &mut HashMap<u32, Vec<u64>>, pad_of: impl Fn(u32) -> usize) {
    loop {
        match q.get_timeout(Duration::from_millis(300)) {
            Ok((id, seq, payload)) => {
                assert_eq!(payload, vec![id as u8; pad_of(id)], "item ({id}, {seq}) corrupted");
                received.entry(id).or_default().push(seq);
            }
            Err(Error::Empty) => return,
            Err(e) => panic!("get after kills: {e}"),
        }
    }
}

/// Producers killed at random points while the parent consumes: every returned put is
/// delivered, in order, intact, and the queue goes on working.
fn producers_killed(m: StartMethod, pad: usize, kills: u32, maxsize: usize) {
    let q = Queue::with_maxsize(maxsize).unwrap();
    let returned = RawArray::<u64>::new(kills as usize + 2).unwrap();
    let mut rng = Rng::seeded();
    let mut received: HashMap<u32, Vec<u64>> = HashMap::new();
    // Two producers at a time; each kill replaces one with a new id.
    let mut live: Vec<(u32, Process)> =
        (0..2).map(|id| (id, start(m, producer, (q.clone(), returned.clone(), id, pad)))).collect();
    let mut next_id = 2;
    for _ in 0..kills {
        let until = Instant::now() + Duration::from_millis(20 + rng.below(60));
        while Instant::now() < until {
            if let Ok((id, seq, payload)) = q.get_timeout(Duration::from_millis(5)) {
                assert_eq!(payload.len(), pad);
                received.entry(id).or_default().push(seq);
            }
        }
        let victim = rng.below(live.len() as u64) as usize;
        let (_, mut p) = live.remove(victim);
        kill_and_join(&mut p);
        if next_id < kills + 2 {
            live.push((next_id, start(m, producer, (q.clone(), returned.clone(), next_id, pad))));
            next_id += 1;
        }
    }
    for (_, p) in &mut live {
        kill_and_join(p);
    }
    drain(&q, &mut received, |_| pad);
    check_producers(&received, &returned, next_id);
    // Not wedged: a put and a get go through at once.
    q.put((99, 0, vec![])).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), (99, 0, vec![]));
    assert!(q.empty());
}

/// Takes items for ever, marking each in its own row of `marks` (a consumer's row is
/// `id * n ..`), and checks that it sees them in increasing order.
fn consumer(q: Queue<u64>, marks: RawArray<u8>, id: u64, n: u64) -> Result<()> {
    let mut last = None;
    loop {
        let x = q.get()?;
        assert!(x < n, "item {x} out of range");
        assert!(last < Some(x), "item {x} after {last:?}");
        last = Some(x);
        marks.set((id * n + x) as usize, 1)?;
        // A little work per item, so that the kills find the consumers mid-stream.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(2) {
            std::hint::spin_loop();
        }
    }
}

/// Consumers killed at random points while they take `n` items: each item is returned at
/// most once, at most one per kill is lost, and the queue goes on working.
fn consumers_killed(m: StartMethod, n: u64, kills: u64) {
    let q = Queue::<u64>::new().unwrap();
    for x in 0..n {
        q.put(x).unwrap();
    }
    let rows = kills + 2;
    let marks = RawArray::<u8>::new((rows * n) as usize).unwrap();
    let mut rng = Rng::seeded();
    let mut live: Vec<Process> = (0..2).map(|id| start(m, consumer, (q.clone(), marks.clone(), id, n))).collect();
    let mut mid_stream = 0;
    for next_id in 2..kills + 2 {
        std::thread::sleep(Duration::from_millis(5 + rng.below(30)));
        let victim = rng.below(live.len() as u64) as usize;
        let mut p = live.remove(victim);
        mid_stream += u64::from(!q.empty());
        kill_and_join(&mut p);
        live.push(start(m, consumer, (q.clone(), marks.clone(), next_id, n)));
    }
    // The live consumers take the rest.
    let t = Instant::now();
    while !q.empty() {
        assert!(t.elapsed() < LONG, "consumers wedged with {} items left", q.qsize());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100)); // the last items reach their marks
    for p in &mut live {
        kill_and_join(p);
    }
    let marks = marks.to_vec();
    let mut lost = 0;
    for x in 0..n {
        let times: u64 = (0..rows).map(|r| marks[(r * n + x) as usize] as u64).sum();
        assert!(times <= 1, "item {x} returned {times} times");
        lost += 1 - times;
    }
    // Each killed consumer may take one item with it (those killed at the end held none).
    assert!(lost <= kills, "{lost} items lost for {kills} kills");
    eprintln!(
        "{n} items, {kills} consumer kills ({mid_stream} mid-stream): {lost} lost in the killed processes' hands"
    );
    assert!(mid_stream >= kills / 2, "only {mid_stream} of {kills} kills came while items were left");
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
}

/// Puts one item, says so through `ready`, then sleeps until killed (or returns).
fn put_then_wait(q: Queue<String>, ready: Event, then_exit: bool) -> Result<()> {
    q.put("last words".to_string())?;
    ready.set();
    if !then_exit {
        std::thread::sleep(Duration::from_secs(60));
    }
    Ok(())
}

/// Sleeps in `get` on an empty queue until killed.
fn get_forever(q: Queue<u32>, ready: Event) -> Result<()> {
    ready.set();
    q.get()?;
    Ok(())
}

start_methods! {
    /// A put that returned survives its producer's SIGKILL right after (CPython loses it:
    /// the feeder thread had not written it to the pipe yet).
    fn item_put_before_sigkill_is_delivered(m) {
        let q = Queue::new().unwrap();
        let ready = Event::new().unwrap();
        let mut p = start(m, put_then_wait, (q.clone(), ready.clone(), false));
        assert!(ready.wait(Some(LONG)));
        kill_and_join(&mut p);
        assert_eq!(q.get_timeout(LONG).unwrap(), "last words");
        assert!(q.empty());
    }

    /// A put that returned survives its producer's exit right after.
    fn item_put_before_exit_is_delivered(m) {
        let q = Queue::new().unwrap();
        let ready = Event::new().unwrap();
        let mut p = start(m, put_then_wait, (q.clone(), ready.clone(), true));
        join_ok(&mut p);
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get_timeout(LONG).unwrap(), "last words");
    }

    /// Small items; two producers at a time, eight kills.
    fn producers_killed_small_items(m) {
        producers_killed(m, 8, 8, 0);
    }

    /// 256 KiB items, so that many kills land while a producer copies a record in (holding
    /// the put lock), on a bounded queue, so that others land while it waits for room.
    fn producers_killed_mid_copy(m) {
        producers_killed(m, 256 << 10, 6, 64);
    }

    /// Consumers killed while they take 200,000 items.
    fn consumers_killed(m) {
        consumers_killed(m, 200_000, 6);
    }

    /// A consumer killed while asleep in `get` (holding the get lock) does not keep the next
    /// item from another consumer.
    fn consumer_killed_asleep_in_get(m) {
        let q = Queue::new().unwrap();
        let ready = Event::new().unwrap();
        let mut p = start(m, get_forever, (q.clone(), ready.clone()));
        assert!(ready.wait(Some(LONG)));
        std::thread::sleep(Duration::from_millis(100)); // asleep in get by now
        kill_and_join(&mut p);
        q.put(5).unwrap();
        let t = Instant::now();
        assert_eq!(q.get_timeout(LONG).unwrap(), 5);
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?} after the sleeper's death", t.elapsed());
    }
}
