//! The forkserver start method (the default, as in CPython 3.14): a fresh, single-threaded
//! copy of this binary, started on first use, forks each child on request. A fork from it is
//! cheap (it is small) and safe (it has no other threads). Python's `popen_forkserver.py` and
//! `forkserver.py`.
//!
//! Protocol. The client and the server share a sequenced-packet socket. For each child the
//! client makes a stream socket pair and sends one end to the server. The server forks; the
//! child reads its boot message from that end (exactly as a spawn child does), and the server
//! answers on it with the child's pid and a pidfd, later with its exit status once reaped.
//! When the client's end of the control socket closes (the client exited or was killed), the
//! server exits, and its daemonic children get their parent-death signal.

use super::Payload;
use super::spawn::exec_self;
use crate::bootstrap::{self, Boot};
use crate::context::StartMethod;
use crate::process::{Child, ChildSpec, lock};
use crate::sys::pidfd::Pidfd;
use crate::sys::{Deadline, cvt, fd, proc};
use crate::{Error, Result};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// The client's handle on its fork server.
pub(crate) struct Server {
    control: OwnedFd,
    pidfd: Pidfd,
    pid: i32,
    /// The process that started the server: only it may end it (a fork child drops its
    /// inherited copy of this handle and must not touch the server).
    owner: i32,
}

impl Drop for Server {
    /// A server being replaced is dead or broken: make sure it is gone and reaped, so that no
    /// zombie is left. Closing the control socket alone ends a healthy one.
    fn drop(&mut self) {
        if self.owner == proc::getpid() && self.pidfd.try_reap().ok().flatten().is_none() {
            let _ = self.pidfd.send_signal(libc::SIGKILL);
            let _ = self.pidfd.wait_exited(Deadline::NEVER);
            let _ = self.pidfd.try_reap();
        }
    }
}

/// The descriptors the fork server's client keeps open.
pub(crate) fn server_fds() -> Vec<i32> {
    lock(&SERVER).as_ref().map_or_else(Vec::new, |s| vec![s.control.as_raw_fd(), s.pidfd.as_fd().as_raw_fd()])
}

/// The fork server's pid, if one is running.
pub(crate) fn server_pid() -> Option<u32> {
    lock(&SERVER).as_ref().map(|s| s.pid as u32)
}

