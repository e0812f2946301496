//! The limit side: the same mechanisms written with raw libc calls, no library. Each function
//! returns microseconds per operation for one round.
//!
//! Children made here by `fork` call only async-signal-safe functions (`read`, `write`,
//! `close`, the raw `sched_setaffinity` syscall) and end with `_exit`.

pub mod memory;
pub mod pool;
pub mod ring;
pub mod sync;

use crate::pin::{self, PinGuard};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

/// Set in the environment of a re-executed bench binary: it exits at once (see `main.rs`).
pub const EXIT_NOW_VAR: &str = "MULTIPROCESS_BENCH_EXIT_NOW";

pub(crate) fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Forks a child that pins itself to `cpu` (if given), asks to be killed if the bench dies,
/// runs `work` and exits 0 if it returned true, 1 if not. `work` runs in a fork child: it may
/// call only async-signal-safe functions (atomics, raw syscalls, a process-shared pthread
/// mutex made before the fork).
pub fn fork_child(cpu: Option<usize>, work: impl FnOnce() -> bool) -> Result<libc::pid_t, String> {
    let set = cpu.map(pin::single_cpu_set);
    // SAFETY: the child below calls only async-signal-safe functions (by `work`'s contract)
    // and `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        // SAFETY: prctl and _exit are plain system calls.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if let Some(set) = &set
            && pin::set_affinity_raw(set).is_err()
        {
            // SAFETY: as above.
            unsafe { libc::_exit(2) }
        }
        let ok = work();
        // SAFETY: as above.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    Ok(pid)
}

/// Ends a child that may be stuck (after a failure on the parent's side) and reaps it.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: signals and reaps our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Whether child `pid` is still running (not exited, or exited and not yet reaped by us).
pub fn child_running(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data, and zeroed is what WNOHANG leaves when no child
    // changed state; waitid fills it; WNOWAIT leaves the child to be reaped by `reap`; si_pid
    // is readable once waitid returned.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() == 0
    }
}

/// Whether child `pid` has ended other than by exiting 0 (and is not reaped yet). False while
/// it runs, and when its status cannot be known.
pub fn child_failed(pid: libc::pid_t) -> bool {
    // SAFETY: as in `child_running`; si_status is readable once waitid found a child.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0
            && info.si_pid() != 0
            && !(info.si_code == libc::CLD_EXITED && info.si_status() == 0)
    }
}

/// Waits for `pid` and checks that it exited 0.
pub fn reap(pid: libc::pid_t) -> Result<(), String> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid fills `status`, which lives for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(os_err("waitpid"));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child {pid} ended with status {status:#x}"))
    }
}

/// `fork()` + `_exit(0)` in the child + `waitpid`, from this process (the bench binary, the
/// same process the library's fork start method forks), `n` times: µs per process.
pub fn fork_waitpid(n: u32) -> Result<f64, String> {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: the child only calls `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe, never returns.
            unsafe { libc::_exit(0) }
        }
        if pid < 0 {
            return Err(os_err("fork"));
        }
        reap(pid)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
}

/// A program to start with `posix_spawn`, its argv and environment prepared once.
pub struct Spawnable {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Spawnable {
    /// `/bin/true` or another tiny binary, with this process's environment.
    pub fn program(path: &str) -> Spawnable {
        let path = CString::new(path).expect("path without NUL");
        Spawnable { argv: vec![path.clone()], path, envp: environment(None) }
    }

    /// This bench binary, told by [`EXIT_NOW_VAR`] to exit before `main`: the cost of
    /// executing a process of our size, which a spawn child pays before its target runs.
    pub fn this_binary() -> Result<Spawnable, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let path = CString::new(exe.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        Ok(Spawnable { argv: vec![path.clone()], path, envp: environment(Some((EXIT_NOW_VAR, "1"))) })
    }

    /// `posix_spawn` + `waitpid`, `n` times: µs per process.
    pub fn spawn_waitpid(&self, n: u32) -> Result<f64, String> {
        let mut argv: Vec<*mut libc::c_char> = self.argv.iter().map(|a| a.as_ptr() as *mut _).collect();
        argv.push(std::ptr::null_mut());
        let mut envp: Vec<*mut libc::c_char> = self.envp.iter().map(|a| a.as_ptr() as *mut _).collect();
        envp.push(std::ptr::null_mut());
        let t = Instant::now();
        for _ in 0..n {
            let mut pid: libc::pid_t = 0;
            // SAFETY: path, argv and envp are NUL-terminated strings in null-terminated arrays
            // that outlive the call; no file actions or attributes.
            let r = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    self.path.as_ptr(),
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            };
            if r != 0 {
                return Err(format!("posix_spawn: {}", std::io::Error::from_raw_os_error(r)));
            }
            reap(pid)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n))
    }
}

fn environment(extra: Option<(&str, &str)>) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| extra.is_none_or(|(name, _)| k != OsStr::new(name)))
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    if let Some((k, v)) = extra {
        env.push(CString::new(format!("{k}={v}")).expect("no NUL"));
    }
    env
}

/// Which kernel object carries the raw ping-pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Two `pipe(2)`s, one per direction.
    Pipe,
    /// One `AF_UNIX` stream socket pair, what a duplex `multiprocess::pipe()` and CPython's
    /// `Pipe()` use.
    SocketPair,
    /// One TCP connection over the loopback interface (127.0.0.1), `TCP_NODELAY` on both
    /// ends: what a remote manager's clients use.
    TcpLoopback,
}

/// A connected TCP pair over 127.0.0.1 (listener on a free port, connect, accept, the
/// listener closed), `TCP_NODELAY` on both ends, close-on-exec: the two raw descriptors.
fn tcp_loopback_pair() -> Result<(libc::c_int, libc::c_int), String> {
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::os::fd::IntoRawFd;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let a = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let (b, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    for s in [&a, &b] {
        s.set_nodelay(true).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    }
    Ok((a.into_raw_fd(), b.into_raw_fd()))
}

/// Reads exactly 4 bytes; async-signal-safe. False on error or end of file.
fn read4(fd: libc::c_int, buf: &mut [u8; 4]) -> bool {
    let mut got = 0;
    while got < 4 {
        // SAFETY: writes at most `4 - got` bytes inside `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), 4 - got) };
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

