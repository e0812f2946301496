//! Managers: CONFORMANCE.md section 17 (MGR-*) and the manager cases of the other sections
//! (SHV-14), under every start method the server and the children can have. Where Rust needs
//! another shape than Python, the case's doc comment says how it was translated.
mod common;
use multiprocess::managers::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy, JoinableQueueProxy,
    ListProxy, LockProxy, Namespace, QueueProxy, RLockProxy, SemaphoreProxy, SyncManager, ValueProxy,
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

/// The container proxies of MGR-13.
type Containers =
    (QueueProxy<i32>, ListProxy<i32>, DictProxy<String, i32>, ValueProxy<i32>, ArrayProxy<i32>, Namespace);

start_methods! {
    /// MGR-13: every kind of proxy handed to a child, which checks it; the child exits 0.
    fn mgr_13_every_proxy_in_a_child(m) {
        #[allow(clippy::too_many_arguments)]
        fn child(
            e: EventProxy,
            l: LockProxy,
            r: RLockProxy,
            s: SemaphoreProxy,
            bs: BoundedSemaphoreProxy,
            c: ConditionProxy,
            b: BarrierProxy,
            rest: Containers,
        ) -> Result<()> {
            let (q, li, d, v, a, ns) = rest;
            assert!(e.is_set()?);
            e.clear()?;
            l.acquire()?;
            l.release()?;
            r.acquire()?;
            r.acquire()?;
            r.release()?;
            r.release()?;
            assert_eq!(s.get_value()?, 2);
            s.acquire()?;
            assert_eq!(bs.get_value()?, 2);
            bs.acquire()?;
            bs.release()?;
            {
                let _held = c.lock()?;
                c.notify(1)?;
            }
            assert_eq!(b.parties()?, 1);
            assert_eq!(b.wait()?, 0);
            assert_eq!(q.get()?, 5);
            assert_eq!(li.to_vec()?, vec![5, 7]);
            assert_eq!(d.items()?, vec![("foo".to_string(), 5), ("bar".to_string(), 7)]);
            assert_eq!(v.get()?, 1);
            assert_eq!((a.get(0)?, a.get(1)?, a.len()?, a.to_vec()?), (0, 1, 2, vec![0, 1]));
            a.set(0, 10)?;
            assert_eq!(ns.get::<i32>("x")?, Some(1));
            Ok(())
        }
        let mgr = start(m);
        let e = mgr.event().unwrap();
        e.set().unwrap();
        let q = mgr.queue().unwrap();
        q.put(5).unwrap();
        let ns = mgr.namespace().unwrap();
        ns.set("x", &1).unwrap();
        let s = mgr.semaphore(2).unwrap();
        let a = mgr.array([0, 1]).unwrap();
        let rest = (
            q,
            mgr.list_from([5, 7]).unwrap(),
            mgr.dict_from([("foo".to_string(), 5), ("bar".to_string(), 7)]).unwrap(),
            mgr.value(1).unwrap(),
            a.clone(),
            ns,
        );
        let args = (
            e.clone(),
            mgr.lock().unwrap(),
            mgr.rlock().unwrap(),
            s.clone(),
            mgr.bounded_semaphore(2).unwrap(),
            mgr.condition().unwrap(),
            mgr.barrier(1).unwrap(),
            rest,
        );
        let mut p = common::start(m, child, args);
        common::join_ok(&mut p);
        assert!(!e.is_set().unwrap());
        assert_eq!(a.get(0).unwrap(), 10, "SHV-14's array half: the child's set is seen");
        // The child ended holding one of the semaphore's two: handed back once the server
        // sees its connections close, and the next acquirer told.
        assert!(common::eventually_within(Duration::from_secs(5), || s.get_value().unwrap() == 2));
        assert!(matches!(s.acquire_timeout(Duration::from_secs(5)), Err(Error::OwnerDied)));
        if common::alone_in_process() {
            assert_eq!(active_children().len(), 1, "only the manager's server remains");
        }
    }

    /// A condition's notify wakes a waiter in a child; `notify(1)` wakes one of two;
    /// `wait_for` returns its predicate's value.
    fn manager_condition(m) {
        fn waiter(c: ConditionProxy, state: ValueProxy<u32>, woke: QueueProxy<u32>) -> Result<()> {
            let _held = c.lock()?;
            let ok = c.wait_for(|| state.get().map(|v| v > 0).unwrap_or(false), Some(Duration::from_secs(20)))?;
            assert!(ok);
            woke.put(multiprocess::getpid()).map_err(Error::from)
        }
        let mgr = start(m);
        let c = mgr.condition().unwrap();
        let state = mgr.value(0u32).unwrap();
        let woke = mgr.queue::<u32>().unwrap();
        let mut kids: Vec<Process> =
            (0..2).map(|_| common::start(m, waiter, (c.clone(), state.clone(), woke.clone()))).collect();
        // Both asleep in wait: their lock is free again.
        std::thread::sleep(Duration::from_millis(300));
        {
            let _held = c.lock().unwrap();
            state.set(1).unwrap();
            c.notify(1).unwrap();
        }
        woke.get_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(woke.get_timeout(Duration::from_millis(200)), Err(Error::Empty)), "notify(1) woke two");
        {
            let _held = c.lock().unwrap();
            c.notify_all().unwrap();
        }
        woke.get_timeout(Duration::from_secs(10)).unwrap();
        for p in &mut kids {
            common::join_ok(p);
        }
        let held = c.lock().unwrap();
        let t = Instant::now();
        assert!(!c.wait_for(|| false, Some(Duration::from_millis(200))).unwrap());
        common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
        drop(held);
        assert!(matches!(c.notify(1), Err(Error::NotOwner)));
    }

    /// A barrier of three: two children and the parent pass together, with the indices
    /// 0, 1, 2 once each; a party that times out breaks it for the others.
    fn manager_barrier(m) {
        fn party(b: BarrierProxy, out: QueueProxy<usize>) -> Result<()> {
            out.put(b.wait()?).map_err(Error::from)
        }
        let mgr = start(m);
        let b = mgr.barrier(3).unwrap();
        let out = mgr.queue::<usize>().unwrap();
        let mut kids: Vec<Process> = (0..2).map(|_| common::start(m, party, (b.clone(), out.clone()))).collect();
        let mine = b.wait().unwrap();
        let mut all = vec![mine, out.get().unwrap(), out.get().unwrap()];
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
        for p in &mut kids {
            common::join_ok(p);
        }
        let two = mgr.barrier(2).unwrap();
        assert!(matches!(two.wait_timeout(Duration::from_millis(50)), Err(Error::BrokenBarrier)));
        assert!(two.broken().unwrap());
        assert!(matches!(two.wait(), Err(Error::BrokenBarrier)));
        two.reset().unwrap();
        assert!(!two.broken().unwrap());
    }

    /// MGR-17: a set proxy: in-place operators, a missing member, comparisons.
    fn mgr_17_set(m) {
        let mgr = start(m);
        let s = mgr.set_from(["a", "b", "c"].map(String::from)).unwrap();
        s.update(["d".to_string()]).unwrap();
        assert_eq!(s.len().unwrap(), 4);
        s.difference_update(["a".to_string()]).unwrap();
        s.symmetric_difference_update(["b".to_string(), "z".to_string()]).unwrap();
        s.intersection_update(["c", "d", "z", "q"].map(String::from)).unwrap();
        let mut now = s.to_vec().unwrap();
        now.sort();
        assert_eq!(now, vec!["c", "d", "z"]);
        assert!(!s.remove(&"missing".into()).unwrap(), "remove-missing is KeyError in Python");
        assert!(s.is_subset(["c", "d", "z", "y"].map(String::from)).unwrap());
        assert!(s.is_superset(["c".to_string()]).unwrap());
        assert!(!s.is_superset(["y".to_string()]).unwrap());
        assert!(s.is_disjoint(["y".to_string()]).unwrap());
        assert!(s.insert("y".into()).unwrap());
        assert!(!s.insert("y".into()).unwrap());
    }
}

