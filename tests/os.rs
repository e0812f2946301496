//! The `os`-level helpers: CPU counts honour affinity, and forking a threaded process warns
//! once (CPython 3.12's DeprecationWarning), unless silenced.
mod common;
use multiprocess::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// Pins itself to one CPU and reports `process_cpu_count()` and `cpu_count()`.
fn pinned_counts(conn: Connection) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on this process with a set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
    conn.send(&(process_cpu_count(), cpu_count()))
}

start_methods! {
    /// `process_cpu_count()` is the CPUs this process may use (Python 3.13's
    /// `os.process_cpu_count()`); `cpu_count()` stays the machine's.
    fn process_cpu_count_honours_affinity(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(pinned_counts, (w,));
        p.start().unwrap();
        let (allowed, all) = r.recv::<(usize, usize)>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(allowed, 1);
        assert_eq!(all, cpu_count());
    }
}

fn nap() {
    std::thread::sleep(std::time::Duration::from_secs(2));
}

/// With a second thread running, forks twice with stderr in a file; reports the file.
fn fork_twice_with_a_thread(path: String, silence: bool, conn: Connection) -> Result<()> {
    let file = std::fs::File::create(&path).map_err(Error::Io)?;
    // SAFETY: dup2 replaces fd 2 with a copy of an open descriptor we own.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 2) }, 2);
    if silence {
        // SAFETY: this process has one thread here (the target's); nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("MULTIPROCESS_NO_FORK_WARNING", "1") };
    }
    let _sleeper = std::thread::spawn(nap);
    for _ in 0..2 {
        let mut p = get_context(StartMethod::Fork).process(|| (), ());
        p.start()?;
        p.join()?;
        assert_eq!(p.exitcode(), Some(0));
    }
    let mut text = String::new();
    std::fs::File::open(&path).map_err(Error::Io)?.read_to_string(&mut text).map_err(Error::Io)?;
    let _ = std::fs::remove_file(&path);
    conn.send(&text)
}

fn stderr_of_forks(silence: bool) -> String {
    let path = std::env::temp_dir().join(format!("multiprocess-test-forkwarn-{silence}-{}", std::process::id()));
    let (r, w) = pipe().unwrap();
    // A spawn child: a fresh process whose threads and stderr are its own.
    let mut p =
        get_context(StartMethod::Spawn).process(fork_twice_with_a_thread, (path.display().to_string(), silence, w));
    p.start().unwrap();
    let text = r.recv::<String>().unwrap();
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0));
    text
}

/// Forking a process with another thread warns, once per process.
#[test]
fn fork_with_threads_warns_once() {
    let g = common::LeakGuard::new();
    let text = stderr_of_forks(false);
    assert_eq!(text.matches("multiprocess: warning:").count(), 1, "{text:?}");
    assert!(text.contains("2 threads"), "{text:?}");
    g.check();
}

/// `MULTIPROCESS_NO_FORK_WARNING=1` silences it.
#[test]
fn fork_warning_can_be_silenced() {
    let g = common::LeakGuard::new();
    assert_eq!(stderr_of_forks(true), "");
    g.check();
}

fn print_child_line() {
    println!("child;");
}

/// With stdout in a file, leaves a partial line in the buffer, forks a child that prints a
/// line, then ends the parent's line; sends back what the file holds.
fn partial_line_then_fork(path: String, conn: Connection) -> Result<()> {
    let file = std::fs::File::create(&path).map_err(Error::Io)?;
    // SAFETY: dup2 replaces fd 1 with a copy of an open descriptor we own.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 1) }, 1);
    print!("partial;");
    let mut p = get_context(StartMethod::Fork).process(print_child_line, ());
    p.start()?;
    p.join()?;
    println!("end");
    std::io::stdout().flush().map_err(Error::Io)?;
    let mut text = String::new();
    std::fs::File::open(&path).map_err(Error::Io)?.read_to_string(&mut text).map_err(Error::Io)?;
    let _ = std::fs::remove_file(&path);
    conn.send(&text)
}

/// Output buffered before a fork is written once, by the parent: the buffer is flushed before
/// the fork, as CPython's `Popen` does, so the child does not inherit and repeat it.
#[test]
fn fork_child_does_not_repeat_buffered_output() {
    let g = common::LeakGuard::new();
    {
        let path = std::env::temp_dir().join(format!("multiprocess-test-stdout-{}", std::process::id()));
        let (r, w) = pipe().unwrap();
        let mut p = get_context(StartMethod::Spawn).process(partial_line_then_fork, (path.display().to_string(), w));
        p.start().unwrap();
        let text = r.recv::<String>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(text, "partial;child;\nend\n");
    }
    g.check();
}
