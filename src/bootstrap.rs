//! The child's side of starting: how a re-executed binary learns its role, reads what its
//! parent sent, finds its target, runs it and exits with CPython's exit-code rules.
//!
//! A spawn child or a fork server is this same binary started again with `ROLE_VAR` in its
//! environment. A load-time constructor (`.init_array`) takes the role before `main` runs, so
//! this works in `#[test]` functions, examples and doc tests with no line of user code;
//! [`init`](crate::init) does the same from `main` for platforms without constructors.

use crate::context::StartMethod;
use crate::popen::{self, forkserver};
use crate::process::{self, ChildSpec};
use crate::sys::{self, fd};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that gives a re-executed binary its role: `spawn:<fd>`,
/// `forkserver:<fd>` or `tracker:<fd>`, where `<fd>` is the socket to its parent.
pub(crate) const ROLE_VAR: &str = "__MULTIPROCESS_ROLE";
const ROLE_VAR_C: &CStr = c"__MULTIPROCESS_ROLE";

/// The largest boot message a child accepts: far above any real one, below a hostile length.
const MAX_BOOT_LEN: usize = 1 << 34;

#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static ON_LOAD: extern "C" fn() = on_load;

extern "C" fn on_load() {
    take_role();
}

/// If this process was started as a child or a fork server, becomes it and never returns.
pub(crate) fn take_role() {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: getenv returns null or a NUL-terminated string that lives until the
    // environment changes; we copy it before changing anything. This runs before main (or
    // first in main), while the process is single-threaded.
    let role = unsafe {
        let p = libc::getenv(ROLE_VAR_C.as_ptr());
        if p.is_null() {
            return;
        }
        let role = CStr::from_ptr(p).to_string_lossy().into_owned();
        libc::unsetenv(ROLE_VAR_C.as_ptr());
        role
    };
    let Some((kind, fd)) = role.split_once(':') else { return };
    let Ok(fd) = fd.parse::<RawFd>() else { return };
    if !fd::is_open(fd) {
        return;
    }
    // SAFETY: the parent put this descriptor here for us alone, and nothing else in this
    // fresh process owns it.
    let channel = unsafe { OwnedFd::from_raw_fd(fd) };
    match kind {
        "spawn" => child_main(channel, StartMethod::Spawn, None),
        "forkserver" => forkserver::serve(channel),
        crate::resource_tracker::ROLE => crate::resource_tracker::serve(channel),
        _ => {}
    }
}

/// What a parent tells a spawn or forkserver child.
#[derive(Serialize, Deserialize)]
pub(crate) struct Boot {
    /// The parent's executable (device, inode): code offsets only mean something in the same.
    pub(crate) exe: (u64, u64),
    pub(crate) entry: i64,
    pub(crate) spec: ChildSpec,
    pub(crate) parent_pid: i32,
    pub(crate) parent_name: String,
    pub(crate) authkey: Vec<u8>,
    pub(crate) args: Vec<u8>,
}

impl Boot {
    /// What this process tells a child described by `spec` that calls the entry point at
    /// `entry` with the encoded arguments `args`.
    pub(crate) fn new(spec: &ChildSpec, entry: i64, args: Vec<u8>) -> Result<Boot> {
        let me = process::current_process();
        Ok(Boot {
            exe: sys::proc::exe_identity()?,
            entry,
            spec: spec.clone(),
            parent_pid: sys::proc::getpid(),
            parent_name: me.name().to_string(),
            authkey: process::authkey()?.to_vec(),
            args,
        })
    }
}

/// Sends `boot` on `channel`, with this process's pidfd and then `fds` attached.
pub(crate) fn send_boot(channel: BorrowedFd<'_>, boot: &Boot, fds: &[RawFd]) -> Result<()> {
    let body = postcard::to_allocvec(boot)?;
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u64).to_le_bytes());
    frame.extend_from_slice(&body);
    let me = process::self_pidfd()?;
    let mut handles = vec![me.as_fd()];
    // SAFETY: the descriptors are owned by the arguments being sent, which outlive this call.
    handles.extend(fds.iter().map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) }));
    fd::send_with_fds(channel, &frame, &handles).map_err(Error::from_write)
}

