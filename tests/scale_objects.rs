//! Scale of shared objects (issue 16 points 1 and 4).
//!
//! - Point 1: small objects come from shared arenas, a descriptor an arena, not an object:
//!   10,000 Locks, 10,000 Values and 1,000 Queues live in one process under
//!   `ulimit -n 1024` (each held a descriptor before: about 1,019 objects in all fit), and a
//!   child given 1,000 of them holds a handful of descriptors. The memory of an object is used
//!   again only once no process holds it: not while a child still does.
//! - Point 4: a queue maps what it uses, not 4 GiB of address space: a `Pool(16)` and 100
//!   queues run under `ulimit -v 4000000`.

mod common;
use common::{join_ok, start};
use multiprocess::*;
use std::time::Duration;

/// Sets the soft limit of `resource` to `value` in this process (a child's own, here).
fn limit(resource: libc::__rlimit_resource_t, value: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write a local `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(resource, &mut l), 0);
        l.rlim_cur = value.min(l.rlim_max);
        assert_eq!(libc::setrlimit(resource, &l), 0);
    }
}

fn open_fds() -> usize {
    __private::open_fds().unwrap().len()
}

/// In a child under `ulimit -n 1024`: 10,000 Locks, 10,000 Values, 1,000 Queues, each used.
fn thousands_of_objects_in_few_descriptors() {
    limit(libc::RLIMIT_NOFILE, 1024);
    let before = open_fds();
    let locks: Vec<Lock> = (0..10_000).map(|_| Lock::new().unwrap()).collect();
    let values: Vec<Value<u64>> = (0..10_000u64).map(|i| Value::new(i).unwrap()).collect();
    let queues: Vec<Queue<u64>> = (0..1_000).map(|_| Queue::new().unwrap()).collect();
    let held = open_fds() - before;
    eprintln!("21,000 objects hold {held} descriptor(s)");
    assert!(held <= 2, "21,000 objects hold {held} descriptors");
    for (i, lock) in locks.iter().enumerate() {
        assert!(lock.try_acquire().unwrap(), "lock {i} taken already: two locks share memory");
    }
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.get(), i as u64, "value {i}");
        v.set(v.get() * 3);
    }
    for (i, q) in queues.iter().enumerate() {
        q.put(i as u64).unwrap();
    }
    for (i, q) in queues.iter().enumerate() {
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), i as u64);
        assert!(q.empty());
    }
    assert!(values.iter().enumerate().all(|(i, v)| v.get() == 3 * i as u64));
    assert!(locks.iter().all(|l| l.release().is_ok()));
}

#[test]
fn ten_thousand_locks_and_values_and_a_thousand_queues_under_ulimit_n_1024() {
    let mut p = start(StartMethod::Spawn, thousands_of_objects_in_few_descriptors, ());
    join_ok(&mut p);
}

/// Checks what the parent sent, from a handful of descriptors, and leaves its marks.
fn check_many(locks: Vec<Lock>, values: Vec<Value<u64>>) {
    assert!(open_fds() < 64, "a child given 2,000 objects holds {} descriptors", open_fds());
    for (i, (lock, value)) in locks.iter().zip(&values).enumerate() {
        assert_eq!(value.get(), i as u64);
        value.set(i as u64 + 1);
        if i % 2 == 1 {
            assert!(lock.try_acquire().unwrap());
        }
    }
}

start_methods! {
    fn a_child_given_two_thousand_objects_holds_few_descriptors(m) {
        let locks: Vec<Lock> = (0..1000).map(|_| Lock::new().unwrap()).collect();
        let values: Vec<Value<u64>> = (0..1000u64).map(|i| Value::new(i).unwrap()).collect();
        let mut p = start(m, check_many, (locks.clone(), values.clone()));
        join_ok(&mut p);
        for (i, (lock, value)) in locks.iter().zip(&values).enumerate() {
            assert_eq!(value.get(), i as u64 + 1);
            // The child ended holding the odd ones: they come to us as taken over.
            match lock.try_acquire() {
                Ok(true) => assert!(i % 2 == 0, "lock {i} was free"),
                Err(Error::OwnerDied) => assert!(i % 2 == 1, "lock {i} was held"),
                other => panic!("lock {i}: {other:?}"),
            }
        }
    }

    fn memory_a_child_holds_is_not_used_again_when_the_parent_lets_go(m) {
        let value = Value::new(42u64).unwrap();
        let lock = Lock::new().unwrap();
        lock.acquire().unwrap();
        let go = Event::new().unwrap();
        let mut p = start(m, read_later, (value.clone(), lock.clone(), go.clone()));
        // The parent lets go of both; were their memory freed, the next objects made here
        // would take it, and write over them.
        drop(value);
        drop(lock);
        let newer: Vec<Value<u64>> = (0..2000).map(|_| Value::new(7).unwrap()).collect();
        let newer_locks: Vec<Lock> = (0..2000).map(|_| Lock::new().unwrap()).collect();
        go.set();
        join_ok(&mut p);
        assert!(newer.iter().all(|v| v.get() == 7));
        assert!(newer_locks.iter().all(|l| !l.locked()));
    }
}

/// Waits for the parent to let go of `value` and `lock`, then finds them as they were.
fn read_later(value: Value<u64>, lock: Lock, go: Event) {
    assert!(go.wait(Some(Duration::from_secs(10))));
    assert_eq!(value.get(), 42, "the memory was used again while this child held it");
    assert!(lock.locked(), "the lock's memory was used again while this child held it");
}

/// Objects made and dropped by the hundred thousand use the same memory again: the process
/// maps no more of the arena at the end than after the first thousand.
#[test]
fn freed_objects_are_used_again() {
    let heap_maps = || {
        std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| l.contains("multiprocess-heap")).count()
    };
    let mut kept = Vec::new();
    for round in 0..100 {
        let batch: Vec<Value<u64>> = (0..1000).map(|i| Value::new(i).unwrap()).collect();
        assert!(batch.iter().enumerate().all(|(i, v)| v.get() == i as u64));
        kept.push(Lock::new().unwrap());
        if round == 0 {
            kept.push(Lock::new().unwrap());
        }
    }
    let maps = heap_maps();
    assert!(maps < 64, "{maps} windows of the heap after 100,000 objects made and dropped");
}

/// In a child under `ulimit -v 4000000` (kB): a pool of 16 and 100 queues, each used.
fn pool_and_queues_in_four_gigabytes() {
    limit(libc::RLIMIT_AS, 4_000_000 * 1024);
    let pool = Pool::new(16).unwrap();
    let squares = pool.map(|x: u64| x * x, 0..1000u64).unwrap();
    assert_eq!(squares.iter().sum::<u64>(), (0..1000u64).map(|x| x * x).sum());
    let queues: Vec<Queue<Vec<u8>>> = (0..100).map(|_| Queue::new().unwrap()).collect();
    for (i, q) in queues.iter().enumerate() {
        q.put(vec![i as u8; 1000]).unwrap();
    }
    for (i, q) in queues.iter().enumerate() {
        assert_eq!(q.get().unwrap(), vec![i as u8; 1000]);
    }
    // A record far larger than a queue maps at first (64 MiB) still passes.
    queues[0].put(vec![5; 64 << 20]).unwrap();
    assert_eq!(queues[0].get().unwrap().len(), 64 << 20);
    pool.close();
    pool.join().unwrap();
}

#[test]
fn a_pool_of_16_and_100_queues_run_under_ulimit_v_4000000() {
    let mut p = start(StartMethod::Spawn, pool_and_queues_in_four_gigabytes, ());
    join_ok(&mut p);
}

/// A queue costs the address space of what it uses: 100 queues add well under 1 GiB (each
/// reserved 4 GiB before, 400 GiB in all).
#[test]
fn a_hundred_queues_map_what_they_use() {
    let vm_kb = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = vm_kb();
    let queues: Vec<Queue<u32>> = (0..100).map(|_| Queue::new().unwrap()).collect();
    for q in &queues {
        q.put(1).unwrap();
    }
    let grown_mb = (vm_kb().saturating_sub(before)) / 1024;
    assert!(grown_mb < 512, "100 queues take {grown_mb} MiB of address space");
}
