//! A manager's server under malformed and hostile requests from an authenticated client:
//! random frames, mutated requests, requests that wait for ever and are abandoned, calls on
//! objects that do not exist or are of another kind. Every one gets an error reply or a
//! closed connection; the server's memory stays bounded; a well-behaved client beside the
//! fuzzer is served throughout.

use super::wire::{Init, Kind, LockFlavour, Op, Reply, Request, SetRelation, Wait};
use crate::{Connection, StartMethod};
use std::time::Duration;

/// xorshift64*: deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.below(40) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn wait(&mut self) -> Wait {
        match self.below(3) {
            0 => Wait::No,
            1 => Wait::Nanos(self.below(20_000_000)),
            _ => Wait::Forever,
        }
    }
}

fn random_op(r: &mut Rng) -> Op {
    let b = r.bytes();
    match r.below(36) {
        0 => Op::DictGet(b),
        1 => Op::DictInsert(b, r.bytes()),
        2 => Op::DictRemove(b),
        3 => Op::DictItems,
        4 => Op::DictPopItem,
        5 => Op::ListGet(r.next() as i64),
        6 => Op::ListSet(r.next() as i64, b),
        7 => Op::ListPush(b),
        8 => Op::ListInsert(r.next() as i64, b),
        9 => Op::ListPop(Some(r.next() as i64)),
        10 => Op::ListSlice(Some(r.next() as i64), Some(r.next() as i64)),
        11 => Op::ListRepeat(r.next()),
        12 => Op::ListReplace { version: r.below(3), items: vec![b] },
        13 => Op::NsSet(String::from_utf8_lossy(&b).into_owned(), r.bytes(), String::new()),
        14 => Op::NsItems,
        15 => Op::ValueSet(b),
        16 => Op::QueuePut(b, r.wait()),
        17 => Op::QueueGet(r.wait()),
        18 => Op::QueueTaskDone,
        19 => Op::QueueJoin(r.wait()),
        20 => Op::LockAcquire { thread: r.below(3), wait: r.wait() },
        21 => Op::LockRelease { thread: r.below(3) },
        22 => Op::CondWait { thread: r.below(3), wait: r.wait() },
        23 => Op::CondNotify { thread: r.below(3), n: r.next() },
        24 => Op::BarrierWait(r.wait()),
        25 => Op::BarrierReset,
        26 => Op::EventWait(r.wait()),
        27 => Op::SetAdd(b),
        28 => Op::SetCompare(SetRelation::Subset, vec![b]),
        29 => Op::SetSymmetricDifferenceUpdate(vec![b.clone(), b]),
        30 => Op::Len,
        31 => Op::Clear,
        32 => Op::ListSnapshot,
        33 => Op::QueueSize,
        34 => Op::BarrierState,
        _ => Op::SetPop,
    }
}