/// This process's fork server, started on first use; reset in fork children.
pub(crate) static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// Starts a child through the fork server, starting or restarting the server as needed.
pub(crate) fn start(spec: &ChildSpec, payload: Payload) -> Result<Child> {
    let boot = Boot::new(spec, payload.entry, payload.args.bytes)?;
    // A server that died (killed, or gone with a crash) is replaced once, as CPython does.
    let mut last = None;
    for _ in 0..2 {
        match request(spec, &boot, &payload.args.fds) {
            Ok(child) => return Ok(child),
            Err(e @ (Error::BrokenPipe | Error::Eof)) => {
                *lock(&SERVER) = None;
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let why = last.map_or_else(String::new, |e| e.to_string());
    Err(Error::StartMethod(format!("the fork server died while starting a child: {why}")))
}

fn request(spec: &ChildSpec, boot: &Boot, fds: &[i32]) -> Result<Child> {
    let (ours, theirs) = fd::socketpair()?;
    {
        let mut server = lock(&SERVER);
        if server.as_ref().is_some_and(|s| s.pidfd.has_exited().unwrap_or(true)) {
            *server = None;
        }
        if server.is_none() {
            *server = Some(launch_server()?);
        }
        let control = server.as_ref().map(|s| s.control.as_fd()).ok_or(Error::BrokenPipe)?;
        fd::send_with_fds(control, &[1], &[theirs.as_fd()]).map_err(Error::from_write)?;
    }
    drop(theirs);
    bootstrap::send_boot(ours.as_fd(), boot, fds)?;
    let mut pid = [0u8; 4];
    let (n, mut handles) = fd::recv_with_fds(ours.as_fd(), &mut pid)?;
    if n == 0 {
        return Err(Error::Eof);
    }
    if n < 4 && !fd::recv_exact(ours.as_fd(), &mut pid[n..])? {
        return Err(Error::Eof);
    }
    let pidfd = handles.pop().ok_or_else(|| Error::StartMethod("the fork server sent no pidfd".into()))?;
    Ok(Child::new(i32::from_le_bytes(pid), spec, Pidfd::from_owned(pidfd), Some(ours)))
}

fn launch_server() -> Result<Server> {
    let (control, theirs) = fd::seqpacket_pair()?;
    let (pid, pidfd) = exec_self("forkserver", theirs, None)?;
    Ok(Server { control, pidfd, pid, owner: proc::getpid() })
}

/// Reads a forkserver child's exit status from its channel, once the child has ended. If the
/// server died before telling, the status is unknowable: 255, as CPython reports it.
pub(crate) fn read_status(channel: &OwnedFd) -> i32 {
    let mut status = [0u8; 4];
    // The server sends within microseconds of the child's end; the bound only guards against
    // a server that is stopped.
    match fd::poll_readable(&[channel.as_fd()], Deadline::after(Some(std::time::Duration::from_secs(30)))) {
        Ok(ready) if ready[0] => {}
        _ => return 255,
    }
    match fd::recv_exact(channel.as_fd(), &mut status) {
        Ok(true) => i32::from_le_bytes(status),
        _ => 255,
    }
}

/// The fork server's loop. Runs in a fresh, single-threaded process; never returns.
pub(crate) fn serve(control: OwnedFd) -> ! {
    proc::ignore_signal(libc::SIGPIPE);
    let sigchld = match child_signal_fd() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("multiprocess: fork server cannot watch its children: {e}");
            proc::exit_now(1)
        }
    };
    let mut channels: HashMap<i32, OwnedFd> = HashMap::new();
    loop {
        let ready = match fd::poll_readable(&[control.as_fd(), sigchld.as_fd()], Deadline::NEVER) {
            Ok(r) => r,
            Err(_) => proc::exit_now(1),
        };
        if ready[1] {
            let mut info = [0u8; 128];
            // Drain the signal queue; waitpid below finds every ended child anyway.
            while fd::recv_exact(sigchld.as_fd(), &mut info).is_ok() {}
            reap(&mut channels);
        }
        if ready[0] {
            let mut byte = [0u8; 1];
            match fd::recv_with_fds(control.as_fd(), &mut byte) {
                Ok((0, _)) | Err(_) => proc::exit_now(0),
                Ok((_, mut fds)) => {
                    if let Some(channel) = fds.pop() {
                        fork_child(channel, &mut channels);
                    }
                }
            }
        }
    }
}

/// Forks one child that reads its orders from `channel`; tells the client its pid and pidfd.
fn fork_child(channel: OwnedFd, channels: &mut HashMap<i32, OwnedFd>) {
    let server = proc::getpid();
    // SAFETY: the server is single-threaded, so the child inherits no lock held elsewhere.
    let pid = match unsafe { proc::fork() } {
        Ok(pid) => pid,
        Err(_) => return, // the client sees its channel close: a failed start
    };
    if pid == 0 {
        restore_child_signals();
        let raw = channel.as_raw_fd();
        // The number is renumbered or closed below; the value must not close it again.
        std::mem::forget(channel);
        // The child holds only its channel: not the control socket, nor other children's.
        // SAFETY: dup2 onto 3 then closing everything above leaves exactly our channel open.
        let channel = unsafe {
            if proc::dup2(raw, 3).is_err() {
                proc::exit_now(1);
            }
            proc::close_fds_from(4);
            OwnedFd::from_raw_fd(3)
        };
        bootstrap::child_main(channel, StartMethod::ForkServer, Some(server));
    }
    let pidfd = match Pidfd::open(pid) {
        Ok(p) => p,
        Err(_) => return,
    };
    if fd::send_with_fds(channel.as_fd(), &pid.to_le_bytes(), &[pidfd.as_fd()]).is_ok() {
        channels.insert(pid, channel);
    }
}

/// Reaps every ended child and sends each exit status to its client.
fn reap(channels: &mut HashMap<i32, OwnedFd>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid fills `status`, which lives for the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let code = if libc::WIFSIGNALED(status) { -libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) };
        if let Some(channel) = channels.remove(&pid) {
            let _ = fd::send_all(channel.as_fd(), &[&code.to_le_bytes()]);
        }
    }
}

/// A non-blocking signalfd for SIGCHLD, with SIGCHLD blocked so it queues there.
fn child_signal_fd() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset operations on a local set; sigprocmask and signalfd on this thread,
    // the process's only one.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        cvt(libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
        let fd = cvt(libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn restore_child_signals() {
    // SAFETY: as in `child_signal_fd`, on the child's only thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    proc::default_signal(libc::SIGCHLD);
}
