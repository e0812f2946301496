//! The spawn start method: a fresh copy of this binary (`/proc/self/exe`, so even a binary
//! replaced on disk starts the same code), told its role by `ROLE_VAR`, given its arguments
//! and handles over a socket (large arguments in a sealed memfd sent on it). Python's
//! `popen_spawn_posix.py`.

use super::Payload;
use crate::bootstrap::{BootMessage, ROLE_VAR};
use crate::process::{self, Child, ChildSpec};
use crate::sys::pidfd::Pidfd;
use crate::sys::{fd, proc};
use crate::{Error, Result};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// `close_range` flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// The program a re-executed child runs: this binary as it was started, even if the file
/// was replaced or deleted since.
const SELF_EXE: &std::ffi::CStr = c"/proc/self/exe";

/// Starts this binary again with `role:<fd>` in its environment and `channel` as `<fd>`, the
/// only descriptor it inherits besides stdin, stdout and stderr. Parent-death signal `pdeathsig`
/// is set before exec, when given.
///
/// Returns once the child exists, without waiting for its `exec` (as `std::process::Command`
/// does, to report a failed exec): a child stopped between its fork and its exec must not
/// hold up its parent. An exec that fails ends the child with exit code 1 and the reason on
/// its stderr, as any other start-up failure.
pub(crate) fn exec_self(role: &str, channel: OwnedFd, pdeathsig: Option<libc::c_int>) -> Result<(i32, Pidfd)> {
    let raw = channel.as_raw_fd();
    let parent = proc::getpid();
    // Everything the child needs is made here: between fork and exec it may not allocate.
    let image = Image::new(role, raw)?;
    let tracker = role == crate::resource_tracker::ROLE;
    // The tracker's child is born with the signals it ignores blocked, until it ignores them:
    // one sent at once (a Ctrl-C, a `kill` of whoever learnt its pid) would otherwise end it
    // before its first instruction.
    let blocked = tracker.then(block_tracker_signals);
    // SAFETY: the child runs only `exec_child`, which makes async-signal-safe syscalls and
    // touches only memory made before the fork; it never returns.
    let forked = unsafe { proc::fork() };
    if let Some(old) = blocked
        && !matches!(forked, Ok(0))
    {
        restore_signal_mask(&old);
    }
    let pid = forked?;
    if pid == 0 {
        exec_child(&image, raw, parent, pdeathsig, tracker);
    }
    // Our unreaped child: its pid cannot be recycled before this.
    let pidfd = match Pidfd::open(pid) {
        Ok(pidfd) => pidfd,
        Err(e) => {
            // Out of descriptors, say. The child waits for orders it will never get; it must
            // not be left behind, unknown to all.
            proc::kill_and_reap_unknown_child(pid);
            return Err(e.into());
        }
    };
    drop(channel);
    Ok((pid, pidfd))
}