/// Writes 4 bytes; async-signal-safe. False on error.
fn write4(fd: libc::c_int, buf: &[u8; 4]) -> bool {
    // SAFETY: reads 4 bytes from `buf`. A pipe write of at most PIPE_BUF bytes is atomic, and
    // so in practice is a 4-byte write to a stream socket with room in its buffer.
    unsafe { libc::write(fd, buf.as_ptr().cast(), 4) == 4 }
}

/// Round trips of 4 bytes between this process and a forked echo child, with raw `read` and
/// `write`: µs per round trip. `placement` pins the parent and the child.
pub fn pingpong(channel: Channel, warmup: u32, n: u32, placement: Option<pin::Placement>) -> Result<f64, String> {
    let _guard = PinGuard::pin(placement.map(|p| p.parent)).map_err(|e| format!("pin: {e}"))?;
    // (parent reads, parent writes, child reads, child writes)
    let (p_rd, p_wr, c_rd, c_wr) = match channel {
        Channel::Pipe => {
            let mut down = [0; 2];
            let mut up = [0; 2];
            // SAFETY: each array has room for the two descriptors pipe2 returns.
            unsafe {
                if libc::pipe2(down.as_mut_ptr(), libc::O_CLOEXEC) != 0
                    || libc::pipe2(up.as_mut_ptr(), libc::O_CLOEXEC) != 0
                {
                    return Err(os_err("pipe2"));
                }
            }
            (up[0], down[1], down[0], up[1])
        }
        Channel::SocketPair => {
            let mut sv = [0; 2];
            // SAFETY: room for the two descriptors socketpair returns.
            if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }
                != 0
            {
                return Err(os_err("socketpair"));
            }
            (sv[0], sv[0], sv[1], sv[1])
        }
        Channel::TcpLoopback => {
            let (a, b) = tcp_loopback_pair()?;
            (a, a, b, b)
        }
    };
    let child_set = placement.map(|p| pin::single_cpu_set(p.child));
    let total = warmup + n;
    // SAFETY: the child below calls only async-signal-safe functions and `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The parent's ends close here, so that the child sees end of file if the parent dies.
        for fd in [p_rd, p_wr] {
            if fd != c_rd && fd != c_wr {
                // SAFETY: async-signal-safe; the child's own copy of the parent's ends.
                unsafe { libc::close(fd) };
            }
        }
        if let Some(set) = &child_set {
            let _ = pin::set_affinity_raw(set);
        }
        let mut buf = [0u8; 4];
        for _ in 0..total {
            if !read4(c_rd, &mut buf) || !write4(c_wr, &buf) {
                // SAFETY: async-signal-safe, never returns.
                unsafe { libc::_exit(1) }
            }
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }
    let close_all = |fds: &[libc::c_int]| {
        let mut fds = fds.to_vec();
        fds.sort_unstable();
        fds.dedup();
        for fd in fds {
            // SAFETY: descriptors made above and owned by this function.
            unsafe { libc::close(fd) };
        }
    };
    if pid < 0 {
        close_all(&[p_rd, p_wr, c_rd, c_wr]);
        return Err(os_err("fork"));
    }
    close_all(&[c_rd, c_wr]);
    let mut buf = [0u8; 4];
    let mut exchange = |i: u32| -> Result<(), String> {
        let out = i.to_le_bytes();
        if !write4(p_wr, &out) || !read4(p_rd, &mut buf) {
            return Err(os_err("raw ping-pong"));
        }
        if buf != out { Err(format!("echo mismatch: sent {out:?}, got {buf:?}")) } else { Ok(()) }
    };
    let mut result = (0..warmup).try_for_each(&mut exchange);
    let t = Instant::now();
    if result.is_ok() {
        result = (0..n).try_for_each(&mut exchange);
    }
    let elapsed = t.elapsed();
    close_all(&[p_rd, p_wr]);
    let reaped = reap(pid);
    result?;
    reaped?;
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(n))
}