start_methods! {
    /// MGR-15: `+= [7]`, `*= 2`, `* 2` (a plain list), `copy`, extend, sort, reverse, `pop(0)`.
    fn mgr_15_list_operators(m) {
        let mgr = start(m);
        let obj = mgr.list_from([5]).unwrap();
        obj.extend([7]).unwrap();
        obj.repeat(2).unwrap();
        assert_eq!(obj.to_vec().unwrap(), vec![5, 7, 5, 7]);
        let times_two: Vec<i32> = obj.to_vec().unwrap().repeat(2);
        assert_eq!(times_two, vec![5, 7, 5, 7, 5, 7, 5, 7]);
        assert_eq!(obj.copy().unwrap(), vec![5, 7, 5, 7]);
        obj.extend(times_two).unwrap();
        obj.extend([7, 7, 7, 7]).unwrap();
        assert_eq!(obj.len().unwrap(), 16);
        obj.sort().unwrap();
        assert_eq!(obj.to_vec().unwrap(), [vec![5; 6], vec![7; 10]].concat());
        obj.reverse().unwrap();
        assert_eq!(obj.pop_at(0).unwrap(), 7);
    }

    /// MGR-16: `|=` (update), reversed keys, `fromkeys`, `popitem`, `setdefault`, `pop`.
    fn mgr_16_dict_operators(m) {
        let mgr = start(m);
        let obj = mgr.dict_from([("foo".to_string(), 5)]).unwrap();
        obj.update([("bar".to_string(), 6)]).unwrap();
        let mut reversed = obj.keys().unwrap();
        reversed.reverse();
        assert_eq!(reversed, vec!["bar", "foo"]);
        let mut plain = obj.copy().unwrap();
        plain.insert("baz".into(), 1);
        assert_eq!(plain.len(), 3, "a plain map from the proxy");
        let fromkeys = mgr.dict_from(["a", "b"].map(|k| (k.to_string(), 0))).unwrap();
        assert_eq!(fromkeys.items().unwrap(), vec![("a".to_string(), 0), ("b".to_string(), 0)]);
        assert_eq!(obj.popitem().unwrap(), Some(("bar".to_string(), 6)));
        assert_eq!(obj.setdefault("bar".into(), 7).unwrap(), 7);
        obj.update([("baz".to_string(), 8)]).unwrap();
        assert_eq!(obj.remove(&"bar".into()).unwrap(), Some(7));
    }

    /// MGR-18 and MGR-21: the errors a manager's objects raise come back as the crate's:
    /// `get_nowait` on an empty queue is `Empty`, a second release of a lock is
    /// `ReleasedTooManyTimes`, an index past a list's end is `IndexOutOfRange`; a missing
    /// key is `None` (Rust's shape for `KeyError`).
    fn mgr_18_21_remote_errors(m) {
        let mgr = start(m);
        assert!(matches!(mgr.queue::<u8>().unwrap().get_nowait(), Err(Error::Empty)));
        let l = mgr.lock().unwrap();
        assert!(matches!(l.release(), Err(Error::ReleasedTooManyTimes)));
        assert!(matches!(mgr.list_from([1]).unwrap().pop_at(5), Err(Error::IndexOutOfRange { index: 5, len: 1 })));
        assert_eq!(mgr.dict::<String, u8>().unwrap().get(&"zz".into()).unwrap(), None);
    }

    /// MGR-19: the initializer runs once, in the server, before it serves; one that panics
    /// makes `start()` an error.
    fn mgr_19_initializer(m) {
        fn init(ns: Namespace) {
            let before = ns.get::<i32>("test").unwrap().unwrap_or(0);
            ns.set("test", &(before + 1)).unwrap();
            ns.set("server", &multiprocess::getpid()).unwrap();
        }
        fn fails() {
            panic!("the initializer failed");
        }
        let first = start(m);
        let ns = first.namespace().unwrap();
        let mgr = SyncManager::builder().start_method(m).initializer(init, (ns.clone(),)).start().unwrap();
        assert_eq!(ns.get::<i32>("test").unwrap(), Some(1));
        assert_eq!(ns.get::<u32>("server").unwrap(), mgr.pid());
        let failed = SyncManager::builder().start_method(m).initializer(fails, ()).start();
        assert!(matches!(failed, Err(Error::StartMethod(_))), "{failed:?}");
    }
}

