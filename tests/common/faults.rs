//! Helpers of `tests/faults.rs`: finding a child the moment it appears, stopping and killing
//! it from outside, re-running this test binary as a helper process, descriptor limits.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The calling thread's id: `std::process::Command` and fork start children from the calling
/// thread, and `/proc/self/task/<tid>/children` lists exactly those.
pub fn gettid() -> i32 {
    // SAFETY: gettid cannot fail.
    unsafe { libc::gettid() }
}

/// The `children` file of thread `tid` of process `pid`.
pub fn children_file(pid: u32, tid: i32) -> String {
    format!("/proc/{pid}/task/{tid}/children")
}

/// The pids listed in a `children` file (empty if it cannot be read).
pub fn read_children(file: &str) -> BTreeSet<u32> {
    std::fs::read_to_string(file).unwrap_or_default().split_whitespace().filter_map(|s| s.parse().ok()).collect()
}

/// The state letter of process `pid` (`T` stopped, `Z` zombie), if it exists.
pub fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; the callers name processes they made or watch.
    unsafe { libc::kill(pid as i32, signal) };
}

/// What the watcher of [`start_and_kill_first_child`] did.
#[derive(Debug)]
pub enum Watch {
    /// It stopped the new child while `start()` was still running, then killed it.
    KilledDuringStart { pid: u32, at: Instant },
    /// `start()` had returned by the time the child was stopped: it was let go again.
    TooLate { pid: u32 },
    /// No new child was seen.
    NotSeen,
}

/// Runs `start` while a watcher thread polls `children` (a `children` file) for a child that
/// was not there before. The first one it sees it stops with `SIGSTOP`; if `start` has not
/// returned by then, it kills it with `SIGKILL`, else it lets it continue (`SIGCONT`).
/// Returns what `start` returned, when it returned, and what the watcher did.
pub fn start_and_kill_first_child<R: Send>(children: &str, start: impl FnOnce() -> R + Send) -> (R, Instant, Watch) {
    let before = read_children(children);
    let returned = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(&pid) = read_children(children).difference(&before).next() {
                    signal(pid, libc::SIGSTOP);
                    // `start` sends the child's orders as its last step (without waiting for
                    // the child): while it has not returned, the stopped child has not run
                    // its target, which needs its orders and then time to decode them.
                    if returned.load(Ordering::SeqCst) {
                        signal(pid, libc::SIGCONT);
                        return Watch::TooLate { pid };
                    }
                    signal(pid, libc::SIGKILL);
                    return Watch::KilledDuringStart { pid, at: Instant::now() };
                }
                if returned.load(Ordering::SeqCst) || Instant::now() > deadline {
                    return Watch::NotSeen;
                }
                std::thread::yield_now();
            }
        });
        let r = start();
        let at = Instant::now();
        returned.store(true, Ordering::SeqCst);
        (r, at, watcher.join().unwrap())
    })
}

/// A run of this test binary with only the test `name`, `env` set, stdin and stdout piped
/// (stderr inherited, so that its messages show with the test's).
pub struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// The prefix of the lines a helper reports on.
pub const REPORT: &str = "MPFAULT ";

impl Helper {
    /// Starts `exe` (this test binary or a copy of it) running the test `name` alone.
    pub fn start(exe: &std::path::Path, name: &str, env: &[(&str, String)]) -> Helper {
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // A file just written can be "busy" for a moment, if a fork child of another test
        // running beside this one (plain `cargo test`) holds the descriptor it was written
        // through.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => break other.unwrap(),
            }
        };
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Helper { child, stdin, lines }
    }

    /// The next report line (without its prefix); panics if the helper ends first.
    pub fn report(&mut self) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            // The harness may have printed `test <name> ... ` on the same line first.
            if let Some(at) = line.find(REPORT) {
                return line[at + REPORT.len()..].to_string();
            }
        }
        panic!("the helper ended without reporting");
    }

    /// Writes a line to the helper's stdin.
    pub fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the helper to exit; whether it succeeded.
    pub fn finish(mut self) -> bool {
        drop(self.stdin.take());
        for _ in self.lines.by_ref() {}
        self.child.wait().unwrap().success()
    }
}

/// Prints a report line for the test that started this helper.
pub fn report(line: &str) {
    println!("\n{REPORT}{line}");
    std::io::stdout().flush().unwrap();
}

/// Waits for a line from the test that started this helper.
pub fn wait_for_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// This process's `RLIMIT_NOFILE` (soft, hard).
pub fn nofile() -> (u64, u64) {
    // SAFETY: `rlimit` is plain data that getrlimit fills.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into `r`, which lives for the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

/// Sets this process's soft `RLIMIT_NOFILE` (call it only in a child process of the test).
pub fn set_nofile_soft(soft: u64) {
    let (_, hard) = nofile();
    let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads `r`; lowering or restoring our own soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) }, 0, "setrlimit({soft})");
}

/// A directory of its own under the system temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mpfaults-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
