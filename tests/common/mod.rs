//! Shared by the integration tests: run a case under each start method, and check that it
//! leaves no zombie, no stray child and no descriptor behind.
#![allow(dead_code)]

use multiprocess::StartMethod;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Generates one `#[test]` per start method from a function of the method:
///
/// ```ignore
/// start_methods! {
///     /// PROC-05: after join, exitcode 0 and not alive.
///     fn proc_05_join(m) { ... }
/// }
/// ```
/// gives `proc_05_join::fork`, `proc_05_join::spawn`, `proc_05_join::forkserver`, each run
/// inside a [`LeakGuard`].
#[macro_export]
macro_rules! start_methods {
    ($($(#[$attr:meta])* fn $name:ident($m:ident) $body:block)*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_variables)]
            fn case($m: multiprocess::StartMethod) $body
            #[test]
            fn fork() { $crate::common::run_case(multiprocess::StartMethod::Fork, case) }
            #[test]
            fn spawn() { $crate::common::run_case(multiprocess::StartMethod::Spawn, case) }
            #[test]
            fn forkserver() { $crate::common::run_case(multiprocess::StartMethod::ForkServer, case) }
        }
    )*};
}

/// Runs `case(m)` inside a leak guard.
pub fn run_case(m: StartMethod, case: fn(StartMethod)) {
    let guard = LeakGuard::new();
    case(m);
    guard.check();
}

/// Whether this test has the process to itself, so that every descriptor and child seen is
/// its own: under `cargo nextest` (one process per test) or with `MULTIPROCESS_LEAK_CHECK=1`.
/// Plain `cargo test` runs tests side by side in one process, where another test's pipe would
/// look like a leak; there the check is skipped.
pub fn alone_in_process() -> bool {
    std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test")
        || std::env::var("MULTIPROCESS_LEAK_CHECK").is_ok_and(|v| v == "1")
}

/// Set in a run of a test binary made by [`isolated`] or [`fresh_process`]: the test it names
/// runs its body.
const ISOLATED_ENV: &str = "MULTIPROCESS_ISOLATED_TEST";

/// Runs `body` in a process of its own: under nextest each test has one already; under plain
/// `cargo test` this test binary runs again with only the test `name`, with the leak check on
/// (it is alone there). For tests that kill or watch the fork server, which would disturb (or
/// be disturbed by) the tests beside them in one process.
#[allow(dead_code)]
pub fn isolated(name: &str, body: impl FnOnce()) {
    if alone_in_process() || std::env::var(ISOLATED_ENV).is_ok_and(|v| v == name) {
        return body();
    }
    let status = rerun(name).env("MULTIPROCESS_LEAK_CHECK", "1").status().unwrap();
    assert!(status.success(), "{name}, run alone, failed: {status}");
}

/// Whether this is the run of the test `name` that [`fresh_process`] made.
#[allow(dead_code)]
pub fn in_fresh_process(name: &str) -> bool {
    std::env::var(ISOLATED_ENV).is_ok_and(|v| v == name)
}

/// Runs the test `name` again in a fresh run of this binary, always (for a test that needs a
/// process in which the crate has done nothing yet), and returns what it printed.
#[allow(dead_code)]
pub fn fresh_process(name: &str) -> std::process::Output {
    rerun(name).output().unwrap()
}

fn rerun(name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ISOLATED_ENV, name)
        .stdin(std::process::Stdio::null());
    command
}

/// Notes the open descriptors; [`check`](LeakGuard::check) fails the test if new ones are
/// still open (other than the crate's persistent ones) or a child other than the fork server
/// and the resource tracker is left, running or zombie.
pub struct LeakGuard {
    fds: BTreeSet<i32>,
}

impl LeakGuard {
    pub fn new() -> LeakGuard {
        LeakGuard { fds: multiprocess::__private::open_fds().unwrap().into_iter().collect() }
    }