/// Reads what [`send_boot`] sent: the boot message and the descriptors (this process's
/// parent's pidfd first).
fn recv_boot(channel: BorrowedFd<'_>) -> Result<(Boot, Vec<OwnedFd>)> {
    let mut len = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < len.len() {
        let (n, more) = fd::recv_with_fds(channel, &mut len[got..])?;
        if n == 0 {
            if got == 0 {
                return Err(Error::Eof);
            }
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
        fds.extend(more);
    }
    let len = u64::from_le_bytes(len) as usize;
    if len > MAX_BOOT_LEN {
        return Err(Error::BadMessageLength { len: len as u64, max: MAX_BOOT_LEN as u64 });
    }
    let mut body = vec![0u8; len];
    if !fd::recv_exact(channel, &mut body)? {
        return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok((crate::reduction::from_bytes_exact(&body)?, fds))
}

/// A spawn or forkserver child: reads its boot message from `channel`, runs the target, exits.
/// A forkserver child is told its server's pid, taken before the fork: by the time it reads
/// its orders the server may be gone, and `getppid()` would then name a stranger.
pub(crate) fn child_main(channel: OwnedFd, method: StartMethod, server: Option<i32>) -> ! {
    // A Rust program ignores SIGPIPE (std does it before main, which has not run here).
    sys::proc::ignore_signal(libc::SIGPIPE);
    let (boot, mut fds) = match recv_boot(channel.as_fd()) {
        Ok(b) => b,
        // The parent closed the channel before sending a byte: it gave up on this start (its
        // `start()` returned the error) and this child has nothing to run nor to say.
        Err(Error::Eof) => sys::proc::exit_now(1),
        Err(e) => fail(&format!("cannot read the start-up message from the parent: {e}")),
    };
    drop(channel);
    match sys::proc::exe_identity() {
        Ok(exe) if exe == boot.exe => {}
        _ => fail(
            "this child is not running the same executable as its parent (was the binary \
             replaced on disk?); refusing to call into it",
        ),
    }
    if fds.is_empty() {
        fail("the parent's handle is missing from the start-up message");
    }
    let parent_pidfd = fds.remove(0);
    if let (true, StartMethod::ForkServer, Some(server)) = (boot.spec.daemon, method, server) {
        // Our parent is the fork server, which lives exactly as long as the client that
        // asked for us: dying with it is dying with the client. If it is gone already, so
        // is the client, and a daemon has nothing to live for.
        if sys::proc::set_parent_death_signal(libc::SIGTERM).is_err() || sys::proc::getppid() != server {
            sys::proc::exit_now(1);
        }
    }
    process::become_child(&boot.spec, boot.parent_pid, boot.parent_name, Some(parent_pidfd), boot.authkey);
    // SAFETY: the executable identity matched above, so the offset names the same `Entry`
    // in this binary as in the parent's.
    let entry = unsafe { popen::entry_at(boot.entry) };
    run_and_exit(move || entry(&boot.args, fds))
}

/// Prints a start-up failure and exits 1: the parent sees it as an exit code.
fn fail(message: &str) -> ! {
    eprintln!("multiprocess: child {}: {message}", sys::proc::getpid());
    sys::proc::exit_now(1)
}

/// Installs, once per process, a panic hook for children: it writes `Process <name>:` and
/// then the panic message, its location and (with `RUST_BACKTRACE`) a backtrace, as CPython
/// writes a child's traceback. Outside a child it calls the hook that was there.
///
/// It is installed in the parent before forking, so that a fork child never has to take the
/// hook lock, which another thread may have held at the fork. It writes to stderr directly,
/// not through `eprintln!`, because a fork child of a `cargo test` thread inherits that
/// thread's output capture, whose buffer vanishes with the child.
pub(crate) fn install_panic_header() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let Some(name) = process::child_name_for_panic() else { return previous(info) };
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".into());
            let thread = std::thread::current();
            let location = info.location().map_or_else(String::new, |l| format!(" at {l}"));
            let mut text = format!(
                "Process {name}:\nthread '{}' panicked{location}:\n{message}\n",
                thread.name().unwrap_or("<unnamed>")
            );
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                text.push_str(&format!("stack backtrace:\n{backtrace}\n"));
            }
            write_stderr(&text);
        }));
    });
}

/// Writes to stderr past any test-harness capture (see [`install_panic_header`]).
fn write_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Runs a child's target and exits: 0 or the target's code; 1 after printing `Process
/// <name>:` and the error or panic message to stderr (CPython's uncaught-exception exit).
pub(crate) fn run_and_exit(target: impl FnOnce() -> std::result::Result<i32, String>) -> ! {
    install_panic_header();
    let code = match panic::catch_unwind(AssertUnwindSafe(target)) {
        Ok(Ok(code)) => code,
        Ok(Err(message)) => {
            let name = process::current_process().name().to_string();
            write_stderr(&format!("Process {name}:\n{message}\n"));
            1
        }
        Err(_) => 1,
    };
    process::exit_child(code)
}
