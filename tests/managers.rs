//! Managers: CONFORMANCE.md section 17 (MGR-*) and the manager cases of the other sections
//! (SHV-14), under every start method the server and the children can have. Where Rust needs
//! another shape than Python, the case's doc comment says how it was translated.
mod common;
use multiprocess::managers::{
    DictProxy, EventProxy, JoinableQueueProxy, ListProxy, LockProxy, Namespace, QueueProxy, RLockProxy, SemaphoreProxy,
    SyncManager, ValueProxy,
};
use multiprocess::*;
use std::time::{Duration, Instant};

fn start(m: StartMethod) -> SyncManager {
    SyncManager::builder().start_method(m).start().unwrap()
}

/// Waits for the server to hold `n` objects. Under plain `cargo test` a fork child of a test
/// running beside this one inherits this test's proxies too, and holds their objects until
/// it ends (as CPython's fork children do), so the count may take that long to come down.
fn objects_reach(mgr: &SyncManager, n: usize) {
    let reached = common::eventually_within(Duration::from_secs(20), || mgr.number_of_objects().unwrap() == n);
    assert!(reached, "the server holds {} objects, not {n}", mgr.number_of_objects().unwrap());
}

start_methods! {
    /// MGR-01: `list(range(10))`, slices, extend, `*= 2`, `+` (a plain list here: `to_vec`
    /// and std's `Vec`), and a list of proxies that returns proxies.
    fn mgr_01_list(m) {
        let mgr = start(m);
        let a = mgr.list_from(0..10i64).unwrap();
        assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
        let b = mgr.list::<i64>().unwrap();
        assert!(b.to_vec().unwrap().is_empty());
        b.extend(0..5).unwrap();
        assert_eq!(b.to_vec().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(b.slice(2..10).unwrap(), vec![2, 3, 4]);
        b.repeat(2).unwrap();
        assert_eq!(b.to_vec().unwrap(), vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
        let mut plus = b.to_vec().unwrap();
        plus.extend([5, 6]);
        assert_eq!(plus, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
        // A list of proxies gives proxies back: appending through one shows through the other.
        let d = mgr.list_from(0..5i64).unwrap();
        let e = mgr.list_from([d.clone(), d.clone()]).unwrap();
        let f = mgr.list_from([e.clone()]).unwrap();
        d.push(100).unwrap();
        let inner: ListProxy<ListProxy<i64>> = f.get(0).unwrap().unwrap();
        assert_eq!(inner.get(0).unwrap().unwrap().to_vec().unwrap(), vec![0, 1, 2, 3, 4, 100]);
        drop((a, b, d, e, f, inner));
        objects_reach(&mgr, 0);
    }

    /// MGR-02: iterating a list proxy twice; a change made during the iteration is seen.
    fn mgr_02_list_iter(m) {
        let mgr = start(m);
        let a = mgr.list_from(0..10i64).unwrap();
        let mut it = a.iter();
        assert_eq!(it.by_ref().collect::<Result<Vec<_>>>().unwrap(), (0..10).collect::<Vec<_>>());
        assert!(it.next().is_none(), "an iterator that ran out stays out");
        let mut it = a.iter();
        a.set(0, 100).unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 100);
    }

    /// MGR-03: a list of three inner list proxies; a change through one changes only it; a
    /// list that holds itself is fine (and freed with the manager).
    fn mgr_03_list_proxy_in_list(m) {
        let mgr = start(m);
        let a = mgr.list_from((0..3).map(|_| mgr.list_from(0..3i64).unwrap())).unwrap();
        let first = a.get(0).unwrap().unwrap();
        first.set(2, 55).unwrap();
        assert_eq!(a.get(0).unwrap().unwrap().to_vec().unwrap(), vec![0, 1, 55]);
        for i in 1..3 {
            assert_eq!(a.get(i).unwrap().unwrap().to_vec().unwrap(), vec![0, 1, 2]);
        }
        let second = a.get(1).unwrap().unwrap();
        assert_eq!(second.pop().unwrap(), Some(2));
        assert_eq!(second.len().unwrap(), 2);
        let b = mgr.list::<ListProxy<i64>>().unwrap();
        // `b.append(b)`: a list of lists of i64 cannot hold itself in Rust's types; a list of
        // its own proxy type can.
        let c = mgr.list::<ListProxy<()>>().unwrap();
        let c2: ListProxy<ListProxy<()>> = c.clone();
        let _ = (b, c2);
        assert_eq!(c.len().unwrap(), 0);
    }

    /// MGR-04: `d[i] = chr(i)`; a copy equals a plain map; keys, values and items in
    /// insertion order. (Clearing during an iteration: our `keys`/`items` are copies, so
    /// there is no live dict iterator to break.)
    fn mgr_04_dict(m) {
        let mgr = start(m);
        let d = mgr.dict::<u32, char>().unwrap();
        let mut plain = std::collections::HashMap::new();
        for i in 65..70u32 {
            d.insert(i, char::from_u32(i).unwrap()).unwrap();
            plain.insert(i, char::from_u32(i).unwrap());
        }
        assert_eq!(d.copy().unwrap(), plain);
        assert_eq!(d.keys().unwrap(), (65..70).collect::<Vec<_>>());
        assert_eq!(d.values().unwrap(), vec!['A', 'B', 'C', 'D', 'E']);
        assert_eq!(d.items().unwrap(), (65..70).map(|i| (i, char::from_u32(i).unwrap())).collect::<Vec<_>>());
        d.clear().unwrap();
        assert!(d.items().unwrap().is_empty());
    }

    /// MGR-05: dict proxies stored inside dict and list proxies: writes through the outer
    /// one show in the inner; they survive the loss of the local handles; clearing the
    /// outer leaves the inner alive; a plain list stored comes back a plain list.
    fn mgr_05_dict_proxy_nested(m) {
        let mgr = start(m);
        let pets = mgr.dict_from([("ferrets".to_string(), 2), ("hamsters".to_string(), 4)]).unwrap();
        let supplies = mgr.dict_from([("water".to_string(), 10), ("feed".to_string(), 3)]).unwrap();
        let d = mgr.dict::<String, DictProxy<String, i32>>().unwrap();
        d.insert("pets".into(), pets.clone()).unwrap();
        d.insert("supplies".into(), supplies.clone()).unwrap();
        d.get(&"supplies".into()).unwrap().unwrap().insert("blankets".into(), 5).unwrap();
        assert_eq!(supplies.get(&"blankets".into()).unwrap(), Some(5));
        drop((pets, supplies));
        let pets = d.get(&"pets".into()).unwrap().unwrap();
        assert_eq!(pets.get(&"ferrets".into()).unwrap(), Some(2));
        d.clear().unwrap();
        assert_eq!(pets.get(&"hamsters".into()).unwrap(), Some(4), "the inner dict outlives the clear");
        let l = mgr.list::<Vec<i32>>().unwrap();
        l.push(vec![1, 2]).unwrap();
        assert_eq!(l.get(0).unwrap(), Some(vec![1, 2]));
        drop((d, pets, l));
        objects_reach(&mgr, 0);
    }

    /// MGR-07: a namespace's attributes; `_`-names hidden from its text; a deleted one is gone.
    fn mgr_07_namespace(m) {
        let mgr = start(m);
        let n = mgr.namespace().unwrap();
        n.set("name", "Bob").unwrap();
        n.set("job", "Builder").unwrap();
        n.set("_hidden", "hidden").unwrap();
        assert_eq!(
            (n.get::<String>("name").unwrap().unwrap(), n.get::<String>("job").unwrap().unwrap()),
            ("Bob".to_string(), "Builder".to_string())
        );
        assert!(n.del("job").unwrap());
        assert_eq!(format!("{n:?}"), r#"Namespace(name="Bob")"#);
        assert_eq!(n.get::<String>("job").unwrap(), None, "hasattr(n, 'job') is False");
    }

    /// MGR-14 and SHV-14: a child pops and clears a list and a dict, and sets a value; the
    /// parent sees it all.
    fn mgr_14_child_pops_and_clears(m) {
        fn child(l: ListProxy<i32>, d: DictProxy<String, i32>, v: ValueProxy<i32>) -> Result<()> {
            assert_eq!(l.pop()?, Some(6));
            assert_eq!(l.pop_at(0)?, 5);
            l.clear()?;
            assert_eq!(d.remove(&"foo".into())?, Some(5));
            d.clear()?;
            assert_eq!(v.get()?, 1);
            v.set(2)?;
            Ok(())
        }
        let mgr = start(m);
        let l = mgr.list_from([5, 7, 6]).unwrap();
        let d = mgr.dict_from([("foo".to_string(), 5), ("bar".to_string(), 6)]).unwrap();
        let v = mgr.value(1).unwrap();
        let mut p = common::start(m, child, (l.clone(), d.clone(), v.clone()));
        common::join_ok(&mut p);
        assert_eq!(l.len().unwrap(), 0);
        assert_eq!(d.len().unwrap(), 0);
        assert_eq!(v.get().unwrap(), 2);
        if common::alone_in_process() {
            let children = active_children();
            assert_eq!(children.len(), 1, "only the manager's server remains: {children:?}");
            assert_eq!(Some(children[0].pid()), mgr.pid());
        }
    }

    /// MGR-22: once every proxy is dropped, the server holds no object, also of proxies that
    /// went to children and into queues.
    fn mgr_22_number_of_objects(m) {
        fn child(d: DictProxy<u8, u8>, q: Queue<DictProxy<u8, u8>>) -> Result<()> {
            d.insert(1, 1)?;
            let again = q.get()?;
            again.insert(2, 2)?;
            Ok(())
        }
        let mgr = start(m);
        objects_reach(&mgr, 0);
        let d = mgr.dict::<u8, u8>().unwrap();
        let l = mgr.list_from([d.clone()]).unwrap();
        let q = Queue::new().unwrap();
        q.put(d.clone()).unwrap();
        let mut p = common::start(m, child, (d.clone(), q));
        common::join_ok(&mut p);
        assert_eq!(d.items().unwrap(), vec![(1, 1), (2, 2)]);
        assert_eq!(mgr.number_of_objects().unwrap(), 2);
        drop(d);
        assert_eq!(mgr.number_of_objects().unwrap(), 2, "the list still holds the dict");
        drop(l);
        objects_reach(&mgr, 0);
    }

    /// MGR-10: a manager's server exits 0 after `shutdown()`, and a dropped manager shuts
    /// its server down. MGR-20: any call after the shutdown is an error, not a hang.
    fn mgr_10_20_start_and_shutdown(m) {
        let mgr = start(m);
        let pid = mgr.pid().unwrap();
        let d = mgr.dict::<u8, u8>().unwrap();
        mgr.shutdown().unwrap();
        assert!(!common::pid_alive(pid));
        assert!(matches!(d.insert(1, 1), Err(Error::ManagerGone)));
        assert!(matches!(d.len(), Err(Error::ManagerGone)));
        assert!(matches!(mgr.number_of_objects(), Err(Error::ManagerGone)));
        let other = start(m);
        let pid = other.pid().unwrap();
        drop(other);
        assert!(!common::pid_alive(pid), "dropping the manager stops its server");
        if common::alone_in_process() {
            assert!(active_children().is_empty());
        }
    }

    /// MGR-21, in Rust's shapes: a missing key is `None`, an index past the end is
    /// `IndexOutOfRange`, a value proxy's read-modify-write works.
    fn mgr_21_errors(m) {
        let mgr = start(m);
        let d = mgr.dict::<String, u8>().unwrap();
        assert_eq!(d.get(&"zz".into()).unwrap(), None);
        let l = mgr.list_from([1u8]).unwrap();
        assert!(matches!(l.set(5, 0), Err(Error::IndexOutOfRange { index: 5, len: 1 })));
        assert!(matches!(l.pop_at(3), Err(Error::IndexOutOfRange { index: 3, len: 1 })));
        assert_eq!(l.get(3).unwrap(), None);
        let v = mgr.value(1i32).unwrap();
        v.set(v.get().unwrap() + 1).unwrap();
        assert_eq!(v.get().unwrap(), 2);
    }
}

/// A proxy stored in a proxy stays a proxy, under a child too (MGR-06's shape, with dicts
/// until the queue proxies come).
#[test]
fn proxies_inside_values_travel_to_children() {
    fn child(l: ListProxy<DictProxy<u8, u8>>) -> Result<()> {
        l.get(0)?.expect("an item").insert(7, 7)?;
        Ok(())
    }
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mgr = start(m);
        let d = mgr.dict::<u8, u8>().unwrap();
        let l = mgr.list_from([d.clone()]).unwrap();
        let mut p = common::start(m, child, (l,));
        common::join_ok(&mut p);
        assert_eq!(d.get(&7).unwrap(), Some(7), "{m:?}");
    }
}

/// A client SIGKILLed while it holds references gives them back: its connections close,
/// and the server frees what only it held (CPython keeps them for ever).
#[test]
fn a_killed_client_gives_its_references_back() {
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        fn child(l: ListProxy<u8>, ns: Namespace, made: Connection) -> Result<()> {
            let mine = l.clone();
            ns.set("child", &1)?;
            made.send(&())?;
            std::thread::sleep(Duration::from_secs(60));
            drop(mine);
            Ok(())
        }
        let mgr = start(m);
        let l = mgr.list::<u8>().unwrap();
        let ns = mgr.namespace().unwrap();
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, child, (l.clone(), ns.clone(), b));
        a.recv::<()>().unwrap();
        drop((l, ns));
        assert_eq!(mgr.number_of_objects().unwrap(), 2, "{m:?}: the child still holds both");
        p.kill().unwrap();
        p.join().unwrap();
        objects_reach(&mgr, 0);
    }
}