/// Proxies in pool task arguments and results, under every start method: a worker gets a
/// proxy, writes through it, and sends another back.
#[test]
fn proxies_in_pool_tasks() {
    fn write(d: DictProxy<u32, u32>, x: u32) -> u32 {
        d.insert(x, x * x).unwrap();
        x
    }
    fn pass_back(l: ListProxy<u32>) -> ListProxy<u32> {
        l.push(9).unwrap();
        l
    }
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mgr = start(m);
        let d = mgr.dict::<u32, u32>().unwrap();
        let pool = Pool::builder().processes(2).start_method(m).build().unwrap();
        let args: Vec<(DictProxy<u32, u32>, u32)> = (0..10).map(|x| (d.clone(), x)).collect();
        assert_eq!(pool.starmap(write, args).unwrap(), (0..10).collect::<Vec<_>>());
        assert_eq!(d.len().unwrap(), 10, "{m:?}");
        let l = mgr.list::<u32>().unwrap();
        let back = pool.apply(pass_back, (l.clone(),)).unwrap();
        back.push(10).unwrap();
        assert_eq!(l.to_vec().unwrap(), vec![9, 10], "{m:?}");
        pool.close();
        pool.join().unwrap();
        drop((d, l, back));
        objects_reach(&mgr, 0);
    }
}

