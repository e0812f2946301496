//! `start()` never waits on a child, nor long on a fork server (issue 13, point 4).
//!
//! - A child stopped (SIGSTOP) the moment it exists, before it has read its arguments, does
//!   not hold up `start()`, however large the arguments: they no longer go through a socket
//!   the child must drain, and a spawn child's `exec` is not waited for. Once continued, the
//!   child gets its arguments intact. Under fork, which sends nothing, the same holds.
//! - A fork server that cannot take a request (out of descriptors: its `RLIMIT_NOFILE`
//!   lowered from outside with `prlimit`) says so at once, and `start()` fails within
//!   milliseconds instead of waiting a second to tell a refusal from a dead server; with the
//!   limit back, the same server starts the next child.
//! - Arguments of every size around the point where they leave the socket for a memfd arrive
//!   intact.
//!
//! Each case runs in a process of its own (it stops or watches the fork server's children,
//! or changes the server's limits), with the leak check on.
mod common;
#[path = "common/faults.rs"]
mod faults;

use common::{join_ok, run_case, start};
use faults::{children_file, gettid, read_children, signal, state_of};
use multiprocess::*;

use std::time::{Duration, Instant};

use common::isolated;

/// FNV-1a, 64 bits: enough to tell arguments that arrived intact from ones that did not.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `len` bytes that are not all alike, so that a shifted or truncated copy hashes otherwise.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(2_654_435_761).rotate_right(13) as u8).collect()
}

use common::Blob;

/// Reports the length and hash of the arguments it was given.
fn report_args(big: Blob, conn: Connection) -> Result<()> {
    conn.send(&(big.0.len(), fnv1a(&big.0)))
}

fn exit_zero() {}

/// The `children` file new children of a start under `m` appear in: this thread's for fork
/// and spawn, the fork server's for forkserver (started first).
fn children_file_for(m: StartMethod) -> String {
    // A first start also starts the resource tracker the children share, a child of ours
    // that would look like the child being watched.
    let mut warm = start(m, exit_zero, ());
    join_ok(&mut warm);
    match m {
        StartMethod::ForkServer => {
            let server = __private::forkserver_pid().expect("a fork server runs");
            children_file(server, server as i32)
        }
        _ => children_file(std::process::id(), gettid()),
    }
}

/// How long the watcher keeps the child stopped if `start()` does not return: past the
/// bound the test asserts, so that a `start()` that waits for the child fails the test
/// instead of hanging it.
const HOLD: Duration = Duration::from_secs(3);

/// Continues a stopped process when dropped, so that a failing test leaves nothing stopped.
struct ContinueOnDrop(Option<u32>);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            signal(pid, libc::SIGCONT);
        }
    }
}

/// Under `m`, a child with 8 MiB of arguments is stopped the moment it appears, and held
/// stopped until `start()` has returned (or for [`HOLD`]). `start()` returns within 1 s; the
/// child is seen stopped with its target not yet run (so the stop came before the child had
/// its arguments); once continued, it reports their length and hash, both right, and exits 0.
/// Before, `start()` waited until the child was continued: the spawn parent for its `exec`,
/// and both spawn and forkserver for it to drain the arguments from the socket.
fn stopped_child_case(m: StartMethod) {
    let big = pattern(8 << 20);
    let expected = (big.len(), fnv1a(&big));
    let children = children_file_for(m);
    let before = read_children(&children);
    let (ours, theirs) = pipe().unwrap();
    let mut p = get_context(m).process(report_args, (Blob(big), theirs));
    let (returned_tx, returned_rx) = std::sync::mpsc::channel::<()>();
    let (stopped, took) = std::thread::scope(|s| {
        let (children, before) = (&children, &before);
        let watcher = s.spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let pid = loop {
                if let Some(&pid) = read_children(children).difference(before).next() {
                    signal(pid, libc::SIGSTOP);
                    break Some(pid);
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::yield_now();
            };
            // Held until `start()` has returned; if it waits for the child, continued here
            // after `HOLD`, so that it can return (late, which fails the test).
            if returned_rx.recv_timeout(HOLD).is_err()
                && let Some(pid) = pid
            {
                signal(pid, libc::SIGCONT);
            }
            pid
        });
        let t = Instant::now();
        let started = p.start();
        let took = t.elapsed();
        let _ = returned_tx.send(());
        let stopped = ContinueOnDrop(watcher.join().unwrap());
        started.unwrap();
        (stopped, took)
    });
    eprintln!("start() took {took:?}");
    assert!(took < Duration::from_secs(1), "start() took {took:?} with the child stopped");
    let pid = p.pid().unwrap();
    assert_eq!(stopped.0, Some(pid), "the watcher stopped another process than the child");
    assert!(
        common::eventually_within(Duration::from_secs(10), || state_of(pid) == Some('T')),
        "the child never showed as stopped"
    );
    assert!(!ours.poll(Some(Duration::from_millis(100))).unwrap(), "the child ran its target before it was stopped");
    drop(stopped);
    assert!(ours.poll(Some(Duration::from_secs(30))).unwrap(), "the continued child never reported");
    assert_eq!(ours.recv::<(usize, u64)>().unwrap(), expected, "the arguments arrived damaged");
    join_ok(&mut p);
}

