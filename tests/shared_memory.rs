//! Named shared memory: CONFORMANCE.md SHM-01..07, 09..14 and 19..25 (`SharedMemory` and
//! `ShareableList`). Cases with children run under every start method. A handle passed to a
//! child travels as its descriptor (SHM-10's second half, SHM-11, SHM-12, SHM-24): the doc
//! comment of each such case says what that changes. Every test names its segments after its
//! pid and start method and unlinks them even when it fails.
mod common;
use common::{Cleanup, guarded};
use multiprocess::shared_memory::Item;
use multiprocess::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A segment name unique to this process, test and call.
fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("mpt_{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

fn read(shm: &SharedMemory, offset: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    shm.read_at(offset, &mut buf).unwrap();
    buf
}

// ---------------------------------------------------------------------------------------------
// SharedMemory.

/// SHM-01: a named segment of 512 bytes has that name and exactly that size (Linux), and
/// `Debug` is CPython's repr.
#[test]
fn shm_01_basics() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("01"));
        let shm = SharedMemory::create_named(&name, 512).unwrap();
        assert_eq!(shm.name(), name);
        assert_eq!(shm.size(), 512);
        assert_eq!(read(&shm, 0, 512), vec![0u8; 512]);
        assert_eq!(format!("{shm:?}"), format!("SharedMemory('{name}', size=512)"));
        assert_eq!(std::fs::metadata(format!("/dev/shm/{name}")).unwrap().len(), 512);
        shm.unlink().unwrap();
    });
}

/// SHM-02 and SHM-03: a byte written through one handle is seen through another attached by
/// name, both ways; the attached handle has the segment's own size (Rust's `open` takes no
/// size, so CPython's ignored `size=20*size` has no counterpart).
#[test]
fn shm_02_03_attach_sees_writes_and_takes_the_real_size() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("02"));
        let shm = SharedMemory::create_named(&name, 512).unwrap();
        shm.write_at(0, &[42]).unwrap();
        let same = SharedMemory::open(&name).unwrap();
        assert_eq!(read(&same, 0, 1), [42]);
        assert_eq!(read(&shm, 0, 1), [42]);
        same.write_at(511, &[7]).unwrap();
        assert_eq!(read(&shm, 511, 1), [7]);
        assert_eq!(same.size(), 512);
        assert_eq!(same.name(), name);
        shm.unlink().unwrap();
    });
}

/// SHM-04: a size of 0 is `InvalidArgument` with CPython's message (negative sizes and a
/// missing name cannot be written in Rust: `usize`, and `open` needs a name).
#[test]
fn shm_04_size_zero_is_invalid() {
    guarded(|| {
        let name = unique("04");
        for result in [SharedMemory::create(0), SharedMemory::create_named(&name, 0)] {
            match result {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains("'size' must be a positive number different from zero"), "{m}")
                }
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(!exists(&name));
        assert!(matches!(SharedMemory::create(usize::MAX), Err(Error::InvalidArgument(_))));
    });
}

/// SHM-05: creating a name in use is `AlreadyExists(name)`, and the existing segment is left
/// as it was (not truncated, not unlinked).
#[test]
fn shm_05_create_existing_name() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("05"));
        let shm = SharedMemory::create_named(&name, 64).unwrap();
        shm.write_at(0, b"keep").unwrap();
        match SharedMemory::create_named(&name, 128) {
            Err(Error::AlreadyExists(n)) => assert_eq!(n, name),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        match SharedMemory::create_named(&format!("/{name}"), 128) {
            Err(Error::AlreadyExists(n)) => assert_eq!(n, name),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert!(exists(&name));
        let same = SharedMemory::open(&name).unwrap();
        assert_eq!(same.size(), 64);
        assert_eq!(read(&same, 0, 4), b"keep");
        shm.unlink().unwrap();
    });
}

/// SHM-06: attaching to a name that does not exist is `NotFound(name)`.
#[test]
fn shm_06_open_missing_name() {
    guarded(|| {
        let name = unique("06");
        match SharedMemory::open(&name) {
            Err(Error::NotFound(n)) => assert_eq!(n, name),
            other => panic!("expected NotFound, got {other:?}"),
        }
    });
}

