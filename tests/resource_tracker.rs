//! The resource tracker: CONFORMANCE.md SHM-15, SHM-16 and SHM-26 in the form that translates
//! (a named segment whose creator ended, however it ended, is unlinked; one merely attached
//! to is not), without CPython's warnings. Each case with children runs under every start
//! method; children share their parent's tracker (one per process tree, see
//! tests/tracker_tree.rs), which still unlinks a child's segments when that child ends. Every
//! test names its segments after its pid and start method and unlinks them even when it fails.
mod common;
use common::{Cleanup, guarded, isolated, pid_alive, run_case};
use multiprocess::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// How long a tracker may take to notice its creator's end and unlink: generous, for a loaded
/// machine; it usually takes milliseconds.
const CLEANUP: Duration = Duration::from_secs(10);

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mprt_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Polls until `cond` holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The entries of `/dev/shm` whose names start with `prefix`.
fn entries_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The parent pid of `pid`, from /proc.
fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

fn tracker_pid() -> u32 {
    __private::tracker_pid().expect("a tracker is running")
}

// ---------------------------------------------------------------------------------------------
// Child targets.

/// Creates `tracked` (tracked) and `untracked` (if not empty; untracked), reports its
/// tracker's pid, then waits to be killed.
fn create_and_wait(tracked: String, untracked: String, conn: Connection) -> Result<()> {
    let _a = SharedMemory::create_named(&tracked, 64)?;
    if !untracked.is_empty() {
        let _b = SharedMemory::builder().track(false).create_named(&untracked, 64)?;
    }
    conn.send(&__private::tracker_pid())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Creates `name` and ends without unlinking it: by returning, or by panicking.
fn create_and_end(name: String, panic: bool) -> Result<()> {
    let shm = SharedMemory::create_named(&name, 64)?;
    shm.write_at(0, b"left behind")?;
    if panic {
        panic!("the creator panics");
    }
    Ok(())
}

start_methods! {
    /// SHM-15 with SIGKILL: a child creates a segment and is killed; the tracker, which it
    /// shares with its parent, unlinks the segment at once and lives on for the parent, whose
    /// own segment is untouched.
    fn tracker_unlinks_after_sigkill(m) {
        let mut cleanup = Cleanup::new();
        let mine = SharedMemory::create(8).unwrap();
        cleanup.add(mine.name().to_string());
        let parent_tracker = tracker_pid();
        let name = cleanup.add(unique(&format!("kill{m}")));
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(create_and_wait, (name.clone(), String::new(), theirs));
        p.start().unwrap();
        let child_tracker = ours.recv::<Option<u32>>().unwrap().expect("the child has a tracker");
        assert_eq!(child_tracker, parent_tracker, "the child did not share its parent's tracker");
        assert!(exists(&name));
        p.kill().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        assert!(eventually(CLEANUP, || !exists(&name)), "{name} was not unlinked");
        assert!(pid_alive(parent_tracker), "the tracker ended with the child");
        assert!(exists(mine.name()));
        assert_eq!(tracker_pid(), parent_tracker);
        mine.unlink().unwrap();
    }

    /// SHM-16's `track=False` in its creator's form: an untracked segment of a killed child
    /// stays (checked once the tracker has cleaned up the child's tracked one: it unlinks a
    /// process's segments all at once), and is unlinked by hand.
    fn untracked_segment_survives_sigkill(m) {
        let mut cleanup = Cleanup::new();
        let tracked = cleanup.add(unique(&format!("tr{m}")));
        let untracked = cleanup.add(unique(&format!("un{m}")));
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(create_and_wait, (tracked.clone(), untracked.clone(), theirs));
        p.start().unwrap();
        ours.recv::<Option<u32>>().unwrap().unwrap();
        p.kill().unwrap();
        p.join().unwrap();
        assert!(eventually(CLEANUP, || !exists(&tracked)), "{tracked} was not unlinked");
        assert!(exists(&untracked), "an untracked segment was unlinked");
        SharedMemory::open(&untracked).unwrap().unlink().unwrap();
    }

    /// A creator that returns, or panics, without unlinking: its segment is unlinked too.
    fn tracker_unlinks_after_normal_exit_and_panic(m) {
        let mut cleanup = Cleanup::new();
        for (panic, code) in [(false, 0), (true, 1)] {
            let name = cleanup.add(unique(&format!("exit{m}{panic}")));
            let mut p = get_context(m).process(create_and_end, (name.clone(), panic));
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(code));
            assert!(eventually(CLEANUP, || !exists(&name)), "{name} was not unlinked (panic: {panic})");
        }
    }
}

