//! The forkserver start method (the default, as in CPython 3.14): a fresh, single-threaded
//! copy of this binary, started on first use, forks each child on request. A fork from it is
//! cheap (it is small) and safe (it has no other threads). Python's `popen_forkserver.py` and
//! `forkserver.py`.
//!
//! Protocol. The client and the server share a sequenced-packet socket. For each child the
//! client makes a stream socket pair and sends one end to the server. The server forks and
//! answers on that end with the child's pid and a pidfd (or, if it cannot fork, the error
//! number, negated), later with the child's exit status once reaped. Only once the client
//! has the pid and pidfd does it send the boot message, which the child reads from the same
//! end (exactly as a spawn child does): a child the client could not watch reads end of file
//! instead and exits without running its target. When the client's end of the control socket
//! closes (the client exited or was killed), the server exits, and its daemonic children get
//! their parent-death signal.
//!
//! Every request is answered: a request whose socket the server could not take (out of
//! descriptors) is refused with the error number on the control socket, the only way back
//! left. So a channel closed with no answer and nothing on the control socket means a dead
//! server, and the client knows which within a moment, never waiting out a timeout. Nothing
//! the server sends can wait for a reader: a word or two on a socket nobody else writes to,
//! or a refusal it would rather drop than wait to send. Nor does the client wait for a child:
//! the boot message never fills the child's socket (see `BootMessage`).
//!
//! Faults. A server that dies is replaced by the next start, as CPython's is; the children it
//! had started run on, and their exit status, which only it knew, is 255 (CPython's value).
//! A child that dies before reading its orders is told apart from a dead server by the pid:
//! the server sends it before it can reap the child (it is single-threaded), so a request
//! answered with a pid started a child, whatever happens next, and a request answered with
//! nothing started none.

use super::Payload;
use super::spawn::exec_self;
use crate::bootstrap::{self, BootMessage};
use crate::context::StartMethod;
use crate::process::{self, Child, ChildSpec, lock};
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
///
/// `Ok` once the server has forked the child and told us its pid: a child that dies after
/// that, even before it has read its orders, is a started child whose death its exit code
/// tells (as under fork). `Err` means that no child ran the target.
pub(crate) fn start(spec: &ChildSpec, mut payload: Payload) -> Result<Child> {
    // The child shares this process's resource tracker (started now if there is none).
    let message = BootMessage::new(spec, &payload, crate::resource_tracker::handle_for_child())?;
    // Made now, so that a lack of descriptors shows before any child exists.
    process::self_pidfd()?;
    // A server that died (killed, or gone with a crash) is replaced once, as CPython does.
    for _ in 0..2 {
        match request(spec, &message, &payload.args.fds)? {
            Requested::Started(child) => {
                // The shared objects in the arguments are the child's now.
                payload.args.delivered();
                return Ok(child);
            }
            Requested::ServerGone(pid) => {
                let mut server = lock(&SERVER);
                // Another thread may have replaced it already: that one is not ours to end.
                if server.as_ref().is_some_and(|s| s.pid == pid) {
                    *server = None;
                }
            }
        }
    }
    Err(Error::StartMethod("the fork server died twice while starting a child".into()))
}

/// What one request to the server came to, short of an error.
enum Requested {
    Started(Child),
    /// The server with this pid is dead: no child was made, and a new server may be asked.
    ServerGone(i32),
}

fn request(spec: &ChildSpec, message: &BootMessage, fds: &[i32]) -> Result<Requested> {
    let (ours, theirs) = fd::socketpair()?;
    let (server_pid, server_pidfd) = {
        let mut server = lock(&SERVER);
        if server.as_ref().is_some_and(|s| s.pidfd.has_exited().unwrap_or(true)) {
            *server = None;
        }
        if server.is_none() {
            *server = Some(launch_server()?);
        }
        let Some(s) = server.as_ref() else { return Err(Error::StartMethod("no fork server".into())) };
        // Taken before the request goes: once it has gone, an error would leave a child.
        let server_pidfd = fd::dup(s.pidfd.as_fd())?;
        match fd::send_with_fds(s.control.as_fd(), &[1], &[theirs.as_fd()]) {
            Ok(()) => {}
            Err(e) if is_broken(&e) => return Ok(Requested::ServerGone(s.pid)),
            Err(e) => return Err(e.into()),
        }
        (s.pid, Pidfd::from_owned(server_pidfd))
    };
    drop(theirs);
    // The child waits for its orders until we have its pid and pidfd: a child we could not
    // watch (its pidfd lost for want of a descriptor) reads end of file instead and exits
    // without running the target, so that an error here never leaves a target running.
    let (pid, pidfd) = match recv_pid(&ours)? {
        Some(answer) => answer,
        None => return no_answer(server_pid, &server_pidfd),
    };
    match message.send(ours.as_fd(), fds) {
        // The child died before it had read its orders (the server closed its end of the
        // channel when it reaped it): it was started, and its exit code tells how it ended.
        Ok(()) | Err(Error::BrokenPipe) => Ok(Requested::Started(Child::new(pid, spec, pidfd, Some(ours)))),
        Err(e) => {
            // Half its orders: it must not run. The server reaps it.
            let _ = pidfd.send_signal(libc::SIGKILL);
            Err(e)
        }
    }
}