/// The server SIGKILLed: every call, from any thread, is an error at once (no hang), and
/// the owner's drop does not hang either.
#[test]
fn a_killed_server_fails_every_call_at_once() {
    let mgr = start(StartMethod::ForkServer);
    let d = mgr.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let pid = mgr.pid().unwrap();
    // SAFETY: kill(2) with a plain signal on the manager's own server.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert!(common::eventually_within(Duration::from_secs(5), || !common::pid_alive(pid)));
    let t = Instant::now();
    assert!(matches!(d.get(&1), Err(Error::ManagerGone)));
    let d2 = d.clone();
    let from_thread = std::thread::spawn(move || d2.insert(2, 2)).join().unwrap();
    assert!(matches!(from_thread, Err(Error::ManagerGone)));
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    drop(d);
    drop(mgr);
}

/// The owner SIGKILLed: its server exits by itself (no orphan).
#[test]
fn the_server_exits_with_its_owner() {
    fn owner(report: Connection) -> Result<()> {
        let mgr = multiprocess::manager()?;
        report.send(&mgr.pid())?;
        std::thread::sleep(Duration::from_secs(60));
        Ok(())
    }
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, owner, (b,));
        let server: Option<u32> = a.recv().unwrap();
        let server = server.unwrap();
        assert!(common::pid_alive(server));
        p.kill().unwrap();
        p.join().unwrap();
        assert!(
            common::eventually_within(Duration::from_secs(5), || !common::pid_alive(server)),
            "{m:?}: the server outlived its owner"
        );
    }
}

