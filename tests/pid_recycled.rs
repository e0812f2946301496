//! A lock whose holder died is taken over even when the holder's pid was recycled by a new
//! process (issue 13 point 4): the lock records its holder's start time beside its pid, so a
//! stranger that got the pid is not taken for the holder. Before, the waiters asked only
//! whether *a* process had that pid, and waited for ever.
//!
//! The recycling is real: the dead holder's pid is given to a new process with `clone3`'s
//! `set_tid`, which needs CAP_SYS_ADMIN (CI runs as root; so does this machine).
mod common;
use multiprocess::*;
use std::ffi::CString;
use std::time::{Duration, Instant};

/// `struct clone_args` of `clone3(2)`, up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// A `sleep 60` process with exactly the pid `pid`, or the errno that refused it (EEXIST if
/// the pid is taken).
fn process_with_pid(pid: libc::pid_t) -> Result<libc::pid_t, i32> {
    let path = CString::new("/bin/sleep").unwrap();
    let args = [CString::new("sleep").unwrap(), CString::new("60").unwrap()];
    let argv = [args[0].as_ptr(), args[1].as_ptr(), std::ptr::null()];
    let tids = [pid];
    let clone_args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM makes a copy of this process, as fork does; the child
    // only calls execv (async-signal-safe) on strings made before, or _exit.
    let r =
        unsafe { libc::syscall(libc::SYS_clone3, &clone_args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r == 0 {
        // SAFETY: see above.
        unsafe {
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(r as libc::pid_t)
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn hold(lock: Lock, conn: Connection) -> Result<()> {
    lock.acquire()?;
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

fn hold_rlock(lock: RLock, conn: Connection) -> Result<()> {
    lock.acquire()?;
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Starts `start_holder` until its holder's pid, once it is killed and reaped, can be given
/// to a new process (another test's child may take it first under plain `cargo test`);
/// returns the stranger's pid.
fn kill_holder_and_recycle_its_pid(mut start_holder: impl FnMut() -> Process) -> libc::pid_t {
    for _ in 0..5 {
        let mut p = start_holder();
        let pid = p.pid().unwrap() as libc::pid_t;
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-9));
        match process_with_pid(pid) {
            Ok(stranger) => {
                assert_eq!(stranger, pid, "clone3 gave another pid");
                return stranger;
            }
            Err(libc::EEXIST) => continue,
            Err(e) => panic!("clone3 with set_tid failed (errno {e}): this test needs CAP_SYS_ADMIN"),
        }
    }
    panic!("the dead holder's pid was taken by another process five times over");
}

start_methods! {
    fn lock_holder_pid_recycled(m) {
        let lock = Lock::new().unwrap();
        let stranger = kill_holder_and_recycle_its_pid(|| {
            let (a, b) = pipe().unwrap();
            let p = common::start(m, hold, (lock.clone(), b));
            a.recv::<()>().unwrap();
            p
        });
        assert!(lock.locked(), "the dead holder's pid is in the word");
        let t = Instant::now();
        let r = lock.acquire_timeout(Duration::from_secs(5));
        kill_and_reap(stranger);
        assert!(matches!(r, Err(Error::OwnerDied)), "acquire_timeout gave {r:?} after {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(1), "takeover took {:?}", t.elapsed());
        lock.release().unwrap();
    }

    fn rlock_holder_pid_recycled(m) {
        let lock = RLock::new().unwrap();
        let stranger = kill_holder_and_recycle_its_pid(|| {
            let (a, b) = pipe().unwrap();
            let p = common::start(m, hold_rlock, (lock.clone(), b));
            a.recv::<()>().unwrap();
            p
        });
        let r = lock.try_acquire();
        kill_and_reap(stranger);
        assert!(matches!(r, Err(Error::OwnerDied)), "try_acquire gave {r:?}");
        lock.release().unwrap();
    }
}

/// A live holder is never taken for dead: the tag check says "alive" for the process that
/// really holds the lock, however often it is asked.
#[test]
fn live_holder_is_not_taken_over() {
    let lock = Lock::new().unwrap();
    let (a, b) = pipe().unwrap();
    let mut p = common::start(StartMethod::Fork, hold, (lock.clone(), b));
    a.recv::<()>().unwrap();
    let t = Instant::now();
    assert!(!lock.acquire_timeout(Duration::from_millis(200)).unwrap());
    common::assert_timeout_elapsed(t.elapsed(), Duration::from_millis(200));
    assert!(!lock.try_acquire().unwrap());
    p.kill().unwrap();
    p.join().unwrap();
    assert!(matches!(lock.acquire_timeout(Duration::from_secs(5)), Err(Error::OwnerDied)));
}
