//! Handles inside pool task arguments (issue 17 point 4): Locks, Values, Queues and pipe ends
//! travel to the worker that runs the task, their descriptors beside the chunk. CPython raises
//! "Queue objects should only be shared between processes through inheritance" there.

mod common;
use multiprocess::{Connection, Error, Lock, Pool, Queue, StartMethod, Value, pipe};

fn pool(m: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(m).build().unwrap()
}

/// Adds `times` to `total` under `lock`, one at a time.
fn add_under_lock(lock: Lock, total: Value<u64>, times: u64) -> u64 {
    for _ in 0..times {
        let _held = lock.lock().unwrap();
        total.set(total.get() + 1);
    }
    times
}

fn put_into(q: Queue<u64>, x: u64) -> u64 {
    q.put(x * 10).unwrap();
    x
}

fn send_on(conn: Connection, x: u64) -> u64 {
    conn.send(&(x + 1)).unwrap();
    x
}

/// Adds the numbers to `total`.
fn add_all(total: Value<u64>, numbers: Vec<u64>) -> u64 {
    let sum: u64 = numbers.iter().sum();
    total.set(total.get() + sum);
    sum
}

fn count(locks: Vec<Lock>) -> usize {
    locks.len()
}

start_methods! {
    fn locks_and_values_in_task_arguments(m) {
        let p = pool(m, 2);
        let lock = Lock::new().unwrap();
        let total = Value::new(0u64).unwrap();
        let args: Vec<(Lock, Value<u64>, u64)> = (0..8).map(|_| (lock.clone(), total.clone(), 50)).collect();
        let done = p.starmap(add_under_lock, args).unwrap();
        assert_eq!(done.iter().sum::<u64>(), 400);
        assert_eq!(total.get(), 400, "the workers did not share the parent's Value and Lock");
        // Again, after the first ones' holds went: the same objects still work.
        assert_eq!(p.apply(add_under_lock, (lock.clone(), total.clone(), 10)).unwrap(), 10);
        assert_eq!(total.get(), 410);
    }

    /// Arguments too long to be kept inline beside a shared Value: encoded a second time the
    /// long way, the holds taken by the first try given back, the Value still shared.
    fn a_value_beside_long_arguments(m) {
        let p = pool(m, 1);
        let total = Value::new(0u64).unwrap();
        let numbers: Vec<u64> = (1..=64).map(|x| x << 20).collect();
        let want: u64 = numbers.iter().sum();
        for round in 1..=3 {
            assert_eq!(p.submit(add_all, (total.clone(), numbers.clone())).unwrap().get().unwrap(), want);
            assert_eq!(total.get(), want * round, "the worker did not share the parent's Value");
        }
        // A short one beside it, kept inline.
        assert_eq!(p.apply(add_all, (total.clone(), vec![1])).unwrap(), 1);
        assert_eq!(total.get(), want * 3 + 1);
    }

    fn a_queue_in_task_arguments(m) {
        let p = pool(m, 2);
        let q = Queue::new().unwrap();
        let r = p.starmap_async(put_into, (0..10u64).map(|x| (q.clone(), x))).unwrap();
        assert_eq!(r.get().unwrap(), (0..10).collect::<Vec<_>>());
        let mut got: Vec<u64> = (0..10).map(|_| q.get().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).map(|x| x * 10).collect::<Vec<_>>());
    }

    fn a_pipe_end_in_task_arguments(m) {
        let p = pool(m, 1);
        let (ours, theirs) = pipe().unwrap();
        assert_eq!(p.apply(send_on, (theirs, 41)).unwrap(), 41);
        assert_eq!(ours.recv::<u64>().unwrap(), 42);
    }

    /// More descriptors than one message carries, in one chunk: a clear error at submit;
    /// as many as one carries: they all arrive.
    fn too_many_handles_in_one_task(m) {
        let p = pool(m, 1);
        let locks: Vec<Lock> = (0..300).map(|_| Lock::new().unwrap()).collect();
        // Locks share one arena: one descriptor for all of them.
        assert_eq!(p.apply(count, (locks.clone(),)).unwrap(), 300);
        let pipes: Vec<Connection> = (0..130).flat_map(|_| { let (a, b) = pipe().unwrap(); [a, b] }).collect();
        match p.apply(len_of, (pipes,)) {
            Err(Error::InvalidArgument(message)) => assert!(message.contains("descriptors"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}

fn len_of(conns: Vec<Connection>) -> usize {
    conns.len()
}