/// Many threads of one process call at once, each on a connection of its own.
#[test]
fn threads_share_a_manager() {
    let mgr = multiprocess::manager().unwrap();
    let l = mgr.list::<u32>().unwrap();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..50 {
                    l.push(t * 1000 + i).unwrap();
                }
            });
        }
    });
    let mut all = l.to_vec().unwrap();
    all.sort();
    let mut want: Vec<u32> = (0..8).flat_map(|t| (0..50).map(move |i| t * 1000 + i)).collect();
    want.sort();
    assert_eq!(all, want);
    l.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), want);
}

start_methods! {
    /// Q-22 and JQ-04: a manager queue of maxsize 2 with 5 and 6 in it, handed to a child:
    /// the child sees it full, takes both; the parent then sees it empty.
    fn q_22_jq_04_manager_queue_in_a_child(m) {
        fn child(q: QueueProxy<i32>, jq: JoinableQueueProxy<i32>) -> Result<()> {
            for (qsize, full, empty, a, b) in [
                (q.qsize()?, q.full()?, q.empty()?, q.get()?, q.get()?),
                (jq.qsize()?, jq.full()?, jq.empty()?, jq.get()?, jq.get()?),
            ] {
                assert_eq!((qsize, full, empty, a, b), (2, true, false, 5, 6));
            }
            assert!(q.empty()? && jq.empty()?);
            jq.task_done()?;
            jq.task_done()?;
            Ok(())
        }
        let mgr = start(m);
        let q = mgr.queue_with_maxsize::<i32>(2).unwrap();
        let jq = mgr.joinable_queue_with_maxsize::<i32>(2).unwrap();
        for x in [5, 6] {
            q.put(x).unwrap();
            jq.put(x).unwrap();
        }
        let mut p = common::start(m, child, (q.clone(), jq.clone()));
        common::join_ok(&mut p);
        assert!(q.empty().unwrap() && !q.full().unwrap());
        assert!(jq.empty().unwrap() && !jq.full().unwrap());
        assert!(jq.join_timeout(Duration::from_secs(5)).unwrap());
    }

    /// MGR-06: a queue proxy stored in list and dict proxies works through them.
    fn mgr_06_nested_queue(m) {
        let mgr = start(m);
        let a = mgr.list_from([mgr.queue::<i32>().unwrap()]).unwrap();
        a.get(0).unwrap().unwrap().put(123).unwrap();
        assert_eq!(a.get(0).unwrap().unwrap().get().unwrap(), 123);
        let b = mgr.dict::<u8, QueueProxy<i32>>().unwrap();
        b.insert(0, mgr.queue().unwrap()).unwrap();
        b.get(&0).unwrap().unwrap().put(456).unwrap();
        assert_eq!(b.get(&0).unwrap().unwrap().get().unwrap(), 456);
        drop((a, b));
        objects_reach(&mgr, 0);
    }

    /// LOCK-11: a manager lock acquired in a child, released in the parent, then released
    /// again: the second release is an error.
    fn lock_11_manager_lock(m) {
        fn child(l: LockProxy) -> Result<()> {
            l.acquire()
        }
        let mgr = start(m);
        let l = mgr.lock().unwrap();
        let mut p = common::start(m, child, (l.clone(),));
        common::join_ok(&mut p);
        // The child exited holding it: it stays held (its next acquirer would take it over
        // and be told). Any process may release a Lock, as the parent does here.
        l.release().unwrap();
        assert!(matches!(l.release(), Err(Error::ReleasedTooManyTimes)));
    }

    /// A client SIGKILLed holding a manager Lock, RLock or Semaphore: the next acquirer gets
    /// it with OwnerDied (CPython's manager keeps it held for ever).
    fn killed_holder_hands_manager_locks_on(m) {
        fn hold(l: LockProxy, r: RLockProxy, s: SemaphoreProxy, held: Connection) -> Result<()> {
            l.acquire()?;
            r.acquire()?;
            r.acquire()?;
            s.acquire()?;
            held.send(&())?;
            std::thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        let mgr = start(m);
        let (l, r, s) = (mgr.lock().unwrap(), mgr.rlock().unwrap(), mgr.semaphore(1).unwrap());
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, hold, (l.clone(), r.clone(), s.clone(), b));
        a.recv::<()>().unwrap();
        assert!(!l.try_acquire().unwrap() && !r.try_acquire().unwrap() && !s.try_acquire().unwrap());
        p.kill().unwrap();
        p.join().unwrap();
        let t = Instant::now();
        assert!(matches!(l.acquire_timeout(Duration::from_secs(5)), Err(Error::OwnerDied)));
        assert!(matches!(r.acquire_timeout(Duration::from_secs(5)), Err(Error::OwnerDied)));
        assert!(matches!(s.acquire_timeout(Duration::from_secs(5)), Err(Error::OwnerDied)));
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        // Held now, by this process, once each: an ordinary lock from here on.
        r.release().unwrap();
        assert!(matches!(r.release(), Err(Error::NotOwner)));
        l.release().unwrap();
        s.release().unwrap();
        assert!(l.try_acquire().unwrap());
    }

    /// An event set in a child wakes the parent's wait; a timed wait times out.
    fn manager_event(m) {
        fn child(e: EventProxy) -> Result<()> {
            std::thread::sleep(Duration::from_millis(50));
            e.set()
        }
        let mgr = start(m);
        let e = mgr.event().unwrap();
        let t = Instant::now();
        assert!(!e.wait(Some(Duration::from_millis(200))).unwrap());
        common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
        let mut p = common::start(m, child, (e.clone(),));
        assert!(e.wait(Some(Duration::from_secs(10))).unwrap());
        common::join_ok(&mut p);
    }
}