/// Attaches to `theirs`, creates `own`, reports, then waits to be killed.
fn attach_and_wait(theirs: String, own: String, conn: Connection) -> Result<()> {
    let attached = SharedMemory::open(&theirs)?;
    attached.write_at(0, b"attached")?;
    let _own = SharedMemory::create_named(&own, 8)?;
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    /// SHM-16's `track=True` attacher, deliberately different: a child that attached to the
    /// parent's segment and died does not unlink it (CPython's tracker does, and warns); the
    /// child's own segment is unlinked.
    fn attacher_death_does_not_unlink(m) {
        let mut cleanup = Cleanup::new();
        let parents = cleanup.add(unique(&format!("par{m}")));
        let childs = cleanup.add(unique(&format!("chi{m}")));
        let shm = SharedMemory::create_named(&parents, 64).unwrap();
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(attach_and_wait, (parents.clone(), childs.clone(), theirs));
        p.start().unwrap();
        ours.recv::<()>().unwrap();
        p.kill().unwrap();
        p.join().unwrap();
        assert!(eventually(CLEANUP, || !exists(&childs)), "the child's own segment was not unlinked");
        assert!(exists(&parents), "the segment the child attached to was unlinked");
        let mut buf = [0u8; 8];
        shm.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"attached");
        shm.unlink().unwrap();
    }
}

/// Creates `first` and `marker`; unlinks `first` itself if asked; reports; then ends when the
/// parent says so.
fn create_then_end_on_request(first: String, marker: String, unlink: bool, conn: Connection) -> Result<()> {
    let shm = SharedMemory::create_named(&first, 8)?;
    let _marker = SharedMemory::create_named(&marker, 8)?;
    if unlink {
        shm.unlink()?;
    }
    conn.send(&())?;
    conn.recv::<()>()?;
    Ok(())
}

start_methods! {
    /// The tracker unlinks only the very segment that was registered: after the creator
    /// unlinked its segment (which unregisters it), or after another process unlinked it, a
    /// new segment made under the same name survives the creator's end. The creator's other
    /// segment, a marker, shows that its tracker did clean up.
    fn tracker_leaves_a_recreated_name_alone(m) {
        let mut cleanup = Cleanup::new();
        for creator_unlinks in [true, false] {
            let name = cleanup.add(unique(&format!("re{m}{creator_unlinks}")));
            let marker = cleanup.add(unique(&format!("mk{m}{creator_unlinks}")));
            let (ours, theirs) = pipe().unwrap();
            let mut p = get_context(m)
                .process(create_then_end_on_request, (name.clone(), marker.clone(), creator_unlinks, theirs));
            p.start().unwrap();
            ours.recv::<()>().unwrap();
            if !creator_unlinks {
                // An attacher's unlink: the creator's tracker still has it registered.
                SharedMemory::open(&name).unwrap().unlink().unwrap();
            }
            assert!(!exists(&name));
            let again = SharedMemory::builder().track(false).create_named(&name, 16).unwrap();
            ours.send(&()).unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
            assert!(eventually(CLEANUP, || !exists(&marker)), "the marker was not unlinked");
            assert!(exists(&name), "a stranger's segment was unlinked (creator unlinked: {creator_unlinks})");
            again.unlink().unwrap();
        }
    }
}

/// 300 create and unlink cycles, tracked, leave no `/dev/shm` entry and no descriptor behind.
#[test]
fn create_unlink_cycles_leave_nothing() {
    guarded(|| {
        let prefix = unique("cyc");
        let _cleanup = Cleanup((0..300).map(|i| format!("{prefix}_{i}")).collect());
        // The tracker's socket is made by the first creation: count from after it.
        SharedMemory::create(8).unwrap().unlink().unwrap();
        let before = __private::open_fds().unwrap().len();
        for i in 0..300 {
            let shm = SharedMemory::create_named(&format!("{prefix}_{i}"), 4096).unwrap();
            shm.write_at(0, &[1; 4096]).unwrap();
            shm.unlink().unwrap();
        }
        for _ in 0..300 {
            let shm = ShareableList::new(["x", "y"]).unwrap();
            shm.shm().unlink().unwrap();
        }
        assert_eq!(entries_with_prefix(&prefix), Vec::<String>::new());
        if common::alone_in_process() {
            assert_eq!(__private::open_fds().unwrap().len(), before);
        }
    });
}