fn random_request(r: &mut Rng) -> Request {
    let id = r.below(12);
    match r.below(10) {
        0 => {
            let kind = match r.below(8) {
                0 => Kind::Dict,
                1 => Kind::List,
                2 => Kind::Queue { maxsize: r.below(3), joinable: r.below(2) == 0 },
                3 => Kind::Lock { flavour: LockFlavour::RLock, value: r.next() },
                4 => Kind::Barrier { parties: r.next() },
                5 => Kind::Condition,
                6 => Kind::Set,
                _ => Kind::Value,
            };
            let init = match r.below(3) {
                0 => Init::Empty,
                1 => Init::One(r.bytes()),
                _ => Init::Items(vec![r.bytes()]),
            };
            Request::Create { kind, init, holds: vec![r.below(12)] }
        }
        1 => Request::IncRef { id },
        2 => Request::DecRef { id },
        3 => Request::Pin { id },
        4 => Request::Claim { id, pin: r.below(5) },
        5 => Request::PinMany { ids: vec![id; r.below(4) as usize] },
        6 => Request::Hello { protocol: r.below(4) as u32, version: "0.1.0".into(), pid: 1, tag: 1 },
        7 => Request::Shutdown,
        _ => Request::Call { id, op: random_op(r), holds: vec![r.below(12)] },
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A raw, authenticated connection to the server, past the hello.
fn raw(address: &crate::Address) -> Connection {
    let conn = crate::Client::connect(address.clone(), Some(crate::current_process().authkey())).unwrap();
    let hello = Request::Hello {
        protocol: super::wire::PROTOCOL,
        version: super::wire::VERSION.into(),
        pid: 4_000_000,
        tag: 7,
    };
    conn.send(&hello).unwrap();
    assert!(matches!(conn.recv::<Reply>().unwrap(), Reply::Hello { .. }));
    conn
}

#[test]
fn malformed_requests_get_errors_and_the_server_serves_on() {
    let local = super::SyncManager::builder().start_method(StartMethod::Fork).start().unwrap();
    fuzz(local);
    // A remote manager, over TCP: the same requests, through the Listener's handshake.
    let remote = super::SyncManager::builder().start_method(StartMethod::Fork).address(([127, 0, 0, 1], 0)).start();
    fuzz(remote.unwrap());
}

/// A hello from another version of the crate is refused, saying so.
#[test]
fn another_version_is_refused_at_the_hello() {
    let mgr = super::SyncManager::builder().start_method(StartMethod::Fork).start().unwrap();
    let conn = crate::Client::connect(mgr.address().clone(), Some(crate::current_process().authkey())).unwrap();
    conn.send(&Request::Hello { protocol: super::wire::PROTOCOL, version: "0.0.1".into(), pid: 1, tag: 1 }).unwrap();
    match conn.recv::<Reply>().unwrap() {
        Reply::Error(e) => assert!(e.message.contains("0.0.1") && e.message.contains(super::wire::VERSION), "{e:?}"),
        other => panic!("a hello of another version was answered {other:?}"),
    }
}

fn fuzz(mgr: super::SyncManager) {
    let good = mgr.dict::<u32, u32>().unwrap();
    // Objects of every kind for the fuzzer's calls to find (ids 2 to 11).
    let _kept = (
        mgr.queue_with_maxsize::<u8>(1).unwrap(),
        mgr.joinable_queue::<u8>().unwrap(),
        mgr.lock().unwrap(),
        mgr.rlock().unwrap(),
        mgr.condition().unwrap(),
        mgr.barrier(2).unwrap(),
        mgr.event().unwrap(),
        mgr.list_from([1u8]).unwrap(),
        mgr.set_from([1u8]).unwrap(),
        mgr.namespace().unwrap(),
    );
    let server = mgr.pid().unwrap();
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let before = rss_kib(server);
    let mut conn = raw(mgr.address());
    let (mut replies, mut dropped) = (0, 0);
    for round in 0..2000u32 {
        let frame = match r.below(4) {
            // Random bytes.
            0 => r.bytes(),
            // A request, mutated: a byte flipped, cut short, or grown.
            1 => {
                let mut b = postcard::to_allocvec(&random_request(&mut r)).unwrap();
                match r.below(3) {
                    0 if !b.is_empty() => {
                        let i = r.below(b.len() as u64) as usize;
                        b[i] ^= 1 << r.below(8);
                    }
                    1 => b.truncate(r.below(b.len() as u64 + 1) as usize),
                    _ => b.extend(r.bytes()),
                }
                b
            }
            // A well-formed request with random contents.
            _ => postcard::to_allocvec(&random_request(&mut r)).unwrap(),
        };
        if conn.send_bytes(&frame).is_err() {
            conn = raw(mgr.address());
            dropped += 1;
            continue;
        }
        // A call that waits for ever is abandoned after a moment: the server notices.
        match conn.poll(Some(Duration::from_millis(200))) {
            Ok(true) => match conn.recv::<Reply>() {
                Ok(_) => replies += 1,
                Err(_) => {
                    conn = raw(mgr.address());
                    dropped += 1;
                }
            },
            _ => {
                conn = raw(mgr.address());
                dropped += 1;
            }
        }
        if round % 100 == 0 {
            good.insert(round, round).unwrap();
            assert_eq!(good.get(&round).unwrap(), Some(round), "the good client is served");
        }
    }
    assert!(replies > 1000, "{replies} replies, {dropped} connections dropped");
    assert!(!crate::sys::pidfd::process_with_tag_gone(server as i32, 0), "the server died");
    let growth = rss_kib(server).saturating_sub(before);
    assert!(growth < 64 * 1024, "the server grew by {growth} KiB");
    drop(conn);
    good.insert(1, 1).unwrap();
}

/// A `get` that waits for ever, whose client then goes away, does not take the next item:
/// the server notices the closed connection before it hands anything over.
#[test]
fn an_abandoned_wait_takes_nothing() {
    let mgr = super::SyncManager::builder().start_method(StartMethod::Fork).start().unwrap();
    let q = mgr.queue::<u32>().unwrap();
    let l = mgr.lock().unwrap();
    l.acquire().unwrap();
    // The first two objects of a fresh server.
    let (q_id, l_id) = (1, 2);
    for (id, op) in [(q_id, Op::QueueGet(Wait::Forever)), (l_id, Op::LockAcquire { thread: 1, wait: Wait::Forever })] {
        let conn = raw(mgr.address());
        conn.send(&Request::Call { id, op, holds: Vec::new() }).unwrap();
        assert!(!conn.poll(Some(Duration::from_millis(100))).unwrap(), "the call waits");
        // Shut down, not just closed: under plain `cargo test` a fork child of a test beside
        // this one may hold a copy of the descriptor, and the server would see no end.
        // SAFETY: shutdown(2) on the connection's own socket, which stays open meanwhile.
        unsafe { libc::shutdown(conn.fileno().unwrap(), libc::SHUT_RDWR) };
        drop(conn);
    }
    // Past one of the server's checks (every 100 ms), the abandoned calls are gone.
    std::thread::sleep(Duration::from_millis(300));
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 7, "the abandoned get took the item");
    l.release().unwrap();
    assert!(l.try_acquire().unwrap(), "the abandoned acquire took the lock");
}

/// A client that writes garbage into its mailbox: a length past the area gets the
/// connection dropped, random bytes an error reply; the server serves the others on.
#[test]
fn garbage_in_a_mailbox_is_refused() {
    use super::channel::Channel;
    let mgr = super::SyncManager::builder().start_method(StartMethod::Fork).start().unwrap();
    let good = mgr.dict::<u8, u8>().unwrap();
    let mut r = Rng(0x0bad_f00d_0000_0002);
    for round in 0..60u32 {
        let conn = raw(mgr.address());
        let mut channel = Channel::create().unwrap();
        conn.send(&Request::Channel).unwrap();
        assert!(matches!(conn.recv::<Reply>().unwrap(), Reply::Done));
        channel.offer(&conn).unwrap();
        let bytes = r.bytes();
        if round % 2 == 0 {
            // Too long for the area, yet not the socket's mark.
            let len = super::channel::AREA as u32 + 1 + r.below(1 << 20) as u32;
            channel.send_garbage(len, &bytes);
            assert!(channel.reply_within(&conn, Duration::from_secs(5)).is_none(), "a reply to a length past the area");
        } else {
            channel.send_garbage(bytes.len() as u32, &bytes);
            let reply = channel.reply_within(&conn, Duration::from_secs(5)).expect("an error reply");
            let reply: Reply = crate::reduction::from_bytes_exact(&reply).expect("a reply");
            if let Reply::Hello { .. } = reply {
                panic!("garbage got a hello back");
            }
        }
        good.insert(1, round as u8).unwrap();
        assert_eq!(good.get(&1).unwrap(), Some(round as u8));
    }
}
