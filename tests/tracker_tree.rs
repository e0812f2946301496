//! One resource tracker per process tree (issue 16 point 5): children share their parent's
//! tracker under every start method, so that creating segments in many children starts no
//! process per child; the shared tracker still unlinks each child's segments as soon as that
//! child ends; and a pool that replaces its workers leaves no zombie even when the program is
//! the PID 1 of a pid namespace, which never reaps (as in a container).
mod common;
use common::{Cleanup, children_of, pid_alive};
use multiprocess::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How many children each case starts.
const CHILDREN: usize = 50;
/// How long the tracker may take to unlink a dead child's segments on a loaded machine.
const CLEANUP: Duration = Duration::from_secs(10);

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mptt_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Creates the tracked segment `name`, reports its tracker's pid, then waits for the parent
/// (until killed, or until the parent is gone).
fn create_report_wait(name: String, conn: Connection) -> Result<()> {
    let _shm = SharedMemory::create_named(&name, 64)?;
    conn.send(&__private::tracker_pid())?;
    let _ = conn.recv::<()>();
    Ok(())
}

/// Children killed when dropped, so that a failing case does not leave them waiting (a fork
/// child holds copies of its elder siblings' pipe ends, and never reads end of file).
struct Kids(Vec<Process>);

impl Drop for Kids {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if p.exitcode().is_none() {
                let _ = p.kill();
                let _ = p.join();
            }
        }
    }
}

/// Starts [`CHILDREN`] children that each create a segment: the children, their segments'
/// names, the tracker pid each reported, and the parent's ends of their pipes.
fn start_creators(
    m: StartMethod,
    tag: &str,
    cleanup: &mut Cleanup,
) -> (Kids, Vec<String>, Vec<Option<u32>>, Vec<Connection>) {
    let mut children = Kids(Vec::new());
    let mut names = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..CHILDREN {
        let name = cleanup.add(unique(&format!("{tag}{m}")));
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(create_report_wait, (name.clone(), theirs));
        p.start().unwrap();
        children.0.push(p);
        names.push(name);
        conns.push(ours);
    }
    let trackers = conns.iter().map(|c| c.recv::<Option<u32>>().unwrap()).collect();
    (children, names, trackers, conns)
}

/// Ends the children: each is told to return. (Not by closing our ends: a fork child holds
/// copies of the ends its elder siblings' parent had.)
fn finish(children: &mut Kids, conns: Vec<Connection>) {
    for conn in &conns {
        conn.send(&()).unwrap();
    }
    for p in &mut children.0 {
        p.join().unwrap();
    }
}

start_methods! {
    /// 50 children that each create a tracked segment, the parent none: one tracker for the
    /// tree, the parent's (started at its first child start), and no process per child.
    fn children_share_one_tracker(m) {
        let mut cleanup = Cleanup::new();
        let before: Vec<u32> = children_of(std::process::id()).into_iter().map(|(pid, _)| pid).collect();
        let (mut children, names, trackers, conns) = start_creators(m, "sh", &mut cleanup);
        let tracker = __private::tracker_pid().expect("the parent started a tracker for its children");
        assert!(trackers.iter().all(|t| *t == Some(tracker)), "children with trackers of their own: {trackers:?} (the parent's is {tracker})");
        assert!(pid_alive(tracker));
        // Besides the children (and the fork server's), at most the tracker was added.
        let child_pids: Vec<u32> = children.0.iter().filter_map(|p| p.pid()).collect();
        let added: Vec<u32> = children_of(std::process::id())
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|pid| !before.contains(pid) && !child_pids.contains(pid) && Some(*pid) != __private::forkserver_pid() && *pid != tracker)
            .collect();
        // (Only when alone: beside other tests, their children come and go too.)
        if common::alone_in_process() {
            assert_eq!(added, Vec::<u32>::new(), "processes other than the children");
        }
        finish(&mut children, conns);
        assert!(common::eventually_within(CLEANUP, || names.iter().all(|n| !exists(n))), "segments left after their creators returned");
        assert!(pid_alive(tracker), "the tracker ended with the children");
    }

    /// Each child's segment is unlinked when that child is SIGKILLed, while the others' stay:
    /// the one tracker watches every creator on its own.
    fn each_killed_child_loses_only_its_own_segment(m) {
        let mut cleanup = Cleanup::new();
        let (mut children, names, trackers, conns) = start_creators(m, "kl", &mut cleanup);
        let tracker = __private::tracker_pid().expect("a tracker");
        assert!(trackers.iter().all(|t| *t == Some(tracker)), "children with trackers of their own: {trackers:?}");
        for i in 0..CHILDREN {
            let child = &mut children.0[i];
            child.kill().unwrap();
            child.join().unwrap();
            assert_eq!(child.exitcode(), Some(-libc::SIGKILL));
            assert!(common::eventually_within(CLEANUP, || !exists(&names[i])), "child {i}'s segment was not unlinked");
            let kept: Vec<&String> = names[i + 1..].iter().filter(|n| !exists(n)).collect();
            assert!(kept.is_empty(), "killing child {i} unlinked others' segments: {kept:?}");
        }
        assert!(pid_alive(tracker));
        drop(conns);
    }
}