    pub fn check(self) {
        if !alone_in_process() {
            return;
        }
        // Children killed a moment ago may still be on their way out: give them a second.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let leaked_fds = self.leaked_fds();
            let children = stray_children();
            if leaked_fds.is_empty() && children.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("leak: descriptors {leaked_fds:?} ({}), children {children:?}", describe(&leaked_fds));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn leaked_fds(&self) -> Vec<i32> {
        let persistent: BTreeSet<i32> = multiprocess::__private::persistent_fds().into_iter().collect();
        multiprocess::__private::open_fds()
            .unwrap()
            .into_iter()
            .filter(|fd| !self.fds.contains(fd) && !persistent.contains(fd))
            .collect()
    }
}

fn describe(fds: &[i32]) -> String {
    fds.iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
            format!("{fd} -> {}", target.unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// This process's children (with their state letter), other than the fork server.
pub fn stray_children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let ours = [multiprocess::__private::forkserver_pid(), multiprocess::__private::tracker_pid()];
    children_of(me).into_iter().filter(|(pid, _)| !ours.contains(&Some(*pid))).collect()
}

/// The children of `parent` with their state letters (`Z` for a zombie), read from /proc.
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may hold spaces: parse after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push((pid, state));
        }
    }
    out
}

/// Whether process `pid` exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').map(|i| &stat[i + 2..i + 3]) != Some("Z"),
        Err(_) => false,
    }
}

/// Asserts that `elapsed` fits a blocking call with timeout `t`: not before `t - 10 ms`, and
/// within 1 s more on a loaded machine.
pub fn assert_timeout_elapsed(elapsed: Duration, t: Duration) {
    assert!(elapsed + Duration::from_millis(10) >= t, "returned after {elapsed:?}, before the timeout {t:?}");
    assert!(elapsed <= t + Duration::from_secs(1), "returned after {elapsed:?}, far past the timeout {t:?}");
}

/// Asserts that a call with timeout `t` (0.2 s in the cases) took at least `t - 10 ms` and at
/// most `t + 0.8 s`: a 0.2 s timeout returns within 1 s.
pub fn assert_took(elapsed: Duration, t: Duration) {
    assert!(elapsed + Duration::from_millis(10) >= t, "returned after {elapsed:?}, before the timeout {t:?}");
    assert!(elapsed <= t + Duration::from_millis(800), "returned after {elapsed:?}, far past the timeout {t:?}");
}

/// Polls `f` until it is true, for `limit` at most (CPython's `assertReachesEventually`).
pub fn eventually_within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// Asserts that a call that should not wait took under 0.5 s (a generous bound for a loaded
/// machine; the point is that it did not block for its timeout).
pub fn assert_prompt(elapsed: Duration) {
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}, expected no wait");
}

/// Installs `handler` for `signal` without `SA_RESTART`, so that a blocked syscall sees EINTR
/// (what the EINTR cases test). The handler must be async-signal-safe.
pub fn install_signal_handler(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe by contract.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(signal, &action, std::ptr::null_mut()), 0);
    }
}

/// Runs a single-process case inside a [`LeakGuard`].
pub fn guarded(case: impl FnOnce()) {
    let guard = LeakGuard::new();
    case();
    guard.check();
}

/// Unlinks its `/dev/shm` names when dropped, so a failing test leaves nothing behind.
pub struct Cleanup(pub Vec<String>);

impl Cleanup {
    pub fn new() -> Cleanup {
        Cleanup(Vec::new())
    }

    /// Remembers `name` for unlinking; returns it.
    pub fn add(&mut self, name: impl Into<String>) -> String {
        let name = name.into();
        self.0.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let path = std::ffi::CString::new(format!("/{name}")).unwrap();
            // SAFETY: shm_unlink reads a NUL-terminated name; a missing one is ENOENT.
            unsafe { libc::shm_unlink(path.as_ptr()) };
        }
    }
}

/// Starts `target(args)` under `m`.
pub fn start<F, A>(m: multiprocess::StartMethod, target: F, args: A) -> multiprocess::Process
where
    F: multiprocess::Target<A>,
    A: multiprocess::Args,
{
    let mut p = multiprocess::get_context(m).process(target, args);
    p.start().unwrap();
    p
}

/// Joins `p` and asserts that it exited 0.
pub fn join_ok(p: &mut multiprocess::Process) {
    p.join().unwrap();
    assert_eq!(p.exitcode(), Some(0), "child {} failed", p.name());
}

/// Times `f`.
pub fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// HMAC-MD5, the digest of CPython's legacy (3.11 and older) handshake, computed here
/// independently of the crate's code.
pub fn hmac_md5(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = <Hmac<md5::Md5> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// HMAC-SHA256, the digest of CPython 3.12's `{sha256}` handshake.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// Bytes that serde writes as one run (`serialize_bytes`), not one call per byte as a
/// `Vec<u8>`: megabytes of them encode in milliseconds even in a debug build, so that what a
/// test times is its subject, not the encoding.
#[allow(dead_code)]
pub struct Blob(pub Vec<u8>);

impl serde::Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Blob, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}
