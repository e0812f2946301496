//! The fork start method: the child is a copy of this process and runs the target it already
//! holds in memory. Python's `popen_fork.py`.

use super::Launch;
use crate::Result;
use crate::bootstrap;
use crate::process::{self, Child, ChildSpec, ForkIdentity};
use crate::sys::pidfd::Pidfd;
use crate::sys::{fd, proc};
use std::os::fd::AsFd;

/// Forks a child that runs `launch` (taken out of the option in the child only).
pub(crate) fn start(spec: &ChildSpec, launch: &mut Option<Box<dyn Launch>>) -> Result<Child> {
    let parent = proc::getpid();
    // The child inherits this process's resource tracker (started now if there is none), so
    // that children, and pool workers, start none of their own.
    crate::resource_tracker::ensure_running();
    let identity = ForkIdentity::new(spec)?;
    // A descriptor slot held for the child's pidfd: out of descriptors, we fail here, before
    // there is a child, rather than after, with a child already running the target.
    let spare = fd::dup(process::self_pidfd()?.as_fd())?;
    // SAFETY: the child runs only the target and the exit path. `fork_locked` holds this
    // crate's own locks across the fork so that none is left locked by another thread.
    let pid = unsafe {
        process::fork_locked(|| {
            if spec.daemon && (proc::set_parent_death_signal(libc::SIGTERM).is_err() || proc::getppid() != parent) {
                proc::exit_now(1);
            }
            process::become_fork_child(Some(identity));
        })?
    };
    if pid == 0 {
        drop(spare);
        let Some(launch) = launch.as_mut() else { proc::exit_now(1) };
        bootstrap::run_and_exit(move || launch.run());
    }
    // Let the child run first where it shares our CPU: each page either side writes while
    // both share it costs a copy, and the child's first writes (its identity, its exit
    // path) come soonest; ours (the child's record) can wait the moment it takes.
    std::thread::yield_now();
    drop(spare);
    // Our unreaped child: its pid cannot be recycled before this.
    let pidfd = match Pidfd::open(pid) {
        Ok(pidfd) => pidfd,
        Err(e) => {
            // Another thread took the slot, say: the child must not be left running, unknown
            // to all.
            proc::kill_and_reap_unknown_child(pid);
            return Err(e.into());
        }
    };
    Ok(Child::new(pid, spec, pidfd, None))
}