// ---------------------------------------------------------------------------------------------
// No zombies under a PID 1 that never reaps.

/// Set in the run of this binary that plays the program: `pid1` (it is the PID 1 of a new pid
/// namespace) or `subreaper` (it is a child subreaper: orphans are reparented to it, as to a
/// PID 1). Either way it never reaps a process it did not start.
const ROLE_ENV: &str = "MULTIPROCESS_TRACKER_TREE_ROLE";
/// The prefix of the segments the pool's tasks leave behind, passed to that run.
const PREFIX_ENV: &str = "MULTIPROCESS_TRACKER_TREE_PREFIX";

/// A pool task: creates a tracked segment and leaves it for the tracker (it does not unlink).
fn leave_segment(name: String) -> bool {
    SharedMemory::create_named(&name, 64).is_ok()
}

/// This process's pid as /proc (the outer namespace's) shows it.
fn proc_pid() -> u32 {
    std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str()?.parse().ok()).unwrap_or_else(std::process::id)
}

/// The program: a pool with `maxtasksperchild=1` runs 50 tasks that each create a segment;
/// once every segment is gone (its worker ended), prints how many zombies it has as children.
fn pool_program(m: StartMethod, prefix: &str) {
    if std::env::var(ROLE_ENV).is_ok_and(|r| r == "subreaper") {
        // SAFETY: prctl with an integer argument; changes only this process.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    }
    let names: Vec<String> = (0..CHILDREN).map(|i| format!("{prefix}_{i}")).collect();
    let _cleanup = Cleanup(names.clone());
    let pool = Pool::builder().processes(2).maxtasksperchild(1).start_method(m).build().unwrap();
    assert!(pool.map(leave_segment, names.clone()).unwrap().into_iter().all(|ok| ok));
    pool.close();
    pool.join().unwrap();
    assert!(
        common::eventually_within(CLEANUP, || names.iter().all(|n| !exists(n))),
        "segments left after their workers ended"
    );
    // A tracker that ends as an orphan becomes a zombie a moment later.
    std::thread::sleep(Duration::from_millis(300));
    let me = proc_pid();
    let zombies = children_of(me).into_iter().filter(|(_, state)| *state == 'Z').count();
    println!("ZOMBIES {zombies}");
}

/// Runs this test again as the program of [`pool_program`], as the PID 1 of a new pid
/// namespace when we may make one (root), else as a child subreaper; returns its zombie count.
fn zombies_after_pool(test: &str) -> usize {
    let prefix = unique("z");
    let exe = std::env::current_exe().unwrap();
    let args = ["--exact", test, "--nocapture", "--test-threads=1"];
    // SAFETY: geteuid only reads.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = root && std::path::Path::new("/usr/bin/unshare").exists();
    let mut command = if unshare {
        let mut c = std::process::Command::new("/usr/bin/unshare");
        c.args(["--pid", "--fork", "--kill-child"]).arg(&exe).args(args).env(ROLE_ENV, "pid1");
        c
    } else {
        let mut c = std::process::Command::new(&exe);
        c.args(args).env(ROLE_ENV, "subreaper");
        c
    };
    let out = command.env(PREFIX_ENV, &prefix).stdin(std::process::Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the program failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // (The harness may have printed the test's name on the same line.)
    let count = stdout.lines().find_map(|l| l.split_once("ZOMBIES ")).expect("the program printed its zombie count").1;
    count.trim().parse().unwrap()
}

macro_rules! pool_zombie_cases {
    ($($name:ident: $method:expr;)*) => {$(
        /// A pool with `maxtasksperchild=1` running 50 tasks that each create a segment, in a
        /// program that never reaps what it did not start (PID 1 of a pid namespace): no zombie.
        #[test]
        fn $name() {
            let test = concat!(stringify!($name));
            if std::env::var(ROLE_ENV).is_ok() {
                return pool_program($method, &std::env::var(PREFIX_ENV).unwrap());
            }
            assert_eq!(zombies_after_pool(test), 0, "zombies left by the pool's tasks");
        }
    )*};
}

pool_zombie_cases! {
    pool_tasks_leave_no_zombie_fork: StartMethod::Fork;
    pool_tasks_leave_no_zombie_spawn: StartMethod::Spawn;
    pool_tasks_leave_no_zombie_forkserver: StartMethod::ForkServer;
}