/// SHM-07: unlinking twice: the second is `NotFound`; attaching after is `NotFound` too.
#[test]
fn shm_07_unlink_twice() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique("07"));
        let shm = SharedMemory::create_named(&name, 8).unwrap();
        shm.unlink().unwrap();
        assert!(!exists(&name));
        assert!(matches!(shm.unlink(), Err(Error::NotFound(n)) if n == name));
        assert!(matches!(SharedMemory::open(&name), Err(Error::NotFound(_))));
        // The mapping outlives the name.
        shm.write_at(0, b"still").unwrap();
        assert_eq!(read(&shm, 0, 5), b"still");
    });
}

/// SHM-09: when the generated name is taken, creation passes over it and uses the next one;
/// the segment under the taken name is untouched.
#[test]
fn shm_09_generated_name_collision_retries() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let taken = cleanup.add(unique("09a"));
        let next = cleanup.add(unique("09b"));
        let first = SharedMemory::create_named(&taken, 16).unwrap();
        first.write_at(0, b"first").unwrap();
        __private::force_shm_names(vec![taken.clone(), next.clone()]);
        let second = SharedMemory::create(32).unwrap();
        assert_eq!(second.name(), next);
        assert_eq!(second.size(), 32);
        let again = SharedMemory::open(&taken).unwrap();
        assert_eq!(again.size(), 16);
        assert_eq!(read(&again, 0, 5), b"first");
        first.unlink().unwrap();
        second.unlink().unwrap();
    });
}

/// Attaches by name and writes `howdy`.
fn attach_and_write(name: String) -> Result<()> {
    let shm = SharedMemory::open(&name)?;
    shm.write_at(0, b"howdy")
}

/// Writes `HELLO` through the handle it was given.
fn write_through(shm: SharedMemory) -> Result<()> {
    shm.write_at(0, b"HELLO")
}

start_methods! {
    /// SHM-10: a child that attaches by name writes `howdy`; a child given the handle itself
    /// writes `HELLO`; the parent sees both.
    fn shm_10_across_processes(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("10{m}")));
        let shm = SharedMemory::create_named(&name, 64).unwrap();
        let mut p = get_context(m).process(attach_and_write, (name.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(read(&shm, 0, 5), b"howdy");
        let mut p = get_context(m).process(write_through, (shm.clone(),));
        p.start().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(read(&shm, 0, 5), b"HELLO");
        shm.unlink().unwrap();
    }
}

/// The child's half of SHM-11: checks the name and content, writes `newval`, waits, then
/// expects `oldval`.
fn pickle_peer(shm: SharedMemory, name: String, conn: Connection) -> Result<()> {
    let mut buf = [0u8; 6];
    shm.read_at(0, &mut buf)?;
    if shm.name() != name || &buf != b"pickle" || shm.size() != 4096 {
        return Err(Error::InvalidArgument(format!("got {shm:?} holding {buf:?}")));
    }
    shm.write_at(0, b"newval")?;
    conn.send(&())?;
    conn.recv::<()>()?;
    shm.read_at(0, &mut buf)?;
    if &buf != b"oldval" {
        return Err(Error::InvalidArgument(format!("child read {buf:?}")));
    }
    Ok(())
}

start_methods! {
    /// SHM-11, as descriptor passing: a handle sent to a child arrives with the same name and
    /// size and maps the same bytes; writes are seen both ways.
    fn shm_11_handle_travels_to_a_child(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("11{m}")));
        let shm = SharedMemory::create_named(&name, 4096).unwrap();
        shm.write_at(0, b"pickle").unwrap();
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(pickle_peer, (shm.clone(), name.clone(), theirs));
        p.start().unwrap();
        ours.recv::<()>().unwrap();
        assert_eq!(read(&shm, 0, 6), b"newval");
        shm.write_at(0, b"oldval").unwrap();
        ours.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        shm.unlink().unwrap();
    }
}

/// The child's half of SHM-12: the name is gone, the memory is not.
fn reads_after_unlink(shm: SharedMemory, conn: Connection) -> Result<()> {
    conn.recv::<()>()?;
    if !matches!(SharedMemory::open(shm.name()), Err(Error::NotFound(_))) {
        return Err(Error::InvalidArgument("the name should be gone".into()));
    }
    let mut buf = [0u8; 4];
    shm.read_at(0, &mut buf)?;
    if &buf != b"dead" {
        return Err(Error::InvalidArgument(format!("child read {buf:?}")));
    }
    shm.write_at(0, b"live")
}

