//! More of `multiprocessing.shared_memory`: CONFORMANCE.md SHM-08, open-or-create. Every test
//! names its segments after its pid and unlinks them even when it fails.
mod common;
use common::{Cleanup, eventually_within, guarded};
use multiprocess::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(10);

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mpsm_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// SHM-08: open-or-create on a name that exists attaches with the existing size, whatever
/// size was asked (CPython: the class with `_flags = O_CREAT | O_RDWR`); it neither truncates
/// nor grows the segment, and writes are seen both ways. On a missing name it creates the
/// segment with the size asked. A leading `/` is accepted; a size of 0 or a malformed name
/// is `InvalidArgument`.
#[test]
fn shm_08_open_or_create() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("oc"));
        let shm = SharedMemory::create_named(&name, 512).unwrap();
        shm.write_at(0, b"first").unwrap();
        for asked in [100, 512, 4096] {
            let same = SharedMemory::open_or_create(&name, asked).unwrap();
            assert_eq!(same.size(), 512);
            assert_eq!(same.name(), name);
            let mut buf = [0u8; 5];
            same.read_at(0, &mut buf).unwrap();
            assert_eq!(&buf, b"first");
        }
        let slashed = SharedMemory::open_or_create(&format!("/{name}"), 8).unwrap();
        slashed.write_at(511, &[9]).unwrap();
        let mut last = [0u8];
        shm.read_at(511, &mut last).unwrap();
        assert_eq!(last, [9]);
        assert_eq!(SharedMemory::open(&name).unwrap().size(), 512);
        shm.unlink().unwrap();

        let fresh = cleanup.add(unique("oc_new"));
        let made = SharedMemory::open_or_create(&fresh, 64).unwrap();
        assert_eq!(made.size(), 64);
        assert!(exists(&fresh));
        made.unlink().unwrap();

        assert!(matches!(SharedMemory::open_or_create(&unique("zero"), 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(SharedMemory::open_or_create("a/b", 8), Err(Error::InvalidArgument(_))));
        assert!(matches!(SharedMemory::open_or_create("bad\0name", 8), Err(Error::InvalidArgument(_))));
    });
}

/// Open-or-creates `name`, reports, then waits to be killed.
fn open_or_create_and_wait(name: String, track: bool, conn: Connection) -> Result<()> {
    let _shm = SharedMemory::builder().track(track).open_or_create(&name, 64)?;
    conn.send(&())?;
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}

start_methods! {
    /// SHM-08's ownership: a process whose open-or-create made the segment is its creator, and
    /// its resource tracker unlinks it when the process is killed (unless `track(false)`); a
    /// process whose open-or-create attached to an existing segment merely attached, and its
    /// death leaves the segment alone.
    fn shm_08_open_or_create_owns_only_what_it_made(m) {
        let mut cleanup = Cleanup::new();
        let made = cleanup.add(unique(&format!("made{m}")));
        let untracked = cleanup.add(unique(&format!("untr{m}")));
        let existing = cleanup.add(unique(&format!("ex{m}")));
        let theirs_before = SharedMemory::create_named(&existing, 128).unwrap();
        let mut children = Vec::new();
        for (name, track) in [(&made, true), (&untracked, false), (&existing, true)] {
            let (ours, theirs) = pipe().unwrap();
            let p = common::start(m, open_or_create_and_wait, (name.clone(), track, theirs));
            ours.recv::<()>().unwrap();
            children.push(p);
        }
        for p in &mut children {
            p.kill().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
        }
        assert!(eventually_within(SETTLE, || !exists(&made)), "the segment a killed process made was left");
        assert!(exists(&untracked), "an untracked segment was unlinked");
        assert!(exists(&existing), "a segment the killed process only attached to was unlinked");
        SharedMemory::open(&untracked).unwrap().unlink().unwrap();
        theirs_before.unlink().unwrap();
    }
}

/// Waits for the start signal, open-or-creates `name`, writes its index at its offset, and
/// waits for the parent's word to end.
fn race_open_or_create(name: String, index: u8, go: Event, conn: Connection) -> Result<()> {
    if !go.wait(Some(Duration::from_secs(30))) {
        return Err(Error::Timeout);
    }
    let shm = SharedMemory::builder().track(false).open_or_create(&name, 4096)?;
    shm.write_at(index as usize, &[index])?;
    conn.send(&shm.size())?;
    conn.recv::<()>()?;
    Ok(())
}

/// SHM-08 under contention: processes of every start method and this one open-or-create the
/// same fresh name at the same moment; exactly one segment results, every one of them maps it
/// with the size asked, and each sees what all the others wrote.
#[test]
fn shm_08_open_or_create_race() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        for round in 0..5 {
            let name = cleanup.add(unique(&format!("race{round}")));
            let go = Event::new().unwrap();
            let mut children = Vec::new();
            for (i, m) in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer, StartMethod::Fork]
                .into_iter()
                .enumerate()
            {
                let (ours, theirs) = pipe().unwrap();
                let p = common::start(m, race_open_or_create, (name.clone(), i as u8 + 1, go.clone(), theirs));
                children.push((p, ours));
            }
            go.set();
            let shm = SharedMemory::builder().track(false).open_or_create(&name, 4096).unwrap();
            shm.write_at(0, &[100]).unwrap();
            for (_, conn) in &children {
                assert_eq!(conn.recv::<usize>().unwrap(), 4096);
            }
            let mut seen = [0u8; 5];
            shm.read_at(0, &mut seen).unwrap();
            assert_eq!(seen, [100, 1, 2, 3, 4]);
            for (mut p, conn) in children {
                conn.send(&()).unwrap();
                common::join_ok(&mut p);
            }
            shm.unlink().unwrap();
        }
    });
}

