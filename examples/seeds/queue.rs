//! Body of `seed_queue` (and step 6 of the tour): the seed notes' `q = Queue(); q.put(...);
//! q.get()`, with `get`'s and `put`'s block and timeout.

use multiprocess::{Error, Process, PutError, Queue};
use std::time::{Duration, Instant};

/// The notes' item, `[42, None, 'hello']`: a list of mixed types becomes a tuple in Rust.
type Item = (i32, Option<i32>, String);

/// The child: puts one item, then another after a short pause.
fn child(q: Queue<Item>) -> multiprocess::Result<()> {
    q.put((42, None, "hello".to_string()))?;
    std::thread::sleep(Duration::from_millis(100));
    q.put((7, Some(8), "from the child".to_string()))?;
    Ok(())
}

/// Puts and gets in one process, then across processes, then shows Empty and Full.
pub fn run() -> multiprocess::Result<()> {
    // First in, first out: put and get are the queue's two main operations.
    let q = Queue::<Item>::new()?;
    q.put((42, None, "hello".to_string()))?;
    let item = q.get()?;
    println!("q.get() -> {item:?}   (Python prints [42, None, 'hello'])");
    assert_eq!(item, (42, None, "hello".to_string()));

    // The same queue handed to a child: it puts, the parent gets.
    let mut p = Process::new(child, (q.clone(),));
    p.start()?;
    println!("from the child: {:?}", q.get()?);
    // get(block=True, timeout): waits up to the timeout for the child's second item.
    println!("from the child, within 5 s: {:?}", q.get_timeout(Duration::from_secs(5))?);
    p.join()?;
    assert_eq!(p.exitcode(), Some(0));

    // get(block=False) on an empty queue: Empty at once (Python raises queue.Empty).
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    println!("get_nowait() on an empty queue -> Err(Empty) at once");
    // get(block=True, timeout=0.2): Empty after the timeout.
    let t = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(Error::Empty)));
    println!("get_timeout(0.2 s) on an empty queue -> Err(Empty) after {:.2} s", t.elapsed().as_secs_f64());

    // put has the same block and timeout, on a bounded queue: Full, and the item comes back.
    let bounded = Queue::<Item>::with_maxsize(1)?;
    bounded.put((1, None, "fits".to_string()))?;
    let t = Instant::now();
    match bounded.put_timeout((2, None, "does not fit".to_string()), Duration::from_millis(200)) {
        Err(PutError::Full(item)) => {
            println!(
                "put_timeout(0.2 s) on a full queue -> Err(Full({item:?})) after {:.2} s",
                t.elapsed().as_secs_f64()
            )
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(matches!(bounded.put_nowait((3, None, String::new())), Err(PutError::Full(_))));
    println!("put_nowait() on a full queue -> Err(Full(item)) at once; the item is not lost");
    Ok(())
}