start_methods! {
    /// SHM-12, deliberately different: a handle sent to a child before its creator closed and
    /// unlinked it still works there (it is the descriptor that travels), where CPython's
    /// unpickling raises FileNotFoundError; attaching by the name is `NotFound`, as in CPython.
    fn shm_12_handle_outlives_unlink_in_the_child(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("12{m}")));
        let mut shm = SharedMemory::create_named(&name, 8).unwrap();
        shm.write_at(0, b"dead").unwrap();
        let witness = shm.clone();
        let (ours, theirs) = pipe().unwrap();
        let mut p = get_context(m).process(reads_after_unlink, (shm.clone(), theirs));
        p.start().unwrap();
        shm.close();
        shm.unlink().unwrap();
        ours.send(&()).unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        assert_eq!(read(&witness, 0, 4), b"live");
    }
}

/// Succeeds if the handle it got is closed.
fn expects_closed(shm: SharedMemory) -> Result<()> {
    match shm.read_at(0, &mut [0u8; 1]) {
        Err(Error::HandleClosed) => Ok(()),
        other => Err(Error::InvalidArgument(format!("expected HandleClosed, got {other:?}"))),
    }
}

start_methods! {
    /// A closed handle cannot be sent to a spawn or forkserver child (there is no descriptor
    /// left to send): `start` fails. A fork child inherits the closed handle as it is.
    fn shm_closed_handle_is_not_sent(m) {
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(unique(&format!("cl{m}")));
        let mut shm = SharedMemory::create_named(&name, 8).unwrap();
        shm.close();
        let mut p = get_context(m).process(expects_closed, (shm.clone(),));
        if m == StartMethod::Fork {
            p.start().unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
        } else {
            assert!(matches!(p.start(), Err(Error::Codec(_))));
        }
        shm.unlink().unwrap();
    }
}

/// SHM-13 and the other malformed names: an embedded NUL, a `/` after the first character,
/// an empty name, `.`, `..` and a name over 255 bytes are `InvalidArgument` for create and
/// attach; 255 bytes is fine.
#[test]
fn shm_13_malformed_names() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let base = unique("13");
        let long = "x".repeat(256);
        for bad in [
            format!("{base}\0a"),
            format!("/{base}\0a"),
            format!("{base}/x"),
            format!("//{base}"),
            String::new(),
            "/".into(),
            ".".into(),
            "..".into(),
            long.clone(),
        ] {
            assert!(matches!(SharedMemory::open(&bad), Err(Error::InvalidArgument(_))), "open {bad:?}");
            assert!(matches!(SharedMemory::create_named(&bad, 8), Err(Error::InvalidArgument(_))), "create {bad:?}");
            assert!(matches!(ShareableList::open(&bad), Err(Error::InvalidArgument(_))), "list {bad:?}");
        }
        assert!(!exists(&base));
        let longest = format!("{base}{}", "y".repeat(255 - base.len()));
        cleanup.add(&longest);
        let shm = SharedMemory::create_named(&longest, 8).unwrap();
        assert_eq!(shm.name().len(), 255);
        shm.unlink().unwrap();
    });
}