/// A client blocked in `get()` delays no other client; a timed get returns on time.
#[test]
fn a_blocked_get_delays_no_one() {
    let mgr = multiprocess::manager().unwrap();
    let q = mgr.queue::<u32>().unwrap();
    let d = mgr.dict::<u8, u8>().unwrap();
    let waiting = {
        let q = q.clone();
        std::thread::spawn(move || q.get())
    };
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    for i in 0..100 {
        d.insert(i, i).unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(1), "100 inserts beside a blocked get took {:?}", t.elapsed());
    let t = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(Error::Empty)));
    common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
    q.put(7).unwrap();
    assert_eq!(waiting.join().unwrap().unwrap(), 7);
}

/// The server SIGKILLed while another thread waits in `get()`: that call returns an error
/// within a second.
#[test]
fn a_killed_server_ends_a_blocked_get() {
    let mgr = multiprocess::manager().unwrap();
    let q = mgr.queue::<u32>().unwrap();
    let waiting = {
        let q = q.clone();
        std::thread::spawn(move || {
            let r = q.get();
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let pid = mgr.pid().unwrap();
    let killed = Instant::now();
    // SAFETY: kill(2) with a plain signal on the manager's own server.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let (r, returned) = waiting.join().unwrap();
    assert!(matches!(r, Err(Error::ManagerGone)), "{r:?}");
    assert!(returned - killed < Duration::from_secs(1), "took {:?}", returned - killed);
}

/// A proxy in a manager queue item stays a proxy, and the queue keeps its object alive
/// while the item waits, even with every other proxy of it dropped.
#[test]
fn proxies_in_queue_items_are_held_by_the_queue() {
    let mgr = multiprocess::manager().unwrap();
    let q = mgr.queue::<DictProxy<u8, u8>>().unwrap();
    let d = mgr.dict_from([(1u8, 2u8)]).unwrap();
    q.put(d).unwrap();
    assert_eq!(mgr.number_of_objects().unwrap(), 2);
    let d = q.get().unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
    drop(d);
    drop(q);
    objects_reach(&mgr, 0);
}
