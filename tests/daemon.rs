//! What happens to children when their parent dies: daemonic children die with it even when
//! it is SIGKILLed (CPython leaves them running), and a killed fork server is replaced.
mod common;
use multiprocess::*;
use std::time::{Duration, Instant};

fn sleep_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Starts a daemonic grandchild with the same start method, reports its pid, then waits to be
/// killed.
fn parent_of_daemon(m: String, conn: Connection) -> Result<()> {
    let m: StartMethod = m.parse()?;
    let mut g = get_context(m).process(sleep_forever, ()).with_daemon(true);
    g.start()?;
    conn.send(&g.pid())?;
    sleep_forever();
    Ok(())
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !common::pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

start_methods! {
    /// A daemonic child dies when its parent is SIGKILLed (PR_SET_PDEATHSIG, or the fork
    /// server's exit), so a crashed program leaves no orphans working on.
    fn daemon_dies_with_sigkilled_parent(m) {
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(parent_of_daemon, (m.to_string(), w));
        p.start().unwrap();
        let grandchild: u32 = r.recv::<Option<u32>>().unwrap().expect("the daemon started");
        assert!(common::pid_alive(grandchild));
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9));
        assert!(wait_gone(grandchild, Duration::from_secs(5)), "daemon {grandchild} outlived its killed parent");
    }

    /// A daemon may not start children (PROC-26).
    fn daemon_may_not_have_children(m) {
        fn try_start(conn: Connection) -> Result<()> {
            let mut p = Process::new(|| (), ());
            conn.send(&matches!(p.start(), Err(Error::DaemonicChildren)))
        }
        let (r, w) = pipe().unwrap();
        let mut p = get_context(m).process(try_start, (w,)).with_daemon(true);
        p.start().unwrap();
        assert!(r.recv::<bool>().unwrap());
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
}

fn noop() {}

/// A fork server that is SIGKILLed is replaced on the next start, as CPython's is, and the
/// dead one is reaped.
#[test]
fn forkserver_killed_is_restarted() {
    let guard = common::LeakGuard::new();
    let ctx = get_context(StartMethod::ForkServer);
    let mut p = ctx.process(noop, ());
    p.start().unwrap();
    p.join().unwrap();
    let server = __private::forkserver_pid().expect("a fork server runs");
    // SAFETY: kill(2) on the server's pid: it is our unreaped child, so the pid is its own.
    assert_eq!(unsafe { libc::kill(server as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::pid_alive(server) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut q = ctx.process(noop, ());
    q.start().unwrap();
    q.join().unwrap();
    assert_eq!(q.exitcode(), Some(0));
    let replacement = __private::forkserver_pid().expect("a new fork server runs");
    assert_ne!(replacement, server);
    drop((p, q));
    guard.check();
}
