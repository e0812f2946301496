//! The end of the run: nothing left behind. No zombie (among this process's children and the
//! fork server's), no child still running other than the fork server and the resource
//! tracker, no process of the run
//! still alive (found by the mark every process of the run inherits in its environment: the
//! spawned children, the fork server's, the resource trackers of killed children), no new
//! `/dev/shm` entry, and this process's descriptors back to what they were at the start
//! (leaving out the ones the crate keeps for the life of the process: the fork server's
//! socket and pidfd, and the like).
//!
//! Killed processes' trackers unlink and exit within moments, so the checks are retried for a
//! few seconds before anything counts as a leak.

use super::RUN_MARK;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long leftovers get to go away.
const GRACE: Duration = Duration::from_secs(5);

/// What the run started from.
pub struct Snapshot {
    fds: BTreeSet<i32>,
    shm: BTreeSet<String>,
}

impl Snapshot {
    pub fn take() -> Snapshot {
        Snapshot { fds: open_fds(), shm: shm_entries() }
    }
}

/// What was left at the end.
pub struct Report {
    zombies: Vec<(u32, u32)>,
    children: Vec<u32>,
    processes: Vec<(u32, String)>,
    shm: Vec<String>,
    fds_before: BTreeSet<i32>,
    fds_after: BTreeSet<i32>,
    server: Option<u32>,
}

impl Report {
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.zombies.is_empty() {
            out.push(format!("end: no zombie: {} left (pid, parent): {:?}", self.zombies.len(), self.zombies));
        }
        if !self.children.is_empty() {
            out.push(format!("end: every child joined: {} still running: {:?}", self.children.len(), self.children));
        }
        if !self.processes.is_empty() {
            out.push(format!("end: no process of the run left: {:?}", self.processes));
        }
        if !self.shm.is_empty() {
            out.push(format!("end: no leaked /dev/shm entry: {:?}", self.shm));
        }
        if self.fds_after != self.fds_before {
            let new: Vec<String> = self.fds_after.difference(&self.fds_before).map(|&fd| describe(fd)).collect();
            let gone: Vec<&i32> = self.fds_before.difference(&self.fds_after).collect();
            out.push(format!(
                "end: descriptors back to the start: {} at the start, {} now; new: [{}], closed: {gone:?}",
                self.fds_before.len(),
                self.fds_after.len(),
                new.join(", ")
            ));
        }
        out
    }

    pub fn summary(&self) -> String {
        let server = match self.server {
            Some(pid) => format!(" (the fork server, pid {pid}, stays for the life of the process)"),
            None => String::new(),
        };
        format!(
            "end: {} zombies, {} children left, {} processes of the run left{server}, {} leaked /dev/shm entries, fds {} -> {}",
            self.zombies.len(),
            self.children.len(),
            self.processes.len(),
            self.shm.len(),
            self.fds_before.len(),
            self.fds_after.len()
        )
    }
}

/// Checks what is left against `before`; `segments` are the names the run's children made
/// (all must be gone; any other new entry counts too).
pub fn check(before: &Snapshot, segments: &[String]) -> Report {
    let deadline = Instant::now() + GRACE;
    loop {
        let report = look(before, segments);
        if report.failures().is_empty() || Instant::now() >= deadline {
            return report;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn look(before: &Snapshot, segments: &[String]) -> Report {
    let me = std::process::id();
    let server = multiprocess::__private::forkserver_pid();
    // The resource tracker the whole run shares is a child of this process, and stays for
    // its life, as the fork server does.
    let tracker = multiprocess::__private::tracker_pid();
    let procs = processes();
    let mut zombies = Vec::new();
    let mut children = Vec::new();
    for p in &procs {
        let ours = p.ppid == me || Some(p.ppid) == server;
        if ours && p.state == 'Z' {
            zombies.push((p.pid, p.ppid));
        } else if p.ppid == me && Some(p.pid) != server && Some(p.pid) != tracker {
            children.push(p.pid);
        }
    }
    let mark = format!("{RUN_MARK}={}", std::env::var(RUN_MARK).unwrap_or_default());
    let processes = procs
        .iter()
        .filter(|p| {
            p.pid != me && Some(p.pid) != server && Some(p.pid) != tracker && p.state != 'Z' && has_mark(p.pid, &mark)
        })
        .map(|p| (p.pid, p.comm.clone()))
        .collect();
    let now = shm_entries();
    let shm: Vec<String> = now
        .iter()
        .filter(|name| {
            let new = !before.shm.contains(*name) && (name.starts_with("psm_") || name.starts_with("mp-"));
            new || segments.contains(name)
        })
        .cloned()
        .collect();
    let persistent: BTreeSet<i32> = multiprocess::__private::persistent_fds().into_iter().collect();
    let fds_after = open_fds().into_iter().filter(|fd| before.fds.contains(fd) || !persistent.contains(fd)).collect();
    Report { zombies, children, processes, shm, fds_before: before.fds.clone(), fds_after, server }
}

/// One line of `/proc/<pid>/stat`, the fields we use.
struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    comm: String,
}

fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may hold spaces: parse after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let Some(ppid) = fields.next().and_then(|s| s.parse::<u32>().ok()) else { continue };
        out.push(Proc { pid, ppid, state, comm });
    }
    out
}

/// Whether `pid`'s environment (as it was exec'd) holds `mark`.
fn has_mark(pid: u32, mark: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == mark.as_bytes()))
}

fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn open_fds() -> BTreeSet<i32> {
    multiprocess::__private::open_fds().map(|fds| fds.into_iter().collect()).unwrap_or_default()
}

fn describe(fd: i32) -> String {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
    format!("{fd} -> {}", target.unwrap_or_default())
}
