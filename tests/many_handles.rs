//! Many handles in a child's arguments (issue 16 point 2): a child gets 1,000 Locks, 1,000
//! clones of one Lock, and 600 objects of mixed kinds, under every start method. Before,
//! spawn and forkserver refused more than about 250 descriptors ("more than one message
//! carries"): `SCM_RIGHTS` takes at most 253 in one message.

mod common;
use common::{join_ok, start};
use multiprocess::*;

/// How many objects the large cases send.
const MANY: usize = 1000;

/// Makes sure this process may hold `n` descriptors and a few hundred more: raises the soft
/// `RLIMIT_NOFILE` towards the hard one if it is lower (1024 is a common default, and 1,000
/// Locks take 1,000 descriptors in the parent and as many in the child, which inherits the
/// limit).
fn allow_descriptors(n: usize) {
    let want = (n + 512) as libc::rlim_t;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write a local `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Takes the odd-numbered Locks and releases the even ones after taking them: the parent
/// sees which are held, so each Lock must be the one sent in its place.
fn take_odd_locks(locks: Vec<Lock>) {
    assert_eq!(locks.len(), MANY);
    for (i, lock) in locks.iter().enumerate() {
        assert!(lock.try_acquire().unwrap(), "lock {i} was held");
        if i % 2 == 0 {
            lock.release().unwrap();
        }
    }
}

/// Takes and releases each clone of one Lock: while one clone is held, every other is.
fn take_clones(clones: Vec<Lock>) {
    assert_eq!(clones.len(), MANY);
    for (i, lock) in clones.iter().enumerate() {
        assert!(lock.try_acquire().unwrap(), "clone {i}");
        assert!(!clones[(i + 1) % MANY].try_acquire().unwrap(), "clone {} is another lock", (i + 1) % MANY);
        lock.release().unwrap();
    }
    clones[0].acquire().unwrap();
}

/// Uses every object: takes the odd Locks, writes each Value, puts into each Queue and sends
/// on each pipe its index.
fn use_all(locks: Vec<Lock>, values: Vec<Value<u64>>, queues: Vec<Queue<u64>>, pipes: Vec<Connection>) {
    for (i, lock) in locks.iter().enumerate() {
        if i % 2 == 1 {
            assert!(lock.try_acquire().unwrap(), "lock {i}");
        }
    }
    for (i, value) in values.iter().enumerate() {
        value.set(i as u64);
    }
    for (i, queue) in queues.iter().enumerate() {
        queue.put(i as u64).unwrap();
    }
    for (i, pipe) in pipes.iter().enumerate() {
        pipe.send(&(i as u64)).unwrap();
    }
}

start_methods! {
    /// A child gets 1,000 distinct Locks, each in a segment of its own: 1,000 descriptors.
    fn handles_1000_distinct_locks(m) {
        allow_descriptors(2 * MANY);
        let locks: Vec<Lock> = (0..MANY).map(|_| Lock::new().unwrap()).collect();
        let mut p = start(m, take_odd_locks, (locks.clone(),));
        join_ok(&mut p);
        for (i, lock) in locks.iter().enumerate() {
            assert_eq!(lock.locked(), i % 2 == 1, "lock {i}");
        }
    }

    /// A child gets 1,000 clones of one Lock: one descriptor travels.
    fn handles_1000_clones_of_one_lock(m) {
        allow_descriptors(MANY);
        let lock = Lock::new().unwrap();
        let mut p = start(m, take_clones, (vec![lock.clone(); MANY],));
        join_ok(&mut p);
        assert!(lock.locked());
    }

    /// A child gets 600 objects of four kinds (200 Locks, 200 Values, 50 Queues, 150 pipe
    /// ends), more than 600 descriptors, and uses each.
    fn handles_600_mixed(m) {
        allow_descriptors(4 * 600);
        let locks: Vec<Lock> = (0..200).map(|_| Lock::new().unwrap()).collect();
        let values: Vec<Value<u64>> = (0..200).map(|_| Value::new(u64::MAX).unwrap()).collect();
        let queues: Vec<Queue<u64>> = (0..50).map(|_| Queue::new().unwrap()).collect();
        let (readers, writers): (Vec<Connection>, Vec<Connection>) = (0..150).map(|_| pipe().unwrap()).unzip();
        let mut p = start(m, use_all, (locks.clone(), values.clone(), queues.clone(), writers));
        for (i, reader) in readers.iter().enumerate() {
            assert_eq!(reader.recv::<u64>().unwrap(), i as u64, "pipe {i}");
        }
        for (i, queue) in queues.iter().enumerate() {
            assert_eq!(queue.get().unwrap(), i as u64, "queue {i}");
        }
        join_ok(&mut p);
        for (i, lock) in locks.iter().enumerate() {
            assert_eq!(lock.locked(), i % 2 == 1, "lock {i}");
        }
        for (i, value) in values.iter().enumerate() {
            assert_eq!(value.get(), i as u64, "value {i}");
        }
    }
}
