//! What the crate does behind the user's back is logged through the `log` facade, target
//! `multiprocess` (issue 13 point 6), as Python's `multiprocessing.get_logger()` reports it:
//! a pool replacing a dead worker, a lock handed on after its holder died. And
//! `log_to_stderr(level)` prints those records for a program that has no logger.
mod common;
use multiprocess::*;
use std::sync::Mutex;
use std::time::Duration;

/// Every record of this process, as `(level, target, message)`.
static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let entry = (record.level(), record.target().to_string(), record.args().to_string());
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }
    fn flush(&self) {}
}

fn capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The records of target `multiprocess` at `level` whose message contains `needle`.
fn logged(level: log::Level, needle: &str) -> Vec<String> {
    RECORDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(l, t, m)| *l == level && t == "multiprocess" && m.contains(needle))
        .map(|(_, _, m)| m.clone())
        .collect()
}

fn kill_self() -> u32 {
    // SAFETY: kill(2) on our own pid with a plain signal number.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

fn hold(lock: Lock, conn: Connection) -> Result<()> {
    lock.acquire()?;
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    fn a_dead_pool_worker_is_logged(m) {
        capture();
        let pool = Pool::builder().processes(1).start_method(m).build().unwrap();
        let pid = pool.apply(std::process::id, ()).unwrap();
        assert!(matches!(pool.apply(kill_self, ()), Err(Error::WorkerDied { exitcode: -9 })));
        let died = logged(log::Level::Warn, &format!("(pid {pid}) died with exit code -9"));
        assert_eq!(died.len(), 1, "{died:?}");
        assert!(died[0].contains("1 chunk(s) failed with WorkerDied, 0 sent to other workers"), "{}", died[0]);
        // The replacement is there, and said so at debug level.
        assert_ne!(pool.apply(std::process::id, ()).unwrap(), pid);
        assert!(common::eventually_within(Duration::from_secs(10), || logged(log::Level::Debug, "pool: added worker").len() >= 2));
    }

    fn a_lock_taken_over_is_logged(m) {
        capture();
        let lock = Lock::new().unwrap();
        let (a, b) = pipe().unwrap();
        let mut p = common::start(m, hold, (lock.clone(), b));
        a.recv::<()>().unwrap();
        let pid = p.pid().unwrap();
        p.kill().unwrap();
        p.join().unwrap();
        assert!(matches!(lock.acquire(), Err(Error::OwnerDied)));
        let taken = logged(log::Level::Warn, &format!("lock taken over from process {pid},"));
        assert_eq!(taken.len(), 1, "{taken:?}");
    }
}

#[test]
fn log_to_stderr_prints_in_cpython_format() {
    if common::in_fresh_process("log_to_stderr_prints_in_cpython_format") {
        log_to_stderr(log::LevelFilter::Warn);
        let lock = Lock::new().unwrap();
        let (a, b) = pipe().unwrap();
        let mut p = common::start(StartMethod::Fork, hold, (lock.clone(), b));
        a.recv::<()>().unwrap();
        p.kill().unwrap();
        p.join().unwrap();
        assert!(matches!(lock.acquire(), Err(Error::OwnerDied)));
        log::info!(target: "multiprocess", "below the level: not printed");
        log::warn!(target: "someone_else", "another target: not printed");
        return;
    }
    let out = common::fresh_process("log_to_stderr_prints_in_cpython_format");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("[WARN/MainProcess] lock taken over from process "), "{}", lines[0]);
}

/// A listener drops a client that fails the handshake, and says so (CPython's accept raises
/// instead, ending a naive accept loop).
#[test]
fn a_dropped_handshake_is_logged() {
    capture();
    let listener = multiprocess::Listener::bind(([127, 0, 0, 1], 0), Some(b"right key")).unwrap();
    let address = listener.address().clone();
    let client = std::thread::spawn(move || {
        let wrong = multiprocess::Client::connect(address.clone(), Some(b"wrong key"));
        assert!(matches!(wrong, Err(Error::Authentication(_))));
        multiprocess::Client::connect(address, Some(b"right key")).unwrap()
    });
    let conn = listener.accept().unwrap();
    let good = client.join().unwrap();
    conn.send(&1u8).unwrap();
    assert_eq!(good.recv::<u8>().unwrap(), 1);
    let dropped = logged(log::Level::Warn, &format!("listener {}: dropped client", listener.address()));
    assert_eq!(dropped.len(), 1, "{dropped:?}");
}