/// 300 create and unlink cycles, then 3 segments kept, then waits to be killed.
fn cycles_then_wait(prefix: String, conn: Connection) -> Result<()> {
    for i in 0..300 {
        SharedMemory::create_named(&format!("{prefix}_{i}"), 64)?.unlink()?;
    }
    let _kept: Vec<SharedMemory> =
        (0..3).map(|i| SharedMemory::create_named(&format!("{prefix}_kept{i}"), 64)).collect::<Result<_>>()?;
    conn.send(&__private::tracker_pid())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    /// The same after 300 cycles in a child that is then killed holding 3 segments: all gone,
    /// and the tracker, its parent's, lives on.
    fn cycles_then_sigkill_leave_nothing(m) {
        let prefix = unique(&format!("kc{m}"));
        let mut names: Vec<String> = (0..300).map(|i| format!("{prefix}_{i}")).collect();
        names.extend((0..3).map(|i| format!("{prefix}_kept{i}")));
        let _cleanup = Cleanup(names);
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(cycles_then_wait, (prefix.clone(), theirs));
        p.start().unwrap();
        let tracker = ours.recv::<Option<u32>>().unwrap().unwrap();
        assert_eq!(entries_with_prefix(&prefix).len(), 3);
        p.kill().unwrap();
        p.join().unwrap();
        assert!(eventually(CLEANUP, || entries_with_prefix(&prefix).is_empty()), "{:?}", entries_with_prefix(&prefix));
        assert_eq!(Some(tracker), __private::tracker_pid());
        assert!(pid_alive(tracker), "the tracker ended with the child");
    }
}

/// Creates `first`, kills its tracker (its parent's), creates `second` (which starts a new
/// tracker, told about `first` too), reports both trackers' pids, then waits to be killed.
fn outlive_own_tracker(first: String, second: String, conn: Connection) -> Result<()> {
    let _a = SharedMemory::create_named(&first, 8)?;
    let old = __private::tracker_pid().unwrap_or(0);
    // SAFETY: kill sends a signal to our tracker, whose pid we were just told.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    while std::fs::read_to_string(format!("/proc/{old}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _b = SharedMemory::create_named(&second, 8)?;
    conn.send(&(old, __private::tracker_pid().unwrap_or(0)))?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// A tracker killed by hand is replaced on the next creation, and the new one is told about
/// the segments registered before: both are unlinked when the creator is killed. The killed
/// one was the parent's, its child: the parent reaps it and starts another when it next needs
/// one. (Alone in its process: it kills the tracker the tests beside it share.)
fn killed_tracker_is_replaced_and_told_everything(m: StartMethod) {
    let mut cleanup = Cleanup::new();
    let first = cleanup.add(unique(&format!("f{m}")));
    let second = cleanup.add(unique(&format!("s{m}")));
    let (ours, theirs) = pipe().unwrap();
    let mut p = get_context(m).process(outlive_own_tracker, (first.clone(), second.clone(), theirs));
    p.start().unwrap();
    let parents = __private::tracker_pid().expect("the parent started a tracker for its child");
    let (old, new) = ours.recv::<(u32, u32)>().unwrap();
    assert_eq!(old, parents);
    assert_ne!(new, 0);
    assert_ne!(old, new);
    assert!(exists(&first) && exists(&second));
    p.kill().unwrap();
    p.join().unwrap();
    assert!(eventually(CLEANUP, || !exists(&first) && !exists(&second)), "segments left behind");
    assert!(eventually(CLEANUP, || !pid_alive(new)), "the new tracker did not exit");
    // The parent notices its tracker is gone when it next uses it: it reaps it and starts
    // another, which the next child shares.
    let mine = SharedMemory::create(8).unwrap();
    cleanup.add(mine.name().to_string());
    let replaced = tracker_pid();
    assert_ne!(replaced, old);
    assert!(
        common::children_of(std::process::id()).iter().all(|(pid, _)| *pid != old),
        "the old tracker was not reaped"
    );
    mine.unlink().unwrap();
}

mod killed_tracker_is_replaced {
    use super::*;
    #[test]
    fn fork() {
        isolated("killed_tracker_is_replaced::fork", || {
            run_case(StartMethod::Fork, killed_tracker_is_replaced_and_told_everything)
        });
    }
    #[test]
    fn spawn() {
        isolated("killed_tracker_is_replaced::spawn", || {
            run_case(StartMethod::Spawn, killed_tracker_is_replaced_and_told_everything)
        });
    }
    #[test]
    fn forkserver() {
        isolated("killed_tracker_is_replaced::forkserver", || {
            run_case(StartMethod::ForkServer, killed_tracker_is_replaced_and_told_everything)
        });
    }
}

/// The tracker is a child of the process that started it (which reaps it if it dies: see
/// `killed_tracker_is_replaced`), never an orphan that a non-reaping PID 1 would keep as a
/// zombie, and it runs in a session of its own. It lives as long as the tree does.
#[test]
fn tracker_is_a_child_of_its_starter_in_its_own_session() {
    guarded(|| {
        let shm = SharedMemory::create(8).unwrap();
        let _cleanup = Cleanup(vec![shm.name().to_string()]);
        let tracker = tracker_pid();
        assert!(pid_alive(tracker));
        assert_eq!(ppid_of(tracker), Some(std::process::id()));
        // SAFETY: getsid only reads.
        let (theirs, ours) = unsafe { (libc::getsid(tracker as i32), libc::getsid(0)) };
        assert_eq!(theirs, tracker as i32);
        assert_ne!(theirs, ours);
        shm.unlink().unwrap();
    });
}

/// Creates an untracked segment and reports the tracker it has.
fn untracked_only(name: String, conn: Connection) -> Result<()> {
    let shm = SharedMemory::builder().track(false).create_named(&name, 8)?;
    conn.send(&__private::tracker_pid())?;
    shm.unlink()
}

start_methods! {
    /// A child that creates only untracked segments (or only attaches) has its parent's
    /// tracker, and starts none of its own.
    fn untracked_creation_starts_no_tracker(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("nt{m}")));
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(untracked_only, (name.clone(), theirs));
        p.start().unwrap();
        let tracker = ours.recv::<Option<u32>>().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(tracker, __private::tracker_pid());
        assert!(tracker.is_some());
        assert!(!exists(&name));
    }
}