/// SHM-14: a generated name is `psm_` and 8 hex digits, without `/`; attaching takes the
/// name with or without `/`; a size of 1 is exactly 1; after `close` the bytes are gone
/// (`HandleClosed`, CPython's `buf is None`) but the name, the size and `unlink` remain.
#[test]
fn shm_14_naming_and_closing() {
    guarded(|| {
        let mut shm = SharedMemory::create(1).unwrap();
        let mut cleanup = Cleanup::new();
        let name = cleanup.add(shm.name());
        assert_eq!(name.len(), 12);
        assert!(name.starts_with("psm_"));
        assert!(name[4..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{name}");
        assert_eq!(shm.size(), 1);
        shm.write_at(0, &[9]).unwrap();
        for form in [name.clone(), format!("/{name}")] {
            let same = SharedMemory::open(&form).unwrap();
            assert_eq!(same.name(), name);
            assert_eq!(read(&same, 0, 1), [9]);
        }
        shm.close();
        shm.close();
        assert!(shm.is_closed());
        assert!(matches!(shm.read_at(0, &mut [0]), Err(Error::HandleClosed)));
        assert!(matches!(shm.write_at(0, &[1]), Err(Error::HandleClosed)));
        assert!(matches!(shm.as_ptr(), Err(Error::HandleClosed)));
        // SAFETY: no slice is made: the handle is closed.
        assert!(matches!(unsafe { shm.as_slice() }, Err(Error::HandleClosed)));
        assert_eq!(shm.size(), 1);
        assert_eq!(shm.name(), name);
        shm.unlink().unwrap();
        assert!(!exists(&name));
    });
}

/// Reads and writes are bounds-checked: a range past the end, or one whose end overflows, is
/// `IndexOutOfRange` naming its first byte outside; an empty range at the end is fine.
#[test]
fn shm_bounds_are_checked() {
    guarded(|| {
        let shm = SharedMemory::create(16).unwrap();
        let _cleanup = Cleanup(vec![shm.name().to_string()]);
        let mut buf = [0u8; 8];
        assert!(matches!(shm.read_at(10, &mut buf), Err(Error::IndexOutOfRange { index: 16, len: 16 })));
        assert!(matches!(shm.write_at(17, &[]), Err(Error::IndexOutOfRange { index: 17, len: 16 })));
        assert!(matches!(shm.write_at(usize::MAX, &buf), Err(Error::IndexOutOfRange { .. })));
        assert!(matches!(shm.read_at(usize::MAX - 2, &mut buf), Err(Error::IndexOutOfRange { .. })));
        shm.write_at(16, &[]).unwrap();
        shm.write_at(8, &[1; 8]).unwrap();
        assert_eq!(read(&shm, 0, 16), [[0u8; 8], [1u8; 8]].concat());
        // Nothing was written by the refused calls.
        shm.unlink().unwrap();
    });
}

/// Unaligned reads and writes of every length keep their neighbours intact.
#[test]
fn shm_unaligned_ranges() {
    guarded(|| {
        let shm = SharedMemory::create(64).unwrap();
        let _cleanup = Cleanup(vec![shm.name().to_string()]);
        for offset in 0..24 {
            for len in 0..=24 {
                shm.write_at(0, &[0xEE; 64]).unwrap();
                let data: Vec<u8> = (1..=len as u8).collect();
                shm.write_at(offset, &data).unwrap();
                let all = read(&shm, 0, 64);
                assert_eq!(&all[offset..offset + len], &data[..]);
                assert!(all[..offset].iter().chain(&all[offset + len..]).all(|&b| b == 0xEE));
            }
        }
        shm.unlink().unwrap();
    });
}

/// Clones share the mapping: closing one leaves the others working.
#[test]
fn shm_clones_share_the_mapping() {
    guarded(|| {
        let mut shm = SharedMemory::create(8).unwrap();
        let _cleanup = Cleanup(vec![shm.name().to_string()]);
        let other = shm.clone();
        shm.write_at(0, b"x").unwrap();
        shm.close();
        assert_eq!(read(&other, 0, 1), b"x");
        other.unlink().unwrap();
        assert!(matches!(shm.unlink(), Err(Error::NotFound(_))));
    });
}

/// `read_at` and `write_at` race freely between threads without tearing an aligned word:
/// each word read holds one writer's pattern whole.
#[test]
fn shm_concurrent_access_is_word_atomic() {
    guarded(|| {
        let shm = SharedMemory::create(4096).unwrap();
        let _cleanup = Cleanup(vec![shm.name().to_string()]);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = [0x11u8, 0x22]
            .into_iter()
            .map(|byte| {
                let shm = shm.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let block = [byte; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        shm.write_at(0, &block).unwrap();
                    }
                })
            })
            .collect();
        let mut buf = vec![0u8; 4096];
        for _ in 0..2000 {
            shm.read_at(0, &mut buf).unwrap();
            for word in buf.chunks(8) {
                assert!(word.iter().all(|&b| b == word[0]), "torn word {word:?}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        shm.unlink().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// ShareableList.

fn sample() -> Vec<Item> {
    vec!["howdy".into(), b"HoWdY".into(), (-273.154).into(), 100.into(), Item::None, true.into(), 42.into()]
}

/// SHM-19: CPython's sample list: length, items, `index`, out-of-range access, and a `Debug`
/// that is CPython's repr (the items and the name). Python's `sl[-2]` is `get(len - 2)`.
#[test]
fn shm_19_shareable_list_basics() {
    guarded(|| {
        let sl = ShareableList::new(sample()).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        assert_eq!(
            format!("{sl:?}"),
            format!("ShareableList(['howdy', b'HoWdY', -273.154, 100, None, True, 42], name='{}')", sl.name())
        );
        assert_eq!(sl.len(), 7);
        assert!(matches!(sl.get(7), Err(Error::IndexOutOfRange { index: 7, len: 7 })));
        assert!(matches!(sl.set(7, 2), Err(Error::IndexOutOfRange { index: 7, len: 7 })));
        assert!(matches!(sl.index(&"100".into()), Err(Error::InvalidArgument(_))));
        assert_eq!(sl.index(&100.into()).unwrap(), 3);
        assert_eq!(sl.get(0).unwrap(), Item::Str("howdy".into()));
        assert_eq!(sl.get(sl.len() - 2).unwrap(), Item::Bool(true));
        assert_eq!(sl.to_vec().unwrap(), sample());
        // The segment holds the header, 7 slots of 16 bytes and 7 values of 8.
        assert_eq!(sl.shm().size(), 32 + 7 * 16 + 7 * 8);
        sl.shm().unlink().unwrap();
    });
}

/// SHM-20 and SHM-21: replacing items, a None slot taking a short str, values too long for
/// their slot refused with the old value kept, 8 bytes of UTF-8 fitting an 8-byte slot with no
/// spill into the next; then `count`.
#[test]
fn shm_20_21_mutation_and_count() {
    guarded(|| {
        let sl = ShareableList::new(sample()).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        sl.set(3, 42).unwrap();
        assert_eq!(sl.get(3).unwrap(), Item::Int(42));
        sl.set(4, "some").unwrap();
        assert_eq!(sl.get(4).unwrap(), Item::from("some"));
        match sl.set(4, "far too many") {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("exceeds available storage"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(sl.get(4).unwrap(), Item::from("some"));
        sl.set(0, "encodés").unwrap();
        assert_eq!("encodés".len(), 8);
        assert_eq!(sl.get(0).unwrap(), Item::from("encodés"));
        assert_eq!(sl.get(1).unwrap(), Item::from(b"HoWdY"));
        assert!(matches!(sl.set(0, "encodées"), Err(Error::InvalidArgument(_))));
        assert!(matches!(sl.set(1, b"123456789"), Err(Error::InvalidArgument(_))));
        assert_eq!(sl.get(0).unwrap(), Item::from("encodés"));
        assert_eq!(sl.get(1).unwrap(), Item::from(b"HoWdY"));
        // SHM-21.
        assert_eq!(sl.count(&42.into()).unwrap(), 2);
        assert_eq!(sl.count(&b"HoWdY".into()).unwrap(), 1);
        assert_eq!(sl.count(&b"adios".into()).unwrap(), 0);
        sl.shm().unlink().unwrap();
    });
}

/// SHM-22: a copy into a new named segment is equal but independent; a list attached by name
/// shares its items.
#[test]
fn shm_22_copy_and_attach() {
    guarded(|| {
        let mut cleanup = Cleanup::new();
        let sl = ShareableList::new(sample()).unwrap();
        cleanup.add(sl.name());
        let name = cleanup.add(unique("22"));
        let copy = ShareableList::new_named(&name, sl.to_vec().unwrap()).unwrap();
        assert_eq!(copy.name(), name);
        assert_ne!(copy.name(), sl.name());
        assert_eq!(copy.to_vec().unwrap(), sl.to_vec().unwrap());
        assert_eq!(copy.shm().size(), sl.shm().size());
        copy.set(0, "other").unwrap();
        assert_eq!(sl.get(0).unwrap(), Item::from("howdy"));
        let tethered = ShareableList::open(sl.name()).unwrap();
        assert_eq!(tethered.name(), sl.name());
        tethered.set(3, 880).unwrap();
        assert_eq!(sl.get(3).unwrap(), Item::Int(880));
        assert_eq!(tethered.to_vec().unwrap(), sl.to_vec().unwrap());
        assert!(matches!(ShareableList::new_named(&name, [1]), Err(Error::AlreadyExists(_))));
        sl.shm().unlink().unwrap();
        copy.shm().unlink().unwrap();
    });
}

/// SHM-23: the empty list.
#[test]
fn shm_23_empty_list() {
    guarded(|| {
        let sl = ShareableList::new(Vec::<Item>::new()).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        assert_eq!(sl.len(), 0);
        assert!(sl.is_empty());
        assert_eq!(sl.count(&"any".into()).unwrap(), 0);
        assert!(matches!(sl.index(&Item::None), Err(Error::InvalidArgument(_))));
        assert!(matches!(sl.get(0), Err(Error::IndexOutOfRange { index: 0, len: 0 })));
        let same = ShareableList::open(sl.name()).unwrap();
        assert_eq!(same.to_vec().unwrap(), vec![]);
        assert_eq!(format!("{sl:?}"), format!("ShareableList([], name='{}')", sl.name()));
        sl.shm().unlink().unwrap();
    });
}

/// The child's half of SHM-24: checks the list, writes `changed`, waits, expects `newvalue`.
fn list_peer(sl: ShareableList, n: i64, conn: Connection) -> Result<()> {
    let expected: Vec<Item> = (0..n).map(Item::Int).collect();
    if sl.to_vec()? != expected {
        return Err(Error::InvalidArgument("the child saw another list".into()));
    }
    sl.set(0, "changed")?;
    conn.send(&())?;
    conn.recv::<()>()?;
    if sl.get(1)? != Item::from("newvalue") {
        return Err(Error::InvalidArgument(format!("child read {:?}", sl.get(1)?)));
    }
    Ok(())
}

start_methods! {
    /// SHM-24, as descriptor passing: lists of 10 and 400 items sent to a child are live views
    /// of the same segment, both ways. After the name is unlinked, attaching by it is
    /// `NotFound`. (CPython's "same pickled size" has no counterpart: a list travels as a
    /// descriptor and its name whatever its length.)
    fn shm_24_list_travels_to_a_child(m) {
        for n in [10i64, 400] {
            let sl = ShareableList::new(0..n).unwrap();
            let _cleanup = Cleanup(vec![sl.name().to_string()]);
            let (ours, theirs) = pipe().unwrap();
            let mut p = get_context(m).process(list_peer, (sl.clone(), n, theirs));
            p.start().unwrap();
            ours.recv::<()>().unwrap();
            assert_eq!(sl.get(0).unwrap(), Item::from("changed"));
            sl.set(1, "newvalue").unwrap();
            ours.send(&()).unwrap();
            p.join().unwrap();
            assert_eq!(p.exitcode(), Some(0));
            sl.shm().unlink().unwrap();
            assert!(matches!(ShareableList::open(sl.name()), Err(Error::NotFound(_))));
            assert_eq!(sl.get(1).unwrap(), Item::from("newvalue"));
        }
    }
}

/// SHM-25, deliberately different: NUL bytes, trailing or not, and multi-byte UTF-8 come back
/// exactly (CPython strips trailing NULs, gh-106939, and corrupts UTF-8 cut at a slot's end,
/// gh-145261). An unsupported element type cannot be written: `Item` is closed.
#[test]
fn shm_25_nul_bytes_and_utf8_survive() {
    guarded(|| {
        let items: Vec<Item> = vec![
            "a\0\0".into(),
            b"b\0".into(),
            "\0".into(),
            b"\0\0\0\0\0\0\0\0\0".into(),
            "ü€😀".into(),
            "".into(),
            b"".into(),
        ];
        let sl = ShareableList::new(items.clone()).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        assert_eq!(sl.to_vec().unwrap(), items);
        assert_eq!(ShareableList::open(sl.name()).unwrap().to_vec().unwrap(), items);
        // "é" is 2 bytes: 7 of them fill a 16-byte slot (made for 9 bytes) but for 2.
        sl.set(3, "ééééééé").unwrap();
        assert_eq!(sl.get(3).unwrap(), Item::from("ééééééé"));
        sl.set(3, "😀😀😀😀").unwrap();
        assert_eq!(sl.get(3).unwrap(), Item::from("😀😀😀😀"));
        assert!(matches!(sl.set(3, "😀😀😀😀x"), Err(Error::InvalidArgument(_))));
        sl.set(5, "\0\0\0\0\0\0\0\0").unwrap();
        assert_eq!(sl.get(5).unwrap(), Item::from("\0\0\0\0\0\0\0\0"));
        assert_eq!(sl.get(6).unwrap(), Item::Bytes(vec![]));
        sl.shm().unlink().unwrap();
    });
}

/// Every item type goes in and out, and any slot takes any fixed-size value.
#[test]
fn shm_list_every_type_round_trips() {
    guarded(|| {
        let sl = ShareableList::new([Item::Int(i64::MIN), Item::Float(f64::MAX), false.into(), Item::None]).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        assert_eq!(sl.get(0).unwrap(), Item::Int(i64::MIN));
        assert_eq!(sl.get(1).unwrap(), Item::Float(f64::MAX));
        assert_eq!(sl.get(2).unwrap(), Item::Bool(false));
        sl.set(3, f64::NAN).unwrap();
        assert!(matches!(sl.get(3).unwrap(), Item::Float(v) if v.is_nan()));
        sl.set(3, "12345678").unwrap();
        sl.set(0, b"bytes".as_slice()).unwrap();
        sl.set(1, Some(7)).unwrap();
        sl.set(2, ()).unwrap();
        assert_eq!(sl.to_vec().unwrap(), vec![Item::from(b"bytes"), Item::Int(7), Item::None, Item::from("12345678")]);
        sl.shm().unlink().unwrap();
    });
}

/// Garbage written into a list's segment by another process gives errors, never a panic or a
/// read out of bounds: bad type tags, lengths past the slot, invalid UTF-8, a bool of 2, and
/// headers whose count, capacities or magic are wrong.
#[test]
fn shm_list_garbage_is_an_error() {
    guarded(|| {
        let sl = ShareableList::new(["abc", "defgh"]).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        let shm = sl.shm();
        let meta = |i: usize| 32 + 16 * i;
        let set_word = |at: usize, v: u64| shm.write_at(at, &v.to_le_bytes()).unwrap();
        let str_meta = |len: u64| (4u64 << 56) | len;
        // Tag 0, 7 and 255: unknown.
        for tag in [0u64, 7, 255] {
            set_word(meta(0), tag << 56);
            assert!(matches!(sl.get(0), Err(Error::Codec(_))), "tag {tag}");
            assert!(matches!(sl.to_vec(), Err(Error::Codec(_))));
            assert!(matches!(sl.count(&Item::None), Err(Error::Codec(_))));
        }
        // A length past the slot's 8 bytes, and a huge one.
        for len in [9, 1 << 55] {
            set_word(meta(0), str_meta(len));
            assert!(matches!(sl.get(0), Err(Error::Codec(_))), "len {len}");
        }
        // Invalid UTF-8.
        shm.write_at(64, &[0xff, 0xfe, 0xfd]).unwrap();
        set_word(meta(0), str_meta(3));
        assert!(matches!(sl.get(0), Err(Error::Codec(_))));
        // A bool that is neither 0 nor 1.
        set_word(meta(0), 3 << 56);
        set_word(64, 2);
        assert!(matches!(sl.get(0), Err(Error::Codec(_))));
        // Still writable, and the other item untouched.
        sl.set(0, "fixed").unwrap();
        assert_eq!(sl.to_vec().unwrap(), vec![Item::from("fixed"), Item::from("defgh")]);
        // Headers: count, capacities, magic. Attaching checks them; the open list keeps its copy.
        set_word(16, u64::MAX);
        assert!(matches!(ShareableList::open(sl.name()), Err(Error::Codec(_))));
        set_word(16, 3);
        assert!(matches!(ShareableList::open(sl.name()), Err(Error::Codec(_))));
        set_word(16, 2);
        for capacity in [0u64, 7, 12, 1 << 40, u64::MAX] {
            set_word(meta(1) + 8, capacity);
            assert!(matches!(ShareableList::open(sl.name()), Err(Error::Codec(_))), "capacity {capacity}");
        }
        set_word(meta(1) + 8, 8);
        assert_eq!(ShareableList::open(sl.name()).unwrap().to_vec().unwrap(), sl.to_vec().unwrap());
        set_word(0, 0);
        assert!(matches!(ShareableList::open(sl.name()), Err(Error::Codec(_))));
        assert_eq!(sl.get(1).unwrap(), Item::from("defgh"));
        // A segment too small to be a list.
        let tiny = SharedMemory::create(8).unwrap();
        let _cleanup_tiny = Cleanup(vec![tiny.name().to_string()]);
        assert!(matches!(ShareableList::open(tiny.name()), Err(Error::Codec(_))));
        tiny.unlink().unwrap();
        sl.shm().unlink().unwrap();
    });
}

/// A lock word left holding the pid of a process that is gone does not block the list: the
/// next access takes it over at once.
#[test]
fn shm_list_lock_of_a_dead_holder_is_taken_over() {
    guarded(|| {
        let sl = ShareableList::new([1, 2]).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        let mut p = Process::new(|| (), ());
        p.start().unwrap();
        p.join().unwrap();
        let dead = p.pid().unwrap();
        sl.shm().write_at(8, &dead.to_ne_bytes()).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(sl.get(0).unwrap(), Item::Int(1));
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        sl.set(1, 5).unwrap();
        assert_eq!(sl.to_vec().unwrap(), vec![Item::Int(1), Item::Int(5)]);
        sl.shm().unlink().unwrap();
    });
}

/// Sets item 0 to one of two 15-byte strings, alternately, `rounds` times.
fn flip_flop(sl: ShareableList, rounds: usize) -> Result<()> {
    for i in 0..rounds {
        sl.set(0, if i % 2 == 0 { "bbbbbbbbbbbbbbb" } else { "aaaaaaaaaaaaaaa" })?;
    }
    Ok(())
}

start_methods! {
    /// A child and a thread of the parent set an item while the parent reads it: every read is
    /// one whole value (the list's lock works across processes).
    fn shm_list_concurrent_sets_are_never_torn(m) {
        let sl = ShareableList::new(["aaaaaaaaaaaaaaa"]).unwrap();
        let _cleanup = Cleanup(vec![sl.name().to_string()]);
        let mut p = get_context(m).process(flip_flop, (sl.clone(), 20_000usize));
        p.start().unwrap();
        let start = Arc::new(Barrier::new(2));
        let thread = {
            let sl = sl.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                flip_flop(sl, 20_000).unwrap();
            })
        };
        start.wait();
        let whole = [Item::from("aaaaaaaaaaaaaaa"), Item::from("bbbbbbbbbbbbbbb")];
        for _ in 0..20_000 {
            let got = sl.get(0).unwrap();
            assert!(whole.contains(&got), "torn value {got:?}");
        }
        thread.join().unwrap();
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
        sl.shm().unlink().unwrap();
    }
}

/// `Item`'s conversions and its Python-style `Display`.
#[test]
fn shm_item_conversions_and_display() {
    assert_eq!(Item::from(7u8), Item::Int(7));
    assert_eq!(Item::from(-7i16), Item::Int(-7));
    assert_eq!(Item::from(1.5f32), Item::Float(1.5));
    assert_eq!(Item::from(String::from("s")), Item::Str("s".into()));
    assert_eq!(Item::from(vec![1u8, 2]), Item::Bytes(vec![1, 2]));
    assert_eq!(Item::from(Some("x")), Item::Str("x".into()));
    let shown: Vec<String> = [
        Item::from("it's"),
        Item::from("a'b\"c"),
        Item::from("tab\there\n"),
        Item::from(b"\x00'\\\xff"),
        Item::Float(1.0),
        Item::Float(f64::NAN),
        Item::Float(f64::NEG_INFINITY),
        Item::Bool(false),
    ]
    .iter()
    .map(Item::to_string)
    .collect();
    assert_eq!(
        shown,
        [r#""it's""#, r#"'a\'b"c'"#, r"'tab\there\n'", r#"b"\x00'\\\xff""#, "1.0", "nan", "-inf", "False"]
    );
}

/// Handles may be shared between threads and moved to them.
#[test]
fn shm_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SharedMemory>();
    send_sync::<ShareableList>();
    send_sync::<Item>();
}