/// The request's channel closed with no answer: the server refused the request, which it
/// then says on the control socket, or it died. Tells which as soon as either shows.
fn no_answer(server_pid: i32, server_pidfd: &Pidfd) -> Result<Requested> {
    let deadline = Deadline::after(Some(SERVER_ANSWER_WAIT));
    loop {
        {
            let server = lock(&SERVER);
            let Some(s) = server.as_ref().filter(|s| s.pid == server_pid) else {
                // Replaced by another thread, which found it dead.
                return Ok(Requested::ServerGone(server_pid));
            };
            let mut word = [0u8; 4];
            match fd::try_recv(s.control.as_fd(), &mut word) {
                // (Any refusal will do: each refused request's client takes one.)
                Ok(4) => return Err(refusal(i32::from_le_bytes(word))),
                Ok(0) => return Ok(Requested::ServerGone(server_pid)),
                Ok(_) => return Err(Error::StartMethod("the fork server sent a malformed refusal".into())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if is_broken(&e) => return Ok(Requested::ServerGone(server_pid)),
                Err(e) => return Err(e.into()),
            }
        }
        // Not holding the lock while waiting: a dead server's pidfd shows it at once; a
        // refusal is a moment behind the closed channel.
        let step = deadline.remaining().map_or(REFUSAL_POLL, |left| left.min(REFUSAL_POLL));
        if server_pidfd.wait_exited(Deadline::after(Some(step))).unwrap_or(true) {
            return Ok(Requested::ServerGone(server_pid));
        }
        if deadline.expired() {
            return Err(Error::StartMethod("the fork server neither answered nor refused the request".into()));
        }
    }
}

/// The error a server's refusal (a negated error number) stands for.
fn refusal(word: i32) -> Error {
    match word.checked_neg() {
        Some(errno) if errno > 0 => Error::Io(std::io::Error::from_raw_os_error(errno)),
        _ => Error::StartMethod(format!("the fork server refused the request with {word}")),
    }
}

/// How long a server may take to refuse or to be seen dead after closing a request's
/// channel: far more than it takes, which is microseconds. Only a server that is stopped
/// (or starved of the CPU) takes this long.
const SERVER_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often [`no_answer`] looks for a refusal on the control socket, which it reads under
/// the server's lock and so cannot wait on.
const REFUSAL_POLL: std::time::Duration = std::time::Duration::from_millis(1);

fn is_broken(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN))
}

/// Reads the server's answer to a request: the child's pid and pidfd, `None` if the server
/// closed the channel without answering, or the error the server sent instead.
fn recv_pid(channel: &OwnedFd) -> Result<Option<(i32, Pidfd)>> {
    let mut word = [0u8; 4];
    let (n, mut handles) = match fd::recv_with_fds(channel.as_fd(), &mut word) {
        Ok(got) => got,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            // The pidfd could not be installed here: this process is out of descriptors
            // (or near enough that a probe says so).
            return Err(match fd::dup(channel.as_fd()) {
                Err(probe) => Error::Io(probe),
                Ok(_) => Error::StartMethod("the child's pidfd was lost on its way from the fork server".into()),
            });
        }
        // The server died with our request unread.
        Err(e) if is_broken(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if n == 0 {
        return Ok(None);
    }
    match fd::recv_exact(channel.as_fd(), &mut word[n..]) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(e) if is_broken(&e) || e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let value = i32::from_le_bytes(word);
    if value < 0 {
        return Err(Error::Io(std::io::Error::from_raw_os_error(-value)));
    }
    let pidfd = handles.pop().ok_or_else(|| Error::StartMethod("the fork server sent no pidfd".into()))?;
    Ok(Some((value, Pidfd::from_owned(pidfd))))
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
            // poll(2) refuses to watch more descriptors than `RLIMIT_NOFILE` allows, which
            // someone lowered that far from outside (`prlimit`): wait for it to be raised
            // rather than leave our children orphans.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
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
                Ok((0, _)) => proc::exit_now(0),
                Ok((_, mut fds)) => {
                    if let Some(channel) = fds.pop() {
                        fork_child(channel, &mut channels);
                    }
                }
                // A channel the kernel could not install here, for want of a free descriptor
                // slot (`RLIMIT_NOFILE`), was closed: the client learns why on the control
                // socket. Never waiting: a client that has stopped reading loses a refusal.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    let _ = fd::try_send_with_fds(control.as_fd(), &(-libc::EMFILE).to_le_bytes(), &[]);
                }
                Err(_) => proc::exit_now(0),
            }
        }
    }
}

/// Forks one child that reads its orders from `channel`; tells the client its pid and pidfd,
/// or, if it cannot, the error number, negated.
fn fork_child(channel: OwnedFd, channels: &mut HashMap<i32, OwnedFd>) {
    // Every send on a channel is a word or two on a socket only the server writes to (the
    // child reads it, then closes it): it never waits for the client, and the server never
    // waits for anyone.
    let refuse = |e: std::io::Error| {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let _ = fd::try_send_with_fds(channel.as_fd(), &(-errno).to_le_bytes(), &[]);
    };
    let server = proc::getpid();
    // SAFETY: the server is single-threaded, so the child inherits no lock held elsewhere.
    let pid = match unsafe { proc::fork() } {
        Ok(pid) => pid,
        Err(e) => return refuse(e),
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
    match Pidfd::open(pid) {
        // The child waits for orders the client will not send once refused: it reads end of
        // file and exits, and is reaped as any other.
        Err(e) => refuse(e),
        Ok(pidfd) => {
            if fd::try_send_with_fds(channel.as_fd(), &pid.to_le_bytes(), &[pidfd.as_fd()]).is_ok() {
                channels.insert(pid, channel);
            }
        }
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
            let _ = fd::try_send_with_fds(channel.as_fd(), &code.to_le_bytes(), &[]);
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