mod stopped_child_does_not_block_start {
    use super::*;

    #[test]
    fn fork() {
        isolated("stopped_child_does_not_block_start::fork", || run_case(StartMethod::Fork, stopped_child_case))
    }

    #[test]
    fn spawn() {
        isolated("stopped_child_does_not_block_start::spawn", || run_case(StartMethod::Spawn, stopped_child_case))
    }

    #[test]
    fn forkserver() {
        isolated("stopped_child_does_not_block_start::forkserver", || {
            run_case(StartMethod::ForkServer, stopped_child_case)
        })
    }
}

/// Arguments of each size from empty to 8 MiB, closely around the point where the start-up
/// message leaves the socket for a memfd (about 2 KiB), arrive whole and unchanged.
fn sizes_case(m: StartMethod) {
    let sizes = [0, 1, 1000].into_iter().chain((1800..2200).step_by(7)).chain([4096, 65536, 1 << 20, 8 << 20]);
    for size in sizes {
        let big = pattern(size);
        let expected = (big.len(), fnv1a(&big));
        let (ours, theirs) = pipe().unwrap();
        let mut p = start(m, report_args, (Blob(big), theirs));
        assert_eq!(ours.recv::<(usize, u64)>().unwrap(), expected, "{size} bytes of arguments arrived damaged");
        join_ok(&mut p);
    }
}

mod arguments_of_every_size_arrive_intact {
    use super::*;

    #[test]
    fn fork() {
        isolated("arguments_of_every_size_arrive_intact::fork", || run_case(StartMethod::Fork, sizes_case))
    }

    #[test]
    fn spawn() {
        isolated("arguments_of_every_size_arrive_intact::spawn", || run_case(StartMethod::Spawn, sizes_case))
    }

    #[test]
    fn forkserver() {
        isolated("arguments_of_every_size_arrive_intact::forkserver", || run_case(StartMethod::ForkServer, sizes_case))
    }
}

/// Sets the soft `RLIMIT_NOFILE` of process `pid` (not ours) to `soft`; returns what it was.
fn set_nofile_of(pid: u32, soft: u64) -> u64 {
    // SAFETY: `rlimit` is plain data; prlimit reads `new` and fills `old`, both live locals.
    unsafe {
        let mut old: libc::rlimit = std::mem::zeroed();
        let r = libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old);
        assert_eq!(r, 0, "prlimit of {pid}: {}", std::io::Error::last_os_error());
        let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
        let r = libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut());
        assert_eq!(r, 0, "prlimit of {pid} to {soft}: {}", std::io::Error::last_os_error());
        old.rlim_cur
    }
}

