//! Process lifecycle, identity and exit codes: CONFORMANCE.md section 1 (PROC-01..PROC-36),
//! plus MISC-06 (which descriptors a child holds). Each case runs under every start method it
//! applies to; where Rust needs another shape than Python, the case's doc comment says how it
//! was translated.
mod common;
use multiprocess::connection::wait;
use multiprocess::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Targets and helpers shared by several cases.

fn noop() {}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Tells the parent it is running, then stays alive until the parent sends or closes its end.
fn ready_then_wait(conn: Connection) -> Result<()> {
    conn.send(&())?;
    let _ = conn.recv::<()>();
    Ok(())
}

/// Stays alive until the parent sends or closes its end. The tests release such children by
/// sending, not by closing: under plain `cargo test` a fork child of another test may hold a
/// copy of our end, and then closing ours is no end of file.
fn wait_for_parent(conn: Connection) {
    let _ = conn.recv::<()>();
}

fn in_active_children(pid: Option<u32>) -> bool {
    let pid = pid.expect("started");
    active_children().iter().any(|c| c.pid() == pid)
}

fn name_in_active_children(name: &str) -> bool {
    active_children().iter().any(|c| c.name() == name)
}

/// A path in the temp directory, unique to this test run, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str, m: StartMethod) -> TempPath {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        TempPath(std::env::temp_dir().join(format!("multiprocess-test-{tag}-{m}-{}-{nanos}", std::process::id())))
    }

    fn string(&self) -> String {
        self.0.to_str().expect("temp dir is UTF-8").to_string()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Points this process's fd 2 at a new file `path`, so the parent can read what it prints.
fn redirect_stderr_to(path: &str) {
    let file = std::fs::File::create(path).expect("create the stderr file");
    // SAFETY: dup2 replaces fd 2 with a copy of an open descriptor we own.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), 2) }, 2);
}

/// This process's open descriptors, each with what it points at (`/proc/self/fd/N`).
fn fds_with_targets() -> Vec<(RawFd, String)> {
    __private::open_fds()
        .expect("list /proc/self/fd")
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
            (fd, target.unwrap_or_default())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// PROC-01, 02: the current and the parent process.

/// PROC-01: the main process is alive, not a daemon, has a 32-byte random authkey, its own pid
/// and the name `MainProcess`. (CPython's `current_process().exitcode` has no counterpart:
/// `CurrentProcess` has no exit code.)
#[test]
fn proc_01_current_process_in_main() {
    let me = current_process();
    assert!(me.is_alive());
    assert!(!me.is_daemon());
    assert_eq!(me.authkey().len(), 32);
    assert!(me.authkey().iter().any(|&b| b != 0), "the authkey is random, not zeros");
    assert_eq!(current_process().authkey(), me.authkey(), "one key per process");
    assert_eq!(me.pid(), std::process::id());
    assert_eq!(me.pid(), getpid());
    assert_eq!(me.name(), "MainProcess");
    assert!(me.identity().is_empty());
}

fn report_parent(conn: Connection) -> Result<()> {
    conn.send(&parent_process().map(|p| (p.pid(), p.name().to_string())))
}

start_methods! {
    /// PROC-02: the main process has no parent; a child's parent is the main process, by pid
    /// and name.
    fn proc_02_parent_process(m) {
        assert!(parent_process().is_none());
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(report_parent, (w,));
        p.start().unwrap();
        let parent = r.recv::<Option<(u32, String)>>().unwrap();
        assert_eq!(parent, Some((std::process::id(), "MainProcess".to_string())));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-03..05: a process through its lifecycle (CPython's test_process).

fn report_args_and_self(conn: Connection, a: i32, b: i32, hello: i32, bye: f64) -> Result<()> {
    let me = current_process();
    conn.send(&(a, b, hello, bye))?;
    conn.send(&me.name().to_string())?;
    conn.send(&me.authkey().to_vec())?;
    conn.send(&(me.pid(), getpid()))?;
    conn.send(&me.is_daemon())?;
    // Alive until the parent has looked at us.
    let _ = conn.recv::<()>();
    Ok(())
}

start_methods! {
    /// PROC-03: before start, a process is not alive, not listed, has no pid nor exit code,
    /// and keeps the daemon flag it was given. (The name is unique to this test: under plain
    /// `cargo test`, PROC-04 runs a "SomeProcess" at the same time.)
    fn proc_03_before_start(m) {
        let name = format!("SomeProcess-03-{m}");
        let p = get_context(m).process(noop, ()).with_name(name.clone()).with_daemon(true);
        assert_eq!(p.name(), name);
        assert!(!p.is_alive());
        assert!(p.is_daemon());
        let listed: Vec<ActiveChild> = active_children();
        assert!(!listed.iter().any(|c| c.name() == name));
        assert_eq!(p.exitcode(), None);
        assert_eq!(p.pid(), None);
    }

    /// PROC-04: after start, the process is alive and listed with no exit code; the child got
    /// its arguments (Python's kwargs `hello=23, bye=2.54` become positional), its name, the
    /// parent's authkey, and its pid is `p.pid()`.
    fn proc_04_after_start(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m)
            .process(report_args_and_self, (w, 1, 2, 23, 2.54))
            .with_name("SomeProcess")
            .with_daemon(true);
        p.start().unwrap();
        assert_eq!(p.exitcode(), None);
        assert!(p.is_alive());
        assert!(in_active_children(p.pid()));
        assert!(name_in_active_children("SomeProcess"));
        assert_eq!(r.recv::<(i32, i32, i32, f64)>().unwrap(), (1, 2, 23, 2.54));
        assert_eq!(r.recv::<String>().unwrap(), "SomeProcess");
        assert_eq!(r.recv::<Vec<u8>>().unwrap(), current_process().authkey());
        let (reported_pid, os_pid) = r.recv::<(u32, u32)>().unwrap();
        assert_eq!(Some(reported_pid), p.pid());
        assert_eq!(Some(os_pid), p.pid());
        assert!(r.recv::<bool>().unwrap(), "the child knows it is a daemon");
        // Still alive: the child waits for us.
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        r.send(&()).unwrap();
        p.join().unwrap();
    }

    /// PROC-05: after join, exit code 0, not alive, not listed.
    fn proc_05_after_join(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(ready_then_wait, (w,));
        p.start().unwrap();
        r.recv::<()>().unwrap();
        assert!(in_active_children(p.pid()));
        r.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(!p.is_alive());
        assert!(!in_active_children(p.pid()));
        assert!(!name_in_active_children(p.name()));
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-06..11: arguments, daemon flag, names, errors before and after start, Debug.

fn echo<T: Serialize + for<'de> Deserialize<'de>>(conn: Connection, value: T) -> Result<()> {
    conn.send(&value)
}

start_methods! {
    /// PROC-06: argument payloads arrive identical. (Python's list-versus-tuple `args` has no
    /// counterpart: Rust arguments are always a tuple; the payloads `1`, `"str"`, `[1]`,
    /// `(1,)` are kept.)
    fn proc_06_args_arrive_identical(m) {
        let ctx = get_context(m);
        let (r1, w1) = pipe().unwrap();
        let (r2, w2) = pipe().unwrap();
        let (r3, w3) = pipe().unwrap();
        let (r4, w4) = pipe().unwrap();
        let mut ps = vec![
            ctx.process(echo::<i32>, (w1, 1)),
            ctx.process(echo::<String>, (w2, "str".to_string())),
            ctx.process(echo::<Vec<i32>>, (w3, vec![1])),
            ctx.process(echo::<(i32,)>, (w4, (1,))),
        ];
        for p in &mut ps {
            p.start().unwrap();
        }
        assert_eq!(r1.recv::<i32>().unwrap(), 1);
        assert_eq!(r2.recv::<String>().unwrap(), "str");
        assert_eq!(r3.recv::<Vec<i32>>().unwrap(), vec![1]);
        assert_eq!(r4.recv::<(i32,)>().unwrap(), (1,));
        for p in &mut ps {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    }
}

fn report_default_daemon(conn: Connection) -> Result<()> {
    conn.send(&Process::new(noop, ()).is_daemon())
}

start_methods! {
    /// PROC-07: the daemon flag defaults to the current process's (false in main, true in a
    /// daemon child), and `with_daemon` sets it either way.
    fn proc_07_daemon_argument(m) {
        let ctx = get_context(m);
        assert!(!current_process().is_daemon());
        assert!(!ctx.process(noop, ()).is_daemon());
        assert!(ctx.process(noop, ()).with_daemon(true).is_daemon());
        assert!(!ctx.process(noop, ()).with_daemon(false).is_daemon());
        let mut p = ctx.process(noop, ());
        p.set_daemon(true).unwrap();
        assert!(p.is_daemon());

        let (r, w) = pipe().unwrap();
        let mut d = ctx.process(report_default_daemon, (w,)).with_daemon(true);
        d.start().unwrap();
        assert!(r.recv::<bool>().unwrap(), "a Process made in a daemon is a daemon by default");
        d.join().unwrap();
        assert_eq!(d.exitcode(), Some(0));
    }
}

fn default_name_number(name: &str) -> u32 {
    name.strip_prefix("Process-").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a default name: {name}"))
}

/// PROC-08 (main process): default names are `Process-N`, N counting constructions. Other
/// tests construct processes concurrently under plain `cargo test`, so consecutive numbers are
/// asserted only when this test has the process to itself.
#[test]
fn proc_08_default_names_in_main() {
    let a = Process::new(noop, ());
    let b = Process::new(noop, ());
    let (na, nb) = (default_name_number(a.name()), default_name_number(b.name()));
    assert!(nb > na);
    if common::alone_in_process() {
        assert_eq!(nb, na + 1);
    }
    let mut c = Process::new(noop, ());
    c.set_name("custom");
    assert_eq!(c.name(), "custom");
    assert_eq!(Process::new(noop, ()).with_name("other").name(), "other");
}

type NameReport = (String, Vec<u32>, Vec<String>);

fn report_child_names(m: StartMethod, conn: Connection) -> Result<()> {
    let me = current_process();
    let a = get_context(m).process(noop, ());
    let mut b = get_context(m).process(noop, ());
    b.start()?;
    b.join()?;
    let c = get_context(m).process(noop, ()).with_name("custom");
    let d = get_context(m).process(noop, ());
    let names: Vec<String> = [&a, &b, &c, &d].iter().map(|p| p.name().to_string()).collect();
    conn.send(&(me.name().to_string(), me.identity().to_vec(), names))
}

start_methods! {
    /// PROC-08 (child): a child's default name is its identity; the processes it constructs
    /// are `Process-K:1`, `Process-K:2`, ... counting constructions (not starts, and custom
    /// names use up a number too).
    fn proc_08_default_names_in_child(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(report_child_names, (m, w));
        let k = default_name_number(p.name());
        p.start().unwrap();
        let (name, identity, names) = r.recv::<NameReport>().unwrap();
        assert_eq!(name, p.name());
        assert_eq!(identity, vec![k]);
        assert_eq!(names, [format!("Process-{k}:1"), format!("Process-{k}:2"), "custom".into(), format!("Process-{k}:4")]);
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// PROC-09: an unstarted process has no pid nor exit code, is not alive; `sentinel`, `join`,
/// `join_timeout`, `terminate`, `kill` and `interrupt` give `NotStarted`; its Debug form is
/// CPython's repr `<Process name='Process-1' parent=<pid> initial>`.
#[test]
fn proc_09_unstarted_process() {
    let mut p = Process::new(noop, ());
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(matches!(p.sentinel(), Err(Error::NotStarted)));
    assert!(matches!(p.join(), Err(Error::NotStarted)));
    assert!(matches!(p.join_timeout(Duration::from_millis(10)), Err(Error::NotStarted)));
    assert!(matches!(p.terminate(), Err(Error::NotStarted)));
    assert!(matches!(p.kill(), Err(Error::NotStarted)));
    assert!(matches!(p.interrupt(), Err(Error::NotStarted)));
    assert_eq!(format!("{p:?}"), format!("<Process name='{}' parent={} initial>", p.name(), std::process::id()));
}

start_methods! {
    /// PROC-10: `start()` twice gives `AlreadyStarted`, before and after join; so does setting
    /// the daemon flag after start.
    fn proc_10_start_twice_and_daemon_after_start(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(wait_for_parent, (w,));
        p.start().unwrap();
        assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
        assert!(matches!(p.set_daemon(true), Err(Error::AlreadyStarted)));
        assert!(!p.is_daemon());
        r.send(&()).unwrap();
        p.join().unwrap();
        assert!(matches!(p.start(), Err(Error::AlreadyStarted)));
        assert!(matches!(p.set_daemon(true), Err(Error::AlreadyStarted)));
        assert_eq!(p.exitcode(), Some(0));
    }

    /// PROC-11 (first half): Debug is CPython's repr, `initial` then `started` with the pid.
    fn proc_11_repr_initial_and_started(m) {
        let me = std::process::id();
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(wait_for_parent, (w,)).with_name("repr");
        assert_eq!(format!("{p:?}"), format!("<Process name='repr' parent={me} initial>"));
        p.start().unwrap();
        let pid = p.pid().unwrap();
        assert_eq!(format!("{p:?}"), format!("<Process name='repr' pid={pid} parent={me} started>"));
        r.send(&()).unwrap();
        p.join().unwrap();
        let mut d = get_context(m).process(noop, ()).with_name("d").with_daemon(true);
        assert_eq!(format!("{d:?}"), format!("<Process name='d' parent={me} initial daemon>"));
        d.start().unwrap();
        d.join().unwrap();
    }
}

start_methods! {
    /// PROC-11 (second half): a stopped process's repr keeps its pid and names a signal
    /// exit code: `<Process name='x' pid=N parent=P stopped exitcode=0>`, then
    /// `... stopped exitcode=-SIGTERM>` after terminate.
    fn proc_11_repr_stopped(m) {
        let me = std::process::id();
        let mut p = get_context(m).process(noop, ()).with_name("repr");
        p.start().unwrap();
        let pid = p.pid().unwrap();
        p.join().unwrap();
        assert_eq!(format!("{p:?}"), format!("<Process name='repr' pid={pid} parent={me} stopped exitcode=0>"));
        let mut t = get_context(m).process(sleep_ms, (100_000,)).with_name("t");
        t.start().unwrap();
        let pid = t.pid().unwrap();
        t.terminate().unwrap();
        t.join().unwrap();
        assert_eq!(format!("{t:?}"), format!("<Process name='t' pid={pid} parent={me} stopped exitcode=-SIGTERM>"));
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-12..15: join timeouts and signals.

/// CPython's `_kill_process`: a daemon child sleeping 100 s is alive and listed, `join` with a
/// zero timeout returns at once; then `how` stops it, `join` returns promptly, and the child is
/// neither alive nor listed. Returns its exit code.
fn kill_process(m: StartMethod, how: fn(&Process) -> Result<()>) -> Option<i32> {
    let mut p = get_context(m).process(sleep_ms, (100_000,)).with_daemon(true);
    p.start().unwrap();
    assert!(p.is_alive());
    assert!(in_active_children(p.pid()));
    assert_eq!(p.exitcode(), None);
    let t = Instant::now();
    p.join_timeout(Duration::ZERO).unwrap();
    common::assert_prompt(t.elapsed());
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    how(&p).unwrap();
    let t = Instant::now();
    p.join().unwrap();
    // CPython guards this join with a 10 s alarm.
    assert!(t.elapsed() < Duration::from_secs(10), "join after the signal took {:?}", t.elapsed());
    assert!(!p.is_alive());
    assert!(!in_active_children(p.pid()));
    p.exitcode()
}

start_methods! {
    /// PROC-12: `join_timeout(0)` returns at once and `join_timeout(0.3 s)` after 0.3 s, the
    /// child still alive with no exit code. (Python's `join(-1)` has no counterpart: a
    /// `Duration` is never negative.)
    fn proc_12_join_timeout_on_a_live_child(m) {
        let mut p = get_context(m).process(sleep_ms, (100_000,)).with_daemon(true);
        p.start().unwrap();
        let t = Instant::now();
        p.join_timeout(Duration::ZERO).unwrap();
        common::assert_prompt(t.elapsed());
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        let timeout = Duration::from_millis(300);
        let t = Instant::now();
        p.join_timeout(timeout).unwrap();
        common::assert_timeout_elapsed(t.elapsed(), timeout);
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        p.kill().unwrap();
        p.join().unwrap();
    }

    /// PROC-13: `terminate()` then `join()`: exit code -SIGTERM.
    fn proc_13_terminate_gives_minus_sigterm(m) {
        assert_eq!(kill_process(m, Process::terminate), Some(-libc::SIGTERM));
    }

    /// PROC-14: `kill()` then `join()`: exit code -SIGKILL.
    fn proc_14_kill_gives_minus_sigkill(m) {
        assert_eq!(kill_process(m, Process::kill), Some(-libc::SIGKILL));
    }
}

/// Optionally sets SIGINT to its default action, tells the parent it is ready, then sleeps.
fn wait_for_sigint(set_default: bool, conn: Connection) -> Result<()> {
    if set_default {
        // SAFETY: installing SIG_DFL has no handler code to be unsound.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    }
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    /// PROC-15: `interrupt()` sends SIGINT. A child that set SIGINT to its default action ends
    /// with -2, as in CPython. With no handler installed a Rust child also ends with -2, where
    /// CPython's default handler raises KeyboardInterrupt and exits 1 (a documented
    /// divergence: Rust has no default SIGINT handler).
    fn proc_15_interrupt_gives_minus_sigint(m) {
        for set_default in [false, true] {
            let (r, w) = pipe().unwrap();
            let mut p = get_context(m).process(wait_for_sigint, (set_default, w)).with_daemon(true);
            p.start().unwrap();
            r.recv::<()>().unwrap();
            p.interrupt().unwrap();
            let t = Instant::now();
            p.join_timeout(Duration::from_secs(30)).unwrap();
            assert!(t.elapsed() < Duration::from_secs(10), "SIGINT did not end the child promptly");
            assert_eq!(p.exitcode(), Some(-libc::SIGINT), "set_default={set_default}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-16..19: exit codes and what a failing child prints.

fn exit_with(code: i32) {
    multiprocess::exit(code)
}

fn return_exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

fn return_ok_exit_code(code: u8) -> std::result::Result<ExitCode, String> {
    Ok(ExitCode::from(code))
}

fn underscore_exit(code: i32) {
    // SAFETY: _exit ends the process at once; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// A real segmentation fault: a read from a page mapped with no access.
fn segfault() {
    // SAFETY: an anonymous private mapping of one page, owned by nobody else.
    let page = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert_ne!(page, libc::MAP_FAILED);
    // SAFETY: deliberately not: the page is PROT_NONE, so this read faults, which is the point.
    unsafe { std::ptr::read_volatile(page.cast::<u8>()) };
}

/// Starts every process, joins them all, and checks each exit code.
fn assert_exitcodes(mut cases: Vec<(Process, i32)>) {
    for (p, _) in &mut cases {
        p.start().unwrap();
    }
    for (p, expected) in &mut cases {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(*expected), "{}", p.name());
    }
}

start_methods! {
    /// PROC-16: `sys.exit(True/False/8/None)` and `sys.exit()` give 1, 0, 8, 0, 0. In Rust:
    /// `exit(1)`, `exit(0)`, `exit(8)`, returning `()`, returning `ExitCode::SUCCESS`; plus
    /// the other `ExitCode` forms a target can return.
    fn proc_16_exit_codes(m) {
        let ctx = get_context(m);
        assert_exitcodes(vec![
            (ctx.process(exit_with, (1,)).with_name("exit(True)"), 1),
            (ctx.process(exit_with, (0,)).with_name("exit(False)"), 0),
            (ctx.process(exit_with, (8,)).with_name("exit(8)"), 8),
            (ctx.process(noop, ()).with_name("return ()"), 0),
            (ctx.process(|| ExitCode::SUCCESS, ()).with_name("ExitCode::SUCCESS"), 0),
            (ctx.process(|| ExitCode::FAILURE, ()).with_name("ExitCode::FAILURE"), 1),
            (ctx.process(return_exit_code, (8,)).with_name("ExitCode::from(8)"), 8),
            (ctx.process(return_ok_exit_code, (3,)).with_name("Ok(ExitCode::from(3))"), 3),
        ]);
    }

    /// PROC-18: exit codes are truncated to 0..=255 by the OS (3, 255, 256 → 0, -1 → 255);
    /// `_exit(7)` gives 7; a segmentation fault gives -SIGSEGV.
    fn proc_18_exit_code_edges_and_segfault(m) {
        let ctx = get_context(m);
        assert_exitcodes(vec![
            (ctx.process(exit_with, (3,)), 3),
            (ctx.process(exit_with, (255,)), 255),
            (ctx.process(exit_with, (256,)), 0),
            (ctx.process(exit_with, (-1,)), 255),
            (ctx.process(underscore_exit, (7,)), 7),
            (ctx.process(segfault, ()), -libc::SIGSEGV),
        ]);
    }
}

/// How a PROC-17/19 child fails, after pointing its stderr at a file.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
enum Failure {
    /// `sys.exit([1, 2, 3])`: returns `Err(vec![1, 2, 3])`.
    ErrVec,
    /// `sys.exit('ignore this')`: returns `Err("ignore this")`.
    ErrStr,
    /// `1/0`: an integer division by zero panics.
    DivideByZero,
}

fn fail_with_vec(stderr_path: String) -> std::result::Result<(), Vec<i32>> {
    redirect_stderr_to(&stderr_path);
    Err(vec![1, 2, 3])
}

fn fail_with_str(stderr_path: String) -> std::result::Result<(), &'static str> {
    redirect_stderr_to(&stderr_path);
    Err("ignore this")
}

fn divide_by_zero(stderr_path: String) {
    redirect_stderr_to(&stderr_path);
    let zero = std::hint::black_box(0);
    std::hint::black_box(1 / zero);
}

/// Starts and joins a child that fails as `failure` says: its name and exit code.
fn run_failing(m: StartMethod, failure: Failure, stderr_path: String) -> Result<(String, Option<i32>)> {
    let ctx = get_context(m);
    let mut p = match failure {
        Failure::ErrVec => ctx.process(fail_with_vec, (stderr_path,)),
        Failure::ErrStr => ctx.process(fail_with_str, (stderr_path,)),
        Failure::DivideByZero => ctx.process(divide_by_zero, (stderr_path,)),
    };
    p.start()?;
    p.join()?;
    Ok((p.name().to_string(), p.exitcode()))
}

fn run_failing_and_report(m: StartMethod, failure: Failure, stderr_path: String, conn: Connection) -> Result<()> {
    conn.send(&run_failing(m, failure, stderr_path)?)
}

/// Runs a failing child under `m` and returns its name, exit code and stderr. With
/// `from_spawn_child`, the failing child is started by a spawn child rather than by this test
/// thread, whose output libtest may be capturing (see the fork variants below).
fn failing_child_stderr(m: StartMethod, failure: Failure, from_spawn_child: bool) -> (String, Option<i32>, String) {
    let path = TempPath::new("stderr", m);
    let (name, code) = if from_spawn_child {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(StartMethod::Spawn).process(run_failing_and_report, (m, failure, path.string(), w));
        p.start().unwrap();
        let report = r.recv::<(String, Option<i32>)>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        report
    } else {
        run_failing(m, failure, path.string()).unwrap()
    };
    let stderr = std::fs::read_to_string(&path.0).unwrap_or_default();
    (name, code, stderr)
}

/// PROC-17: `sys.exit(reason)` with a non-integer reason exits 1 and prints the reason on
/// stderr. In Rust the target returns `Err(reason)`: exit code 1, and stderr is exactly
/// `Process <name>:` then `Error: {reason:?}` (the crate's documented form of an uncaught
/// error), so `[1, 2, 3]` and `"ignore this"` appear as CPython prints them (the latter quoted).
fn proc_17_case(m: StartMethod, from_spawn_child: bool) {
    for (failure, reason) in [(Failure::ErrVec, "[1, 2, 3]"), (Failure::ErrStr, "\"ignore this\"")] {
        let (name, code, stderr) = failing_child_stderr(m, failure, from_spawn_child);
        assert_eq!(code, Some(1), "{failure:?}");
        assert_eq!(stderr.trim_end(), format!("Process {name}:\nError: {reason}"), "{failure:?}");
    }
}

/// PROC-19: an uncaught error (here a division by zero, which panics) exits 1, and stderr,
/// flushed at exit, holds the header `Process <name>:` followed by the panic message and its
/// source location (the counterpart of the traceback's exception name and source line).
fn proc_19_case(m: StartMethod, from_spawn_child: bool) {
    let (name, code, stderr) = failing_child_stderr(m, Failure::DivideByZero, from_spawn_child);
    assert_eq!(code, Some(1));
    let header = format!("Process {name}:\n");
    assert!(stderr.starts_with(&header), "stderr does not start with {header:?}: {stderr:?}");
    let message = stderr.find("attempt to divide by zero").unwrap_or_else(|| panic!("no panic message: {stderr:?}"));
    let location = stderr.find("tests/process.rs:").unwrap_or_else(|| panic!("no source location: {stderr:?}"));
    assert!(location < message, "the location comes with the panic line, before the message: {stderr:?}");
}

mod proc_17_exit_reason_on_stderr {
    use super::*;
    #[test]
    fn spawn() {
        common::run_case(StartMethod::Spawn, |m| proc_17_case(m, false))
    }
    #[test]
    fn forkserver() {
        common::run_case(StartMethod::ForkServer, |m| proc_17_case(m, false))
    }
    #[test]
    fn fork() {
        common::run_case(StartMethod::Fork, |m| proc_17_case(m, false))
    }
    /// The fork start method from a parent whose output nobody captures (a spawn child).
    #[test]
    fn fork_from_spawn_child() {
        common::run_case(StartMethod::Fork, |m| proc_17_case(m, true))
    }
}

mod proc_19_panic_exits_1_with_header_on_stderr {
    use super::*;
    #[test]
    fn spawn() {
        common::run_case(StartMethod::Spawn, |m| proc_19_case(m, false))
    }
    #[test]
    fn forkserver() {
        common::run_case(StartMethod::ForkServer, |m| proc_19_case(m, false))
    }
    #[test]
    fn fork() {
        common::run_case(StartMethod::Fork, |m| proc_19_case(m, false))
    }
    /// The fork start method from a parent whose output nobody captures (a spawn child).
    #[test]
    fn fork_from_spawn_child() {
        common::run_case(StartMethod::Fork, |m| proc_19_case(m, true))
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-20..23: close, sentinel, active_children.

start_methods! {
    /// PROC-20: `close()` on a running process gives `StillRunning`.
    fn proc_20_close_while_running(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(wait_for_parent, (w,));
        p.start().unwrap();
        assert!(matches!(p.close(), Err(Error::StillRunning)));
        assert!(p.is_alive(), "a refused close leaves the process as it was");
        r.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        p.close().unwrap();
    }

    /// PROC-21: after join, `close()` works twice; then `join`, `join_timeout`, `terminate`,
    /// `kill`, `interrupt`, `sentinel` and `start` give `ProcessClosed`, and the name is still
    /// readable. `is_alive()` returns a bool in Rust, so it reports false instead of raising.
    fn proc_21_closed_process(m) {
        let mut p = get_context(m).process(noop, ()).with_name("closing");
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        p.close().unwrap();
        p.close().unwrap();
        assert!(!p.is_alive());
        assert!(matches!(p.join(), Err(Error::ProcessClosed)));
        assert!(matches!(p.join_timeout(Duration::from_millis(10)), Err(Error::ProcessClosed)));
        assert!(matches!(p.terminate(), Err(Error::ProcessClosed)));
        assert!(matches!(p.kill(), Err(Error::ProcessClosed)));
        assert!(matches!(p.interrupt(), Err(Error::ProcessClosed)));
        assert!(matches!(p.sentinel(), Err(Error::ProcessClosed)));
        assert!(matches!(p.start(), Err(Error::ProcessClosed)));
        assert_eq!(p.name(), "closing");
    }

    /// PROC-22: the sentinel is a descriptor, not ready while the child runs, ready once it
    /// has ended.
    fn proc_22_sentinel(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(wait_for_parent, (w,));
        assert!(matches!(p.sentinel(), Err(Error::NotStarted)));
        p.start().unwrap();
        let sentinel = p.sentinel().unwrap();
        assert!(sentinel.as_raw_fd() >= 0);
        let t = Instant::now();
        assert!(wait(&[&sentinel], Some(Duration::ZERO)).unwrap().is_empty());
        common::assert_prompt(t.elapsed());
        r.send(&()).unwrap();
        assert_eq!(wait(&[&sentinel], Some(Duration::from_secs(30))).unwrap(), vec![0]);
        p.join().unwrap();
        let sentinel = p.sentinel().unwrap();
        assert_eq!(wait(&[&sentinel], Some(Duration::from_secs(1))).unwrap(), vec![0]);
        assert_eq!(p.exitcode(), Some(0));
    }

    /// PROC-23: `active_children()` lists a child from start to join. A child that ended
    /// without being joined is reaped by `is_alive()`: not alive, exit code set, no zombie.
    fn proc_23_active_children(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(wait_for_parent, (w,));
        assert!(!name_in_active_children(p.name()));
        p.start().unwrap();
        assert!(in_active_children(p.pid()));
        assert!(name_in_active_children(p.name()));
        r.send(&()).unwrap();
        p.join().unwrap();
        assert!(!in_active_children(p.pid()));

        let mut q = get_context(m).process(noop, ());
        q.start().unwrap();
        let pid = q.pid().unwrap();
        assert_eq!(wait(&[&q.sentinel().unwrap()], Some(Duration::from_secs(30))).unwrap(), vec![0]);
        assert!(!q.is_alive());
        assert_eq!(q.exitcode(), Some(0));
        assert!(!in_active_children(Some(pid)));
        assert!(
            !common::children_of(std::process::id()).iter().any(|&(child, _)| child == pid),
            "the ended child was not reaped"
        );
        q.join().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-24..28: children of children.

/// CPython's `_test_recursion`: send our id, then start and join two children, to depth 2.
fn recurse(m: StartMethod, conn: Connection, id: Vec<u32>) -> Result<()> {
    conn.send(&id)?;
    if id.len() < 2 {
        for i in 0..2 {
            let mut child_id = id.clone();
            child_id.push(i);
            let mut p = get_context(m).process(recurse, (m, conn.try_clone()?, child_id));
            p.start()?;
            p.join()?;
            if p.exitcode() != Some(0) {
                return Err(Error::InvalidArgument(format!("child {i} exited with {:?}", p.exitcode())));
            }
        }
    }
    Ok(())
}

/// Sends whether the parent is alive, waits for it to end (at most 30 s), sends it again.
fn report_parent_status(conn: Connection) -> Result<()> {
    let parent = parent_process().expect("a child has a parent");
    conn.send(if parent.is_alive() { "alive" } else { "not alive" })?;
    parent.join_timeout(Duration::from_secs(30))?;
    conn.send(if parent.is_alive() { "alive" } else { "not alive" })
}

/// Starts a grandchild that reports on us, then waits to be terminated (or for the test's end
/// of `hold` to close).
fn create_grandchild(m: StartMethod, conn: Connection, hold: Connection) -> Result<()> {
    let mut p = get_context(m).process(report_parent_status, (conn,));
    p.start()?;
    let _ = hold.recv::<()>();
    Ok(())
}

fn try_start_child(conn: Connection) -> Result<()> {
    let mut p = Process::new(noop, ());
    let refused = matches!(p.start(), Err(Error::DaemonicChildren));
    conn.send(&(refused, p.pid(), p.is_alive()))
}

/// Starts a daemon grandchild sleeping 100 s, reports its pid, and returns.
fn start_daemon_grandchild(m: StartMethod, conn: Connection) -> Result<()> {
    let mut g = get_context(m).process(sleep_ms, (100_000,)).with_daemon(true);
    g.start()?;
    conn.send(&g.pid())
}

start_methods! {
    /// PROC-24: each process sends its id and starts and joins two children, to depth 2: the
    /// ids arrive in exactly depth-first order.
    fn proc_24_recursion(m) {
        let (r, w) = pipe().unwrap();
        recurse(m, w, vec![]).unwrap();
        let mut got = Vec::new();
        while r.poll(Some(Duration::ZERO)).unwrap() {
            match r.recv::<Vec<u32>>() {
                Ok(id) => got.push(id),
                Err(Error::Eof) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let expected: Vec<Vec<u32>> = vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0], vec![1, 1]];
        assert_eq!(got, expected);
    }

    /// PROC-25: a grandchild sees its parent alive; once the test terminates that parent,
    /// the grandchild's `join_timeout` on it returns and it sees it not alive.
    fn proc_25_grandchild_sees_parent_die(m) {
        let (r, w) = pipe_simplex().unwrap();
        let (hold, hold_child) = pipe().unwrap();
        let mut p = get_context(m).process(create_grandchild, (m, w, hold_child));
        p.start().unwrap();
        assert!(r.poll(Some(Duration::from_secs(60))).unwrap(), "no word from the grandchild");
        assert_eq!(r.recv::<String>().unwrap(), "alive");
        p.terminate().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
        assert!(r.poll(Some(Duration::from_secs(60))).unwrap(), "no second word from the grandchild");
        assert_eq!(r.recv::<String>().unwrap(), "not alive");
        drop(hold);
    }

    /// PROC-26: a daemon may not start children: `DaemonicChildren`, and nothing started.
    /// (tests/daemon.rs has a shorter form of this case.)
    fn proc_26_daemon_cannot_have_children(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(try_start_child, (w,)).with_daemon(true);
        p.start().unwrap();
        assert_eq!(r.recv::<(bool, Option<u32>, bool)>().unwrap(), (true, None, false));
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }

    /// PROC-27: a non-daemon child that returns while its daemon grandchild sleeps terminates
    /// the grandchild on its way out: once the child is joined, the grandchild is gone.
    fn proc_27_daemon_grandchild_dies_with_child(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(start_daemon_grandchild, (m, w));
        p.start().unwrap();
        let grandchild = r.recv::<Option<u32>>().unwrap().expect("the grandchild started");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert!(!common::pid_alive(grandchild), "daemon grandchild {grandchild} outlived its parent");
    }
}

/// Set for the PROC-28 helper run: `<start method>:<marker path>`.
const PROC_28_ENV: &str = "MULTIPROCESS_TEST_PROC_28";

fn sleep_then_write(ms: u64, marker: String) -> Result<()> {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(marker, "done")?;
    Ok(())
}

/// Not a case of its own: `proc_28_main_waits_for_non_daemon_child` runs this test binary
/// with only this test and `PROC_28_ENV` set. It starts a non-daemon child that sleeps 1 s
/// and writes a marker file, and returns without joining it; the binary's `main` then
/// returns. Without the variable it does nothing.
#[test]
fn proc_28_helper_main_returns_with_child_running() {
    let Ok(spec) = std::env::var(PROC_28_ENV) else { return };
    let (m, marker) = spec.split_once(':').expect("method:marker");
    let mut p = get_context(m.parse().unwrap()).process(sleep_then_write, (1000, marker.to_string()));
    p.start().unwrap();
}

start_methods! {
    /// PROC-28: a program whose `main` returns while a non-daemon child runs waits for that
    /// child at exit: the program takes at least the child's 1 s, exits 0, and the child has
    /// finished its work by then.
    fn proc_28_main_waits_for_non_daemon_child(m) {
        let marker = TempPath::new("proc28-marker", m);
        let log = TempPath::new("proc28-log", m);
        let log_file = std::fs::File::create(&log.0).unwrap();
        let t = Instant::now();
        // Output goes to a file, not a pipe: waiting for a pipe's end would also wait for the
        // grandchild, which inherits it, and hide whether the program itself waited.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "proc_28_helper_main_returns_with_child_running", "--nocapture", "--test-threads=1"])
            .env(PROC_28_ENV, format!("{m}:{}", marker.string()))
            .stdin(std::process::Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .status()
            .unwrap();
        let elapsed = t.elapsed();
        let output = std::fs::read_to_string(&log.0).unwrap_or_default();
        assert!(status.success(), "helper failed: {status}\n{output}");
        assert_eq!(std::fs::read_to_string(&marker.0).ok().as_deref(), Some("done"), "the child had not finished when the program exited\n{output}");
        assert!(elapsed >= Duration::from_secs(1), "the program exited after {elapsed:?}, before its child");
    }
}

// ---------------------------------------------------------------------------------------------
// PROC-29..36.

start_methods! {
    /// PROC-29: 100 processes (5 under spawn) sleeping 10 ms all exit 0; then as many
    /// sleeping 100 s, terminated right after start, all exit -SIGTERM.
    fn proc_29_many_processes(m) {
        let n = if m == StartMethod::Spawn { 5 } else { 100 };
        let ctx = get_context(m);
        let mut procs: Vec<Process> = (0..n).map(|_| ctx.process(sleep_ms, (10,))).collect();
        for p in &mut procs {
            p.start().unwrap();
        }
        for p in &mut procs {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
        let mut procs: Vec<Process> = (0..n).map(|_| ctx.process(sleep_ms, (100_000,)).with_daemon(true)).collect();
        for p in &mut procs {
            p.start().unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
        for p in &procs {
            p.terminate().unwrap();
        }
        for p in &mut procs {
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
        }
    }
}

/// Upper-cases every string it receives until it receives `None`.
fn upper_echo(conn: Connection) -> Result<()> {
    while let Some(s) = conn.recv::<Option<String>>()? {
        conn.send(&s.to_uppercase())?;
    }
    Ok(())
}

/// A thread the target joins reports after 0.5 s; a thread it does not join would report
/// after 20 s.
fn threads_at_exit(joined: Connection, unjoined: Connection) {
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        joined.send(&"joined thread done").unwrap();
    });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = unjoined.send(&"unjoined thread done");
    });
    t.join().unwrap();
}

/// Breaks one standard stream of this child (0: stdout to /dev/full, 1: stdout closed,
/// 2: stderr to /dev/full, 3: stderr closed), leaves output unflushed, reports, returns.
fn broken_stdio(how: u8, conn: Connection) -> Result<()> {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full")?;
    // SAFETY: dup2 and close on this process's own standard descriptors.
    unsafe {
        match how {
            0 => assert_eq!(libc::dup2(full.as_raw_fd(), 1), 1),
            1 => assert_eq!(libc::close(1), 0),
            2 => assert_eq!(libc::dup2(full.as_raw_fd(), 2), 2),
            _ => assert_eq!(libc::close(2), 0),
        }
    }
    // Buffered, so the failing write happens at the exit flush.
    print!("unflushed");
    conn.send(&how)
}

start_methods! {
    /// PROC-30: a long-lived worker (CPython's Process subclass with its own `run()`) answers
    /// over a pipe: `hello` → `HELLO`, `world` → `WORLD`; stopped, it exits 0.
    fn proc_30_echo_worker(m) {
        let (conn, child) = pipe().unwrap();
        let mut p = get_context(m).process(upper_echo, (child,));
        p.start().unwrap();
        for (word, upper) in [("hello", "HELLO"), ("world", "WORLD")] {
            conn.send(&Some(word)).unwrap();
            assert_eq!(conn.recv::<String>().unwrap(), upper);
        }
        conn.send(&None::<String>).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }

    /// PROC-31, as the crate documents it (docs/differences.md): a child
    /// ends when its target returns, as a Rust program ends when `main` returns. So a thread
    /// the target joins (CPython's non-daemon thread) finishes first, and a thread it does not
    /// join (a daemon thread, in CPython's terms) is killed and does not delay the exit.
    /// CPython also waits for non-daemon threads the target did not join.
    fn proc_31_threads_at_child_exit(m) {
        let (joined_r, joined_w) = pipe().unwrap();
        let (unjoined_r, unjoined_w) = pipe().unwrap();
        let mut p = get_context(m).process(threads_at_exit, (joined_w, unjoined_w));
        let t = Instant::now();
        p.start().unwrap();
        p.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(15), "the unjoined thread delayed the exit: {:?}", t.elapsed());
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(joined_r.recv::<String>().unwrap(), "joined thread done");
        assert!(matches!(unjoined_r.recv::<String>(), Err(Error::Eof)), "the unjoined thread outlived its process");
    }

    /// PROC-32: a child whose stdout or stderr is broken (writes fail, or the descriptor is
    /// closed) still runs and exits 0: the failed flush at exit is not an error.
    fn proc_32_broken_stdio_does_not_fail_the_child(m) {
        for how in 0..4u8 {
            let (r, w) = pipe().unwrap();
            let mut p = get_context(m).process(broken_stdio, (how, w));
            p.start().unwrap();
            assert_eq!(r.recv::<u8>().unwrap(), how);
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0), "stream breakage {how}");
        }
    }
}

/// PROC-33: `cpu_count()` is at least 1.
#[test]
fn proc_33_cpu_count() {
    assert!(cpu_count() >= 1);
    assert!(process_cpu_count() >= 1);
    assert!(process_cpu_count() <= cpu_count());
}

static GOT_SIGUSR1: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    GOT_SIGUSR1.store(true, Ordering::SeqCst);
}

/// Installs the SIGUSR1 handler once for the life of the test binary, without SA_RESTART so
/// that a blocked syscall sees EINTR. Never restored: under plain `cargo test` another thread
/// may still be about to receive one, and the default action would kill the whole binary.
fn install_sigusr1_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The handler only stores to an atomic, which is async-signal-safe.
        common::install_signal_handler(libc::SIGUSR1, on_sigusr1);
    });
}

start_methods! {
    /// PROC-34: a signal handled while `join()` waits (SIGUSR1 at 0.1 s, sent to the joining
    /// thread, into a child that sleeps 2 s) does not abort the join: the handler runs, the
    /// wait is resumed, and the child's exit code 0 is there when `join()` returns.
    fn proc_34_join_survives_eintr(m) {
        install_sigusr1_handler();
        let mut p = get_context(m).process(sleep_ms, (2000,));
        p.start().unwrap();
        // SAFETY: pthread_self cannot fail.
        let joiner = unsafe { libc::pthread_self() };
        let kicker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: the joining thread is alive: it waits for this thread before returning.
            unsafe { libc::pthread_kill(joiner, libc::SIGUSR1) }
        });
        let t = Instant::now();
        let joined = p.join();
        let elapsed = t.elapsed();
        assert_eq!(kicker.join().unwrap(), 0);
        joined.unwrap();
        assert!(GOT_SIGUSR1.load(Ordering::SeqCst), "the handler did not run");
        assert!(elapsed >= Duration::from_secs(1), "join returned after {elapsed:?}, before the child ended");
        assert_eq!(p.exitcode(), Some(0));
    }
}

/// Reports its open descriptors, the numbers of its two one-way connections (one descriptor
/// each) and of its parent's pidfd; stays alive until the parent sends on `release` or closes.
fn report_fds(report: Connection, release: Connection) -> Result<()> {
    let parent_fd = parent_process().and_then(|p| p.sentinel().ok().map(|fd| fd.as_raw_fd()));
    // The crate's own (the resource tracker's socket, which children share) count as given.
    let mut given = vec![report.fileno()?, release.fileno()?];
    given.extend(__private::persistent_fds());
    report.send(&(fds_with_targets(), given, parent_fd))?;
    let _ = release.recv::<()>();
    Ok(())
}

type FdReport = (Vec<(RawFd, String)>, Vec<RawFd>, Option<RawFd>);

/// Starts `report_fds` under `ctx`: the parent's ends (report reader, release writer).
fn start_report_fds(ctx: &Context) -> (Process, Connection, Connection) {
    let (report_r, report_w) = pipe_simplex().unwrap();
    let (release_r, release_w) = pipe_simplex().unwrap();
    let mut p = ctx.process(report_fds, (report_w, release_r));
    p.start().unwrap();
    (p, report_r, release_w)
}

/// The standard descriptors this process has open (a child started by spawn or forkserver
/// inherits these, nothing else of ours).
fn standard_fds() -> BTreeSet<RawFd> {
    __private::open_fds().unwrap().into_iter().filter(|&fd| fd <= 2).collect()
}

/// PROC-35 (spawn and forkserver only, as in CPython): five children alive at once hold the
/// same number of descriptors (none holds its siblings'): exactly the standard ones, its two
/// connections, its parent's pidfd and the resource tracker's socket (one for the tree).
fn proc_35_case(m: StartMethod) {
    let ctx = get_context(m);
    let mut conns = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..5 {
        let (p, report, release) = start_report_fds(&ctx);
        conns.push((report, release));
        procs.push(p);
    }
    let counts: Vec<usize> = conns.iter().map(|(r, _)| r.recv::<FdReport>().unwrap().0.len()).collect();
    assert_eq!(counts, vec![standard_fds().len() + 4; 5]);
    for (_, release) in &conns {
        release.send(&()).unwrap();
    }
    for p in &mut procs {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

mod proc_35_children_do_not_inherit_siblings_fds {
    use super::*;
    #[test]
    fn spawn() {
        common::run_case(StartMethod::Spawn, proc_35_case)
    }
    #[test]
    fn forkserver() {
        common::run_case(StartMethod::ForkServer, proc_35_case)
    }
}

start_methods! {
    /// MISC-06: a descriptor the parent has open (not passed to the child) is inherited by a
    /// fork child only. A spawn or forkserver child holds exactly stdin, stdout, stderr, the
    /// handles in its arguments, its parent's pidfd and the resource tracker's socket.
    fn misc_06_child_holds_only_what_it_was_given(m) {
        let path = TempPath::new("misc06", m);
        let file = std::fs::File::create(&path.0).unwrap();
        let (mut p, report, release) = start_report_fds(&get_context(m));
        let (fds, conn_fds, parent_fd) = report.recv::<FdReport>().unwrap();
        release.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        let ours = (file.as_raw_fd(), path.string());
        if m == StartMethod::Fork {
            assert!(fds.contains(&ours), "a fork child inherits the parent's descriptors: {fds:?}");
        } else {
            assert!(!fds.iter().any(|(_, target)| *target == ours.1), "the child holds our file: {fds:?}");
            let parent_fd = parent_fd.expect("a child has its parent's pidfd");
            let mut expected = standard_fds();
            expected.extend(conn_fds);
            expected.insert(parent_fd);
            let got: BTreeSet<RawFd> = fds.iter().map(|(fd, _)| *fd).collect();
            assert_eq!(got, expected, "{fds:?}");
            let pidfd_target = &fds.iter().find(|(fd, _)| *fd == parent_fd).unwrap().1;
            assert_eq!(pidfd_target, "anon_inode:[pidfd]");
        }
    }

    /// PROC-36: `terminate()` twice is fine, and so are `terminate()` and `kill()` after the
    /// child ended, reaped or not. (`Process(group=1)` and a missing target have no Rust
    /// counterpart: there is no group argument and a target is required.)
    fn proc_36_signals_twice_and_after_exit(m) {
        let mut p = get_context(m).process(sleep_ms, (100_000,)).with_daemon(true);
        p.start().unwrap();
        p.terminate().unwrap();
        p.terminate().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
        p.terminate().unwrap();
        p.kill().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGTERM));

        // Ended but not yet reaped.
        let mut q = get_context(m).process(noop, ());
        q.start().unwrap();
        assert_eq!(wait(&[&q.sentinel().unwrap()], Some(Duration::from_secs(30))).unwrap(), vec![0]);
        q.terminate().unwrap();
        q.kill().unwrap();
        q.join().unwrap();
        assert_eq!(q.exitcode(), Some(0));
    }
}

/// Issue 16 point 7: a start asks only the children that ended whether they did, not every
/// live one (the cost of a start stayed flat at 0 and 2,000 live children; before it grew
/// from 0.37 to 2.35 ms, polling each).
#[test]
fn a_start_asks_only_the_children_that_ended() {
    fn nap() {
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
    fn quick() {}
    let ctx = get_context(StartMethod::ForkServer);
    let mut sleepers: Vec<Process> = (0..200)
        .map(|_| {
            let mut p = ctx.process(nap, ());
            p.start().unwrap();
            p
        })
        .collect();
    for _ in 0..3 {
        let mut p = ctx.process(quick, ());
        p.start().unwrap();
        // Beside other tests (plain `cargo test`), their children that ended are asked too.
        let bound = if common::alone_in_process() { 2 } else { 100 };
        assert!(
            __private::last_reap_asked() <= bound,
            "a start with 200 children alive asked {} of them",
            __private::last_reap_asked()
        );
        p.join().unwrap();
    }
    for p in &mut sleepers {
        p.kill().unwrap();
        p.join().unwrap();
    }
}
