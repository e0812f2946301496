//! Process control through pidfds: a pidfd names one process for as long as it is open, so a
//! signal sent through it can never reach a recycled pid, and it is readable once the process
//! has ended, which makes it the sentinel `connection::wait` polls.

use super::{Deadline, cvt, fd, retry};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// An owned pidfd.
#[derive(Debug)]
pub(crate) struct Pidfd(OwnedFd);

impl Pidfd {
    /// A pidfd for `pid`. The caller makes sure `pid` cannot have been reaped and recycled in
    /// between (it is our unreaped child, or we check its parent afterwards).
    pub(crate) fn open(pid: libc::pid_t) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
        let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
        // SAFETY: on success the descriptor is new and ours; pidfds are close-on-exec.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Wraps a pidfd received from another process.
    pub(crate) fn from_owned(fd: OwnedFd) -> Pidfd {
        Pidfd(fd)
    }

    /// Sends `signal`. A process that has already ended is not an error: there is nothing left
    /// to signal, and the pid it had is never touched.
    pub(crate) fn send_signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        match cvt(r) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Whether the process has ended (the pidfd is readable).
    pub(crate) fn has_exited(&self) -> io::Result<bool> {
        Ok(fd::poll_readable(&[self.0.as_fd()], Deadline::after(Some(std::time::Duration::ZERO)))?[0])
    }

    /// Waits until the process has ended or the deadline passes; returns whether it ended.
    pub(crate) fn wait_exited(&self, deadline: Deadline) -> io::Result<bool> {
        Ok(fd::poll_readable(&[self.0.as_fd()], deadline)?[0])
    }

    /// Reaps our child without blocking: its exit code (`-N` when killed by signal N), or
    /// `None` while it runs.
    pub(crate) fn try_reap(&self) -> io::Result<Option<i32>> {
        // SAFETY: `siginfo_t` is plain data; zeroed means "no child changed state".
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid fills `info`, which lives for the call.
        retry(|| unsafe {
            libc::waitid(libc::P_PIDFD, self.0.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG)
        })?;
        // SAFETY: after a successful waitid the pid and status fields are initialised.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => status,
            _ => -status,
        }))
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Whether the process `pid` has ended (exited, reaped or not) or never existed: what a lock
/// asks of a holder that has kept it too long. A pid that cannot name a process (zero,
/// negative, above `pid_max`: garbage another process wrote) counts as gone. Once the pidfd
/// is open it names that one process, so only the instant between reading the pid and opening
/// it is open to recycling, far less than the time a pid takes to come round again.
pub(crate) fn process_gone(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    match Pidfd::open(pid) {
        Ok(p) => p.has_exited().unwrap_or(false),
        Err(e) => matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)),
    }
}

/// A process's tag: with `pid`, it names one process where the pid alone may name a
/// stranger (a pid is recycled once its process is reaped). Never 0.
///
/// Where the kernel has pidfs (Linux 6.9 and later), the tag is the low half of the pidfd's
/// inode number, which the kernel counts up for every process it makes: unique for four
/// billion processes. Elsewhere it is the process's start time in clock ticks, which tells a
/// new process from an old one unless both started in the same tick (10 ms at 100 Hz).
fn tag_of(pid: libc::pid_t, pidfd: BorrowedFd<'_>) -> io::Result<u32> {
    /// `PID_FS_MAGIC`, "PIDF".
    const PIDFS_MAGIC: i64 = 0x5049_4446;
    // SAFETY: `statfs` and `stat` are plain data, filled by the calls on a descriptor we hold.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstatfs(pidfd.as_raw_fd(), &mut fs) })?;
    let wide = if fs.f_type as i64 == PIDFS_MAGIC {
        // SAFETY: as above.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        cvt(unsafe { libc::fstat(pidfd.as_raw_fd(), &mut st) })?;
        st.st_ino
    } else {
        super::proc::start_time(pid)?
    };
    Ok((wide as u32).max(1))
}

/// This process's tag (see [`tag_of`]), from a cache checked against the pid (a fork child
/// has its own); 0 if the kernel cannot tell, which a reader takes as "unknown".
#[inline]
pub(crate) fn own_tag() -> u32 {
    let pid = super::proc::cached_pid();
    let cached = OWN_TAG.load(Ordering::Relaxed);
    if (cached >> 32) as libc::pid_t == pid {
        return cached as u32;
    }
    own_tag_slow(pid)
}

