//! Body of `seed_fork` (and step 1 of the tour): the seed notes' `os.fork()` example.

use multiprocess::{Fork, fork, getpid, getppid};
use std::io::Write;

/// Forks once; child and parent both print `111`, then who they are.
pub fn run() -> multiprocess::Result<()> {
    let parent_pid = getpid();
    // A forked child inherits a copy of everything still sitting in our stdout buffer:
    // flush it first, or the child would print it a second time.
    std::io::stdout().flush()?;

    // SAFETY: this program is single-threaded, and the child only prints and exits.
    match unsafe { fork() }? {
        Fork::Child => {
            // The child runs the same code as the parent from here on, as after `os.fork()`.
            // It must end with `exit` and must not unwind back into `main`, so it turns any
            // failure (even a panicking print) into an exit code the parent checks.
            let ok = std::panic::catch_unwind(|| {
                println!("111");
                println!("  child : getpid() = {}, getppid() = {}", getpid(), getppid());
                getppid() == parent_pid && getpid() != parent_pid
            })
            .unwrap_or(false);
            multiprocess::exit(if ok { 0 } else { 1 });
        }
        Fork::Parent { mut child } => {
            // Python's `os.fork()` returns the child's pid here; we get the child as a started
            // `Process`. Joining it first keeps the two `111` lines in a fixed order.
            child.join()?;
            println!("111");
            let child_pid = child.pid().expect("a forked child has a pid");
            println!("  parent: getpid() = {}, fork() gave the child's pid {child_pid}", getpid());
            assert_eq!(getpid(), parent_pid, "the parent keeps its pid");
            assert_ne!(child_pid, parent_pid, "the child has a pid of its own");
            assert_eq!(child.exitcode(), Some(0), "the child saw getppid() == the parent's pid");
            println!("child exited with code {:?}", child.exitcode());
        }
    }
    Ok(())
}