/// A process that starts no child and creates only untracked segments (or only attaches)
/// starts no tracker at all.
#[test]
fn untracked_creation_alone_starts_no_tracker() {
    isolated("untracked_creation_alone_starts_no_tracker", || {
        let name = unique("ntalone");
        let _cleanup = Cleanup(vec![name.clone()]);
        let shm = SharedMemory::builder().track(false).create_named(&name, 8).unwrap();
        let again = SharedMemory::open(&name).unwrap();
        drop(again);
        assert_eq!(__private::tracker_pid(), None);
        shm.unlink().unwrap();
        assert_eq!(__private::tracker_pid(), None);
    });
}

/// Sleeps for a minute (a grandchild that outlives its parent).
fn sleeper() {
    std::thread::sleep(Duration::from_secs(60));
}

/// Creates `name`, starts a fork child that outlives it, reports the child's pid, waits.
fn create_and_fork(name: String, conn: Connection) -> Result<()> {
    let _shm = SharedMemory::create_named(&name, 8)?;
    let mut g = get_context(StartMethod::Fork).process(sleeper, ());
    g.start()?;
    conn.send(&g.pid())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

/// Kills `pid` (not our child: no reaping) when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill sends a signal; the pid is the grandchild's, alive or already gone.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

start_methods! {
    /// A fork child shares its parent's tracker, which still watches each process on its own:
    /// when the creator is killed while its fork child lives on, the creator's segment is
    /// unlinked at once, not when the child ends.
    fn fork_grandchild_does_not_delay_cleanup(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("gc{m}")));
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(create_and_fork, (name.clone(), theirs));
        p.start().unwrap();
        let grandchild = ours.recv::<Option<u32>>().unwrap().unwrap();
        let _kill = KillOnDrop(grandchild);
        p.kill().unwrap();
        p.join().unwrap();
        assert!(eventually(CLEANUP, || !exists(&name)), "{name} was not unlinked while the fork child lives");
        assert!(pid_alive(grandchild));
    }
}