/// (pid << 32) | tag of this process, as [`own_tag`] last found it.
static OWN_TAG: AtomicU64 = AtomicU64::new(0);

#[cold]
fn own_tag_slow(pid: libc::pid_t) -> u32 {
    let tag = Pidfd::open(pid).and_then(|p| tag_of(pid, p.as_fd())).unwrap_or(0);
    OWN_TAG.store(((pid as u32 as u64) << 32) | u64::from(tag), Ordering::Relaxed);
    tag
}

/// Whether the process that recorded itself as (`pid`, `tag`) has ended: `pid` names no live
/// process, or names one with another tag (a new process got the pid after the recorded one
/// died and was reaped). A `tag` of 0 is unknown, and only the pid is asked about.
pub(crate) fn process_with_tag_gone(pid: i32, tag: u32) -> bool {
    if pid <= 0 {
        return true;
    }
    let pidfd = match Pidfd::open(pid) {
        Ok(p) => p,
        Err(e) => return matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)),
    };
    if pidfd.has_exited().unwrap_or(false) {
        return true;
    }
    if tag == 0 {
        return false;
    }
    match tag_of(pid, pidfd.as_fd()) {
        Ok(now) => now != tag,
        // Ended between the two looks (its /proc entry gone).
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// A pidfd for the process that recorded itself as (`pid`, `tag`), with its tag as the
/// kernel tells it now (0 if it cannot), if that process is alive; `None` if it has ended
/// (as [`process_with_tag_gone`] decides). An error: cannot tell (out of descriptors).
pub(crate) fn open_if_alive(pid: i32, tag: u32) -> io::Result<Option<(Pidfd, u32)>> {
    if pid <= 0 {
        return Ok(None);
    }
    let pidfd = match Pidfd::open(pid) {
        Ok(p) => p,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if pidfd.has_exited()? {
        return Ok(None);
    }
    let now = match tag_of(pid, pidfd.as_fd()) {
        Ok(now) => now,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => 0,
    };
    if tag != 0 && now != 0 && now != tag {
        return Ok(None);
    }
    Ok(Some((pidfd, if tag != 0 { tag } else { now })))
}

/// Pidfds of the processes [`process_alive_recently_seen`] last found alive, so that asking
/// again about the same process costs one `poll` instead of an open, a poll and a close.
static RECENT: std::sync::Mutex<Vec<(i32, Pidfd)>> = std::sync::Mutex::new(Vec::new());
/// How many processes [`RECENT`] remembers.
const RECENT_MAX: usize = 8;

/// As `!process_gone(pid)`, remembering the pidfd of a process found alive. A remembered
/// pidfd names the process we saw: while that process lives its pid is its own, so "still
/// alive" through it is exact; once it has ended, a fresh look decides, since the pid may
/// name a new process by now. A lock taken by another thread (or held across a fork by a
/// thread the child does not have) makes it take the fresh look without remembering.
pub(crate) fn process_alive_recently_seen(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(mut recent) = RECENT.try_lock() else { return !process_gone(pid) };
    if let Some(i) = recent.iter().position(|(p, _)| *p == pid) {
        if matches!(recent[i].1.has_exited(), Ok(false)) {
            return true;
        }
        recent.swap_remove(i);
    }
    match Pidfd::open(pid) {
        Ok(p) => match p.has_exited() {
            Ok(false) => {
                if recent.len() >= RECENT_MAX {
                    recent.remove(0);
                }
                recent.push((pid, p));
                true
            }
            Ok(true) => false,
            // Cannot tell: alive, as `process_gone` says.
            Err(_) => true,
        },
        // Out of descriptors, say: alive, as `process_gone` says.
        Err(e) => !matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)),
    }
}

/// The descriptors [`RECENT`] holds (kept for the life of the process: not leaks).
pub(crate) fn recent_fds() -> Vec<std::os::fd::RawFd> {
    RECENT.try_lock().map(|r| r.iter().map(|(_, p)| p.0.as_raw_fd()).collect()).unwrap_or_default()
}
