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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `close_range` flag: mark close-on-exec instead of closing.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Starts this binary again with `role:<fd>` in its environment and `channel` as `<fd>`, the
/// only descriptor it inherits besides stdin, stdout and stderr. Parent-death signal `pdeathsig`
/// is set before exec, when given.
pub(crate) fn exec_self(role: &str, channel: OwnedFd, pdeathsig: Option<libc::c_int>) -> Result<(i32, Pidfd)> {
    let raw = channel.as_raw_fd();
    let parent = proc::getpid();
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(argv0) = std::env::args_os().next() {
        cmd.arg0(argv0);
    }
    cmd.env(ROLE_VAR, format!("{role}:{raw}"));
    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // syscalls (close_range, fcntl, prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // Everything from 3 up but our channel closes at exec: a child holds only the
            // handles it was given, not whatever the parent had open.
            mark_cloexec_except(raw);
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(sig) = pdeathsig {
                proc::set_parent_death_signal(sig)?;
                if proc::getppid() != parent {
                    proc::exit_now(1);
                }
            }
            Ok(())
        });
    }
    let handle = cmd.spawn()?;
    let pid = handle.id() as i32;
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
/// and reaped before it could read whole orders.
pub(crate) fn start(spec: &ChildSpec, payload: Payload) -> Result<Child> {
    // Everything that can fail without a child is done before there is one.
    let message = BootMessage::new(spec, &payload)?;
    process::self_pidfd()?;
    let (ours, theirs) = fd::socketpair()?;
    let pdeathsig = spec.daemon.then_some(libc::SIGTERM);
    let (pid, pidfd) = exec_self("spawn", theirs, pdeathsig)?;
    let child = Child::new(pid, spec, pidfd, None);
    match message.send(ours.as_fd(), &payload.args.fds) {
        // A broken pipe: the child closed its end, which it does only by reading its orders
        // or by dying.
        Ok(()) | Err(Error::BrokenPipe) => Ok(child),
        Err(e) => {
            child.kill_and_reap();
            Err(e)
        }
    }
}