/// The descriptor numbers process `pid` has open.
fn open_fds_of(pid: u32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The lowest descriptor number process `pid` has free.
fn lowest_free_fd_of(pid: u32) -> u64 {
    let open = open_fds_of(pid);
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Waits until the fork server is back in its `poll`, asleep: after the last child's status
/// reached us (`join` returned), this means it has also closed that child's socket, so that
/// its descriptors are the ones it holds when idle.
fn wait_until_idle(server: u32) {
    assert!(
        common::eventually_within(Duration::from_secs(10), || state_of(server) == Some('S')),
        "the fork server never went back to waiting"
    );
}

/// The fork server is put out of descriptors from outside: its soft `RLIMIT_NOFILE` is set
/// with `prlimit` to its lowest free descriptor number, so that it has no slot for a new
/// one. It cannot take the socket a request comes with, so it can answer neither
/// with a child nor with an error on that socket. It refuses on its control socket, and
/// `start()` gives `Err(Io(EMFILE))` within milliseconds (asserted under 0.5 s; before, the
/// client waited up to 1 s for the server's pidfd to tell a dropped request from a dead
/// server, and then gave a vaguer error). The server lives on, nothing is left behind, and
/// once its limit is back the same server starts the next child.
#[test]
fn forkserver_refused_request_fails_fast() {
    isolated("forkserver_refused_request_fails_fast", || {
        common::guarded(|| {
            let m = StartMethod::ForkServer;
            let children = children_file_for(m);
            let server = __private::forkserver_pid().unwrap();
            for round in 0..3 {
                wait_until_idle(server);
                let before = read_children(&children);
                let old = set_nofile_of(server, lowest_free_fd_of(server));
                let mut p = get_context(m).process(exit_zero, ());
                let t = Instant::now();
                let result = p.start();
                let took = t.elapsed();
                set_nofile_of(server, old);
                match result {
                    Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EMFILE) => {}
                    other => panic!("round {round}: a refused request gave {other:?}, not Err(Io(EMFILE))"),
                }
                assert!(took < Duration::from_millis(500), "round {round}: the refusal took {took:?}");
                assert_eq!(read_children(&children), before, "round {round}: the server made a child");
                assert_eq!(__private::forkserver_pid(), Some(server), "round {round}: the server was replaced");
                let (ours, theirs) = pipe().unwrap();
                let mut next = start(m, report_args, (Blob(pattern(100)), theirs));
                assert_eq!(ours.recv::<(usize, u64)>().unwrap().0, 100);
                join_ok(&mut next);
                assert_eq!(__private::forkserver_pid(), Some(server), "round {round}: the server was replaced");
            }
        })
    });
}

/// The server's descriptor limit is set, from outside, to each value from its lowest free
/// descriptor number to a few above its highest open one: whichever step of a request fails
/// for want of a descriptor (taking the request's socket, or opening the child's pidfd),
/// `start()` answers within 0.5 s, with `Err(Io(EMFILE))` or a started child; at the lowest
/// limit it fails, at the highest it works. (Below 2 the server cannot even wait for
/// requests, poll(2) refusing to watch its two sockets, and waits for the limit to be
/// raised: a server stopped in effect, which `start()` waits for as for a stopped one.)
#[test]
fn forkserver_descriptor_limits_answer_fast() {
    isolated("forkserver_descriptor_limits_answer_fast", || {
        common::guarded(|| {
            let m = StartMethod::ForkServer;
            children_file_for(m);
            let server = __private::forkserver_pid().unwrap();
            wait_until_idle(server);
            let lowest = lowest_free_fd_of(server);
            let highest = *open_fds_of(server).last().unwrap();
            let mut refused = Vec::new();
            let mut worked = Vec::new();
            for soft in lowest..=highest + 4 {
                let old = set_nofile_of(server, soft);
                let mut p = get_context(m).process(exit_zero, ());
                let t = Instant::now();
                let result = p.start();
                let took = t.elapsed();
                set_nofile_of(server, old);
                assert!(took < Duration::from_millis(500), "limit {soft}: start() took {took:?}");
                match result {
                    Ok(()) => {
                        // The child has the server's limit too, and may be short of
                        // descriptors to read its orders: it then exits 1, as a child that
                        // cannot start does.
                        p.join().unwrap();
                        assert!(matches!(p.exitcode(), Some(0 | 1)), "limit {soft}: exit code {:?}", p.exitcode());
                        worked.push(soft);
                    }
                    Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EMFILE) => refused.push(soft),
                    Err(e) => panic!("limit {soft}: {e:?}, not EMFILE"),
                }
            }
            eprintln!("refused at limits {refused:?}, started at {worked:?}");
            assert!(refused.contains(&lowest), "a server with no descriptor to spare took a request");
            assert!(worked.contains(&(highest + 4)), "the server never worked again");
            let mut next = start(m, exit_zero, ());
            join_ok(&mut next);
            assert_eq!(__private::forkserver_pid(), Some(server), "the server was replaced");
        })
    });
}