/// SHM-08 against a creator caught between making the name and sizing it (done here by hand,
/// with `shm_open` and a late `ftruncate`): open-or-create waits for the size and attaches
/// with it; a name that stays empty is `InvalidArgument` after about a second, and is not
/// taken over.
#[test]
fn shm_08_open_or_create_waits_for_a_creator_to_size() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("unsized"));
        let path = std::ffi::CString::new(format!("/{name}")).unwrap();
        // SAFETY: shm_open reads a NUL-terminated name and returns a new descriptor we own.
        let fd = unsafe { libc::shm_open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600) };
        assert!(fd >= 0);
        // SAFETY: `fd` is ours, from above.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let (r, took) = common::timed(|| SharedMemory::open_or_create(&name, 64));
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
        assert_eq!(std::fs::metadata(format!("/dev/shm/{name}")).unwrap().len(), 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                // SAFETY: ftruncate on the descriptor we own.
                assert_eq!(unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), 300) }, 0);
            });
            let shm = SharedMemory::open_or_create(&name, 64).unwrap();
            assert_eq!(shm.size(), 300);
        });
        SharedMemory::open(&name).unwrap().unlink().unwrap();
    });
}

/// The memory a segment holds in `/dev/shm` now, in bytes.
fn allocated(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(std::path::Path::new("/dev/shm").join(name)).unwrap().blocks() * 512
}

/// A segment is allocated whole at creation by default; `sparse(true)` leaves its pages to
/// be allocated as they are first written (CPython's way), yet still refuses a size past the
/// free space at once.
#[test]
fn sparse_segments_allocate_as_written() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        const SIZE: usize = 4 << 20;
        let whole = cleanup.add(unique("whole"));
        let shm = SharedMemory::builder().track(false).create_named(&whole, SIZE).unwrap();
        assert!(allocated(&whole) >= SIZE as u64, "{} bytes allocated", allocated(&whole));
        let sparse = cleanup.add(unique("sparse"));
        let thin = SharedMemory::builder().track(false).sparse(true).create_named(&sparse, SIZE).unwrap();
        assert_eq!(allocated(&sparse), 0);
        thin.write_at(SIZE - 3, b"end").unwrap();
        let used = allocated(&sparse);
        assert!(used > 0 && used < SIZE as u64 / 2, "{used} bytes allocated after one write");
        let mut end = [0u8; 3];
        thin.read_at(SIZE - 3, &mut end).unwrap();
        assert_eq!(&end, b"end");
        let huge = usize::try_from(u64::MAX >> 2).unwrap();
        let err = SharedMemory::builder().sparse(true).create(huge).unwrap_err();
        assert!(matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull), "{err:?}");
        shm.unlink().unwrap();
        thin.unlink().unwrap();
    });
}

fn read_then_write(q: Queue<SharedMemory>, lists: Queue<ShareableList>, conn: Connection) -> Result<()> {
    let shm = q.get()?;
    let mut hi = [0u8; 2];
    shm.read_at(0, &mut hi)?;
    assert_eq!(&hi, b"hi");
    shm.write_at(0, b"yo")?;
    let list = lists.get()?;
    list.set(0, shared_memory::Item::Int(7))?;
    let piped: SharedMemory = conn.recv()?;
    piped.write_at(2, b"!")?;
    conn.send(&"done".to_string())
}

start_methods! {
    /// A `SharedMemory` or a `ShareableList` put in a queue, or sent over a connection,
    /// travels as its name, as CPython pickles it: the receiver attaches to the same memory.
    fn shared_memory_through_a_queue_and_a_pipe(m) {
        let mut cleanup = Cleanup::new();
        let shm = SharedMemory::create(64).unwrap();
        cleanup.add(shm.name().to_string());
        shm.write_at(0, b"hi").unwrap();
        let list = ShareableList::new(vec![shared_memory::Item::Int(1)]).unwrap();
        cleanup.add(list.shm().name().to_string());
        let q = Queue::new().unwrap();
        let lists = Queue::new().unwrap();
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(read_then_write, (q.clone(), lists.clone(), theirs));
        p.start().unwrap();
        q.put(shm.clone()).unwrap();
        lists.put(list.clone()).unwrap();
        ours.send(&shm).unwrap();
        assert_eq!(ours.recv::<String>().unwrap(), "done");
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        let mut got = [0u8; 3];
        shm.read_at(0, &mut got).unwrap();
        assert_eq!(&got, b"yo!");
        assert_eq!(list.get(0).unwrap(), shared_memory::Item::Int(7));
        shm.unlink().unwrap();
        list.shm().unlink().unwrap();
    }
}

/// A segment unlinked before its name is taken from a queue cannot be attached: `get` is
/// `Err(Codec)` naming it, and the queue goes on.
#[test]
fn shared_memory_unlinked_before_get() {
    guarded(|| {
        let q: Queue<SharedMemory> = Queue::new().unwrap();
        let shm = SharedMemory::create(8).unwrap();
        q.put(shm.clone()).unwrap();
        shm.unlink().unwrap();
        match q.get_timeout(Duration::from_secs(5)) {
            Err(Error::Codec(message)) => assert!(message.contains(shm.name()), "{message}"),
            other => panic!("{other:?}"),
        }
        let again = SharedMemory::create(8).unwrap();
        q.put(again.clone()).unwrap();
        assert_eq!(q.get().unwrap().name(), again.name());
        again.unlink().unwrap();
    });
}