/// The signals the resource tracker ignores.
const TRACKER_IGNORES: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Blocks [`TRACKER_IGNORES`] on this thread; the mask before.
fn block_tracker_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset on a local set; pthread_sigmask on this thread, writing
    // the old mask into a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in TRACKER_IGNORES {
            libc::sigaddset(&mut set, sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Puts back a mask [`block_tracker_signals`] returned.
fn restore_signal_mask(old: &libc::sigset_t) {
    // SAFETY: pthread_sigmask on this thread with a mask it had before.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// The arguments and environment of the child's `execve`, as NUL-terminated strings and the
/// null-terminated pointer arrays that point into them.
struct Image {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl Image {
    /// This process's first argument and environment, with `ROLE_VAR=<role>:<fd>` in place of
    /// any inherited role.
    fn new(role: &str, fd: RawFd) -> Result<Image> {
        let invalid = || Error::Io(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        let argv0 = std::env::args_os().next().and_then(|a| CString::new(a.as_bytes()).ok());
        let argv0 = argv0.unwrap_or_else(|| SELF_EXE.to_owned());
        let mut env = vec![CString::new(format!("{ROLE_VAR}={role}:{fd}")).map_err(|_| invalid())?];
        for (key, value) in std::env::vars_os() {
            if key == OsStr::new(ROLE_VAR) {
                continue;
            }
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            // An entry with a NUL in it cannot be passed on (nor can it have come from exec).
            if let Ok(pair) = CString::new(pair) {
                env.push(pair);
            }
        }
        let argv = vec![argv0.as_ptr(), std::ptr::null()];
        let envp: Vec<_> = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
        let mut strings = env;
        strings.push(argv0);
        Ok(Image { _strings: strings, argv, envp })
    }
}

/// The child's side of [`exec_self`], between fork and exec: async-signal-safe syscalls only.
fn exec_child(image: &Image, channel: RawFd, parent: libc::pid_t, pdeathsig: Option<libc::c_int>, tracker: bool) -> ! {
    if tracker {
        // Ignored before they are unblocked below: one that came meanwhile is dropped.
        for sig in TRACKER_IGNORES {
            // SAFETY: signal(SIG_IGN) installs no handler code; async-signal-safe.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
    }
    // The state `std::process::Command` gives a child: no signal blocked, SIGPIPE at its
    // default (a Rust parent ignores it, and ignored signals stay ignored across exec).
    // SAFETY: sigemptyset on a local set, sigprocmask on this (the only) thread, and
    // signal(SIG_DFL), which has no handler code.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Everything from 3 up but our channel closes at exec: a child holds only the handles it
    // was given, not whatever the parent had open.
    mark_cloexec_except(channel);
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(channel, libc::F_SETFD, 0) } == -1 {
        exec_failed(b"cannot keep its channel to the parent");
    }
    if tracker {
        // The resource tracker ignores its signals (above), and leads a session of its own,
        // from before its exec (ignored signals stay ignored across it): nobody waits for it
        // to start, and a Ctrl-C or `kill` meant for the program may come at once.
        // SAFETY: setsid takes no arguments; async-signal-safe.
        unsafe { libc::setsid() };
    }
    if let Some(sig) = pdeathsig
        && (proc::set_parent_death_signal(sig).is_err() || proc::getppid() != parent)
    {
        proc::exit_now(1);
    }
    // SAFETY: the path and both arrays are NUL-terminated and null-terminated, made before the
    // fork and alive in this copy of the memory; execve returns only if it failed.
    unsafe { libc::execve(SELF_EXE.as_ptr(), image.argv.as_ptr(), image.envp.as_ptr()) };
    exec_failed(b"cannot execute /proc/self/exe")
}

/// Writes `multiprocess: a spawned child <what> (errno <n>)` to stderr and exits 1, as a
/// child that cannot start does. Between fork and exec: no allocation, one write.
fn exec_failed(what: &[u8]) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0).unsigned_abs();
    let mut line = [0u8; 128];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(line.len() - len);
        line[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    put(b"multiprocess: a spawned child ");
    put(what);
    put(b" (errno ");
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = errno;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[at..]);
    put(b")\n");
    // SAFETY: write(2) from a live buffer; async-signal-safe.
    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len) };
    proc::exit_now(1)
}

fn mark_cloexec_except(keep: RawFd) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own descriptors.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, (keep - 1) as libc::c_uint, CLOSE_RANGE_CLOEXEC);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC);
    }
}

/// Starts a spawn child running `payload`.
///
/// `Ok` once the child exists: if it dies before it has read its orders (killed, say), its
/// exit code tells, as it would under fork or forkserver. Which of the two came first, its
/// death or our sending, is an accident of timing that must not change what `start` returns.
/// `Err` means that no child runs the target: nothing was started, or the child was killed
/// and reaped before it could read whole orders. Nothing here waits for the child: a child
/// that is stopped, or slow to read, does not hold up `start`.
pub(crate) fn start(spec: &ChildSpec, mut payload: Payload) -> Result<Child> {
    // Everything that can fail without a child is done before there is one.
    // The child shares this process's resource tracker (started now if there is none).
    let message = BootMessage::new(spec, &payload, crate::resource_tracker::handle_for_child())?;
    process::self_pidfd()?;
    let (ours, theirs) = fd::socketpair()?;
    let pdeathsig = spec.daemon.then_some(libc::SIGTERM);
    let (pid, pidfd) = exec_self("spawn", theirs, pdeathsig)?;
    let child = Child::new(pid, spec, pidfd, None);
    match message.send(ours.as_fd(), &payload.args.fds) {
        // A broken pipe: the child closed its end, which it does only by reading its orders
        // or by dying. Either way the shared objects in the arguments may be its now (a
        // hold it never took is kept, rather than one it took given back).
        Ok(()) | Err(Error::BrokenPipe) => {
            payload.args.delivered();
            Ok(child)
        }
        Err(e) => {
            child.kill_and_reap();
            Err(e)
        }
    }
}