/// Proxies beside handles in a map's arguments (a Lock travels as a descriptor): each chunk's
/// arguments are serialized once, so each proxy pins its object once, and the objects go when
/// the proxies do.
#[test]
fn proxies_beside_handles_in_pool_maps() {
    fn write_locked(lock: Lock, d: DictProxy<u32, u32>, x: u32) -> u32 {
        let _held = lock.lock().unwrap();
        d.insert(x, x + 1).unwrap();
        x
    }
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let mgr = start(m);
        let d = mgr.dict::<u32, u32>().unwrap();
        let lock = Lock::new().unwrap();
        let pool = Pool::builder().processes(2).start_method(m).build().unwrap();
        let args: Vec<(Lock, DictProxy<u32, u32>, u32)> = (0..12).map(|x| (lock.clone(), d.clone(), x)).collect();
        assert_eq!(pool.starmap(write_locked, args).unwrap(), (0..12).collect::<Vec<_>>());
        assert_eq!(d.len().unwrap(), 12, "{m:?}");
        pool.close();
        pool.join().unwrap();
        drop(d);
        objects_reach(&mgr, 0);
    }
}

/// Every proxy is `Clone + Send + Sync` and a serde value (checked by the compiler).
#[test]
fn proxies_are_clone_send_sync_and_serde() {
    fn check<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>() {}
    check::<DictProxy<String, Vec<u8>>>();
    check::<ListProxy<std::rc::Rc<u8>>>();
    check::<Namespace>();
    check::<ValueProxy<std::cell::Cell<u8>>>();
    check::<ArrayProxy<f64>>();
    check::<QueueProxy<String>>();
    check::<JoinableQueueProxy<String>>();
    check::<LockProxy>();
    check::<RLockProxy>();
    check::<SemaphoreProxy>();
    check::<BoundedSemaphoreProxy>();
    check::<EventProxy>();
    check::<ConditionProxy>();
    check::<BarrierProxy>();
    check::<multiprocess::managers::SetProxy<u8>>();
}
