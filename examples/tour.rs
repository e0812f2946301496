//! The tour: every example of the seed notes, in the notes' order, each introduced by the
//! Python it mirrors and what its Rust twin shows; then a manager, the next thing their
//! reader reaches for.
//!
//! Each step is the `run()` of a module under `examples/seeds/`, the same code the standalone
//! examples (`seed_fork`, `seed_process`, ...) run, so the tour and the examples cannot drift
//! apart. Every step checks its own results; the tour stops with a non-zero exit code at the
//! first step that fails.
//!
//! Run: `cargo run --example tour`, or under one start method:
//! `MULTIPROCESS_START_METHOD=spawn cargo run --example tour` (`fork`, `spawn`, `forkserver`).

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

#[path = "seeds/children_cpu_count.rs"]
mod children_cpu_count;
#[path = "seeds/fork.rs"]
mod fork;
#[path = "seeds/join_terminate.rs"]
mod join_terminate;
#[path = "seeds/lock.rs"]
mod lock;
#[path = "seeds/manager.rs"]
mod manager;
#[path = "seeds/pipe.rs"]
mod pipe;
#[path = "seeds/pool.rs"]
mod pool;
#[path = "seeds/process.rs"]
mod process;
#[path = "seeds/queue.rs"]
mod queue;
#[path = "seeds/value_array.rs"]
mod value_array;

/// One step of the tour.
struct Step {
    /// The standalone example that runs the same code.
    example: &'static str,
    /// The Python snippet of the seed notes.
    python: &'static str,
    /// What the Rust twin shows, and where it differs from Python.
    about: &'static [&'static str],
    run: fn() -> multiprocess::Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        example: "seed_fork",
        python: "os.fork(); print('111')  # prints 111 twice",
        about: &[
            "unsafe { fork() } gives Fork::Child where Python returns 0, Fork::Parent { child } where it returns the pid;",
            "both sides print 111 and their getpid()/getppid(). Unlike the notes, the parent joins the child",
            "before printing (fixed order) and the child ends with multiprocess::exit(0) instead of running on.",
        ],
        run: fork::run,
    },
    Step {
        example: "seed_process",
        python: "p = Process(target=f, args=('john',)); p.start(); p.join()",
        about: &[
            "Process::new(f, (\"john\".to_string(),)): a fn item and a tuple of serde arguments;",
            "the child prints `hello john` under the default start method (MULTIPROCESS_START_METHOD).",
        ],
        run: process::run,
    },
    Step {
        example: "seed_join_terminate",
        python: "p.join(timeout); p.exitcode; p.terminate()",
        about: &[
            "join_timeout(d) returns after d or when the child ends; exitcode() is None while it runs;",
            "terminate() sends SIGTERM, so exitcode() is -15 as in Python; joining many times is fine;",
            "join before start is Err(NotStarted) where Python raises AssertionError.",
        ],
        run: join_terminate::run,
    },
    Step {
        example: "seed_children_cpu_count",
        python: "multiprocessing.active_children(); multiprocessing.cpu_count()",
        about: &[
            "cpu_count() counts the machine's CPUs, process_cpu_count() those this process may use;",
            "one worker per usable CPU (at most 4) is listed by active_children(), which also reaps",
            "the workers once they end, as Python's does.",
        ],
        run: children_cpu_count::run,
    },
    Step {
        example: "seed_pool",
        python: "Pool(multiprocessing.cpu_count()).map(f, xs)  # as many workers as cores",
        about: &[
            "Pool::new(cpu_count())? starts one worker per CPU; map(f, xs)? runs f on every item, in order,",
            "in chunks; apply_async returns an AsyncResult. A task that panics fails alone with",
            "Err(TaskPanicked), and the pool goes on (a worker that dies is replaced, where CPython hangs).",
        ],
        run: pool::run,
    },
    Step {
        example: "seed_queue",
        python: "q = Queue(); q.put([42, None, 'hello']); q.get(block, timeout)",
        about: &[
            "Queue::<T>::new()? is typed: the notes' [42, None, 'hello'] is a tuple (i32, Option<i32>, String).",
            "A child puts into the same queue; get_timeout(d) and get_nowait() give Err(Empty) as queue.Empty;",
            "on a bounded queue put_timeout/put_nowait give Err(Full(item)), handing the item back.",
        ],
        run: queue::run,
    },
    Step {
        example: "seed_pipe",
        python: "parent_conn, child_conn = Pipe(); conn.send(obj); conn.recv()",
        about: &[
            "pipe() gives two duplex ends; the child gets its end as an argument and the two talk both ways.",
            "Unlike Python, the child's end moves into the Process and is closed in the parent at start(),",
            "so once the child exits the parent's recv() gives Err(Eof) instead of blocking.",
        ],
        run: pipe::run,
    },
    Step {
        example: "seed_value_array",
        python: "num = Value('d', 0.0); arr = Array('i', range(10))",
        about: &[
            "Value::new(0.0f64)? and Array::from_iter(0..10)? live in shared memory, typed (the typecode is the",
            "Rust type). The child sets num to 3.1415927 and negates arr in place; the parent sees both.",
            "get()/set() take the value's own RLock as Python's .value does; lock()? gives &mut access.",
        ],
        run: value_array::run,
    },
    Step {
        example: "seed_lock",
        python: "l = Lock(); l.acquire(); ...; l.release()",
        about: &[
            "Lock::new()? makes a lock in shared memory; acquire()/release() as in Python, and lock()?",
            "gives a guard that releases when dropped (Python's `with l:`). Three processes print under it.",
            "A second release() is Err(ReleasedTooManyTimes); a holder that dies is reported, not waited for.",
        ],
        run: lock::run,
    },
    Step {
        example: "manager_dict",
        python: "with Manager() as m: d = m.dict(); Process(target=f, args=(d, n, m.Lock()))",
        about: &[
            "Past the notes: multiprocess::manager()? starts a server process that owns the dict;",
            "d.clone() goes to each child as a proxy (any start method), two children write into it under",
            "a manager Lock, and the server frees the dict once the last proxy anywhere is dropped.",
        ],
        run: manager::run,
    },
];

fn main() -> multiprocess::Result<()> {
    multiprocess::init();
    println!("tour: the seed notes' examples, under start method {}", multiprocess::get_start_method());
    for (i, step) in STEPS.iter().enumerate() {
        println!();
        println!("== {}/{} {} (cargo run --example {})", i + 1, STEPS.len(), step.python, step.example);
        for line in step.about {
            println!("   {line}");
        }
        println!("--");
        // Children forked in the step inherit our stdout buffer: leave nothing in it.
        std::io::stdout().flush()?;
        let outcome = catch_unwind(AssertUnwindSafe(step.run));
        std::io::stdout().flush()?;
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "a check failed (panic above)".to_string(),
        };
        eprintln!("tour: step {} ({}) failed: {failure}", i + 1, step.example);
        std::process::exit(1);
    }
    println!();
    println!("tour: {} examples passed", STEPS.len());
    Ok(())
}
