use super::*;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
#[repr(C)]
struct Word {
    value: AtomicU64,
}

// SAFETY: one atomic; zero is a valid value.
unsafe impl SharedState for Word {}

fn place(s: &Shared<Word>) -> (u64, u64) {
    let (_, offset, len, _) = s.block.wire();
    (offset, len)
}

fn refs(s: &Shared<Word>) -> u32 {
    // SAFETY: the block header is at the block's first byte, mapped as long as `s`.
    let header = unsafe { &*s.block.base().0.cast::<block::BlockHeader>() };
    header.refs_for_test()
}

/// Sends `s` to ourselves as a child's arguments would travel, and takes it back.
fn round_trip(s: &Shared<Word>) -> Shared<Word> {
    let mut encoded = crate::reduction::encode(s).unwrap();
    encoded.delivered();
    let dup = |&fd| {
        // SAFETY: the descriptors are the arena's, which `s` keeps open through this call.
        unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().unwrap()
    };
    let fds = encoded.fds.iter().map(dup).collect();
    crate::reduction::decode(&encoded.bytes, fds).unwrap()
}

#[test]
fn small_objects_share_one_arena_and_a_freed_slot_is_used_again() {
    let a = Shared::<Word>::new(0).unwrap();
    let b = Shared::<Word>::new(0).unwrap();
    assert_eq!(a.block.wire().0.as_raw_fd(), b.block.wire().0.as_raw_fd(), "one arena");
    assert_ne!(place(&a), place(&b));
    a.state().value.store(7, Ordering::Relaxed);
    let freed = place(&a);
    drop(a);
    let c = Shared::<Word>::new(0).unwrap();
    assert_eq!(place(&c), freed, "the freed slot comes back");
    assert_eq!(c.state().value.load(Ordering::Relaxed), 0, "zeroed");
}

#[test]
fn a_block_handed_on_is_freed_only_when_every_hold_is_given_back() {
    let a = Shared::<Word>::new(0).unwrap();
    a.state().value.store(5, Ordering::Relaxed);
    assert_eq!(refs(&a), 1);
    let encoded = crate::reduction::encode(&a).unwrap();
    assert_eq!(refs(&a), 2, "a ticket for the child");
    drop(encoded);
    assert_eq!(refs(&a), 1, "arguments never delivered: the ticket goes back");
    // Received by a process that holds it already: one hold, still.
    let again = round_trip(&a);
    assert_eq!(refs(&a), 1);
    assert_eq!(again.state().value.load(Ordering::Relaxed), 5);
    assert!(Arc::ptr_eq(&again.block, &a.block));
}

#[test]
fn big_blocks_are_page_aligned_and_lazy_ones_map_as_they_are_reached() {
    let big = Shared::<Word>::aligned(100, 4096).unwrap();
    assert!((big.tail().0 as usize - FIRST - 8).is_multiple_of(4096));
    let lazy = Shared::<Word>::lazy(64 << 20, 8192).unwrap();
    assert_eq!(lazy.tail().1, 8192 - FIRST - 8, "only the first window is mapped");
    let far = lazy.reach(48 << 20).unwrap();
    // SAFETY: the window reaches 48 MiB into the block.
    unsafe { far.add((48 << 20) - 1).write(9) };
    assert_eq!(lazy.reach(100).unwrap(), far, "the newest window serves");
    assert!(lazy.reach((64 << 20) + 4096).is_err(), "nothing past the block");
    lazy.discard(8192, 48 << 20).unwrap();
    // SAFETY: as above; the pages were given back, and read as zeros.
    assert_eq!(unsafe { far.add((48 << 20) - 1).read() }, 0);
}

#[test]
fn garbage_places_are_refused() {
    let a = Shared::<Word>::new(0).unwrap();
    let (fd, offset, len, first) = a.block.wire();
    let dup = || fd.try_clone_to_owned().unwrap();
    for (o, l, f) in [
        (0, len, first),             // the arena's header
        (offset + 8, len, first),    // not a block's start
        (offset, len + 1, first),    // another length than its header says
        (offset, u64::MAX, first),   // overflowing
        (1 << 50, len, first),       // past the arena
        (offset + 64, len, 1 << 40), // a big block's first window past it
    ] {
        assert!(block::attach(dup(), o, l, f).is_err(), "({o}, {l}, {f}) accepted");
    }
    let not_arena = crate::sys::shm::sparse_memfd(c"test", 1 << 20).unwrap();
    assert!(block::attach(not_arena, offset, len, first).is_err());
    assert_eq!(a.state().value.load(Ordering::Relaxed), 0);
}
