//! Named shared memory (Python's `multiprocessing.shared_memory`): [`SharedMemory`], a block
//! of bytes in `/dev/shm` that any process may attach to by name, and [`ShareableList`], a
//! fixed-length list of numbers, strings and bytes kept in one.
//!
//! ```
//! use multiprocess::{Process, SharedMemory};
//!
//! fn child(name: String) -> multiprocess::Result<()> {
//!     let shm = SharedMemory::open(&name)?; // attach by name
//!     shm.write_at(0, b"howdy")
//! }
//!
//! let shm = SharedMemory::create(64)?;
//! let mut p = Process::new(child, (shm.name().to_string(),));
//! p.start()?;
//! p.join()?;
//! let mut buf = [0u8; 5];
//! shm.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"howdy");
//! shm.unlink()?;
//! # Ok::<(), multiprocess::Error>(())
//! ```
//!
//! # Lifetime and the resource tracker
//!
//! A segment lives until it is unlinked, even after every process has closed it. As in
//! CPython, the process that *creates* a segment owns it: if it ends without calling
//! [`unlink`](SharedMemory::unlink) (it returned, exited, panicked or was killed, even by
//! `SIGKILL`), the resource tracker, a small process the whole process tree shares, unlinks
//! the segment within moments. Processes that merely [`open`](SharedMemory::open) a segment
//! never cause it to be unlinked (CPython's tracker does, gh-82300). A segment that should
//! outlive its creator is made with [`SharedMemory::builder`]`().track(false)`, and then must
//! be unlinked by someone.
//!
//! The tracker watches each creator on its own: a segment a child creates is unlinked when
//! that child ends, not when the whole program does as in CPython. Hand a
//! segment that must outlive a child to its parent by making it in the parent, or untracked.
//!
//! # Passing to a child
//!
//! A [`SharedMemory`] or [`ShareableList`] in a child's `args` travels as its descriptor (and
//! its name), under every start method: the child maps the very same memory, even if the name
//! was unlinked in between (CPython sends the name, and attaching after an unlink fails). It
//! is an attachment in the child: it does not own the segment. Put in a queue, which carries
//! bytes only, a segment travels as its name, as CPython pickles it, and the receiver
//! attaches by name: it must not have been unlinked meanwhile.
//!
//! # Concurrency
//!
//! [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at) copy with
//! atomic word accesses, so they are free of data races even while other threads and
//! processes write, but a copy is not one atomic step: synchronize with a
//! [`Lock`](crate::Lock) or an [`Event`](crate::Event) to see whole updates. A
//! [`ShareableList`] has a lock of its own in the segment, and each `get` or `set` is whole.
//!
//! # A full `/dev/shm`
//!
//! A segment's memory is allocated when it is created, so a segment that does not fit is an
//! error then ([`std::io::ErrorKind::StorageFull`]), never a `SIGBUS` at a later write, as it
//! is in CPython and in C with `ftruncate` alone. The price is that creating a segment costs
//! what first writing all of it would (about 0.2 ms per MiB), and a segment holds all its
//! memory from the start even if little of it is ever written.
//!
//! # One hazard left to the user
//!
//! A named segment is a file anyone with access may truncate. If another process shrinks a
//! segment below what this one mapped, touching the lost part raises `SIGBUS` here, as it does
//! in CPython and in C. (The crate's own anonymous objects, locks and values, are memfds
//! sealed at their size, which rules this out.) Only truncate a segment nobody maps.

mod atomic;
mod list;

pub use list::{Item, ShareableList};

use crate::reduction::{RecvFd, SendFd};
use crate::resource_tracker::{self, NAME_MAX};
use crate::sys::{proc, shm};
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shm::Segment;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The prefix of generated names, as CPython's (`psm_` and 8 hex digits: 13 characters with
/// the leading `/`, within the 14 that BSDs allow).
const PREFIX: &str = "psm_";
/// How many generated names are tried before giving up: a collision of random 32-bit names
/// is rare, many in a row mean something else is wrong.
const NAME_TRIES: usize = 64;

/// A block of shared memory with a name in `/dev/shm` (Python's
/// `multiprocessing.shared_memory.SharedMemory`).
///
/// Made with [`create`](SharedMemory::create) (a generated name),
/// [`create_named`](SharedMemory::create_named) or [`builder`](SharedMemory::builder);
/// attached to with [`open`](SharedMemory::open). The bytes are read and written with
/// [`read_at`](SharedMemory::read_at) and [`write_at`](SharedMemory::write_at), which are
/// bounds-checked and safe while others write; [`as_slice`](SharedMemory::as_slice) and
/// [`as_mut_slice`](SharedMemory::as_mut_slice) give the bytes themselves to code that
/// synchronizes on its own. Python's `buf` is the mapping these reach.
///
/// Clones share the mapping; [`close`](SharedMemory::close) closes one handle and the mapping
/// goes with the last (dropping a handle closes it too). Closing never removes the segment:
/// [`unlink`](SharedMemory::unlink) does, and the resource tracker does for a creator that
/// ended without it (see the [module docs](self)).
///
/// `Debug` shows it as CPython's `repr` does: `SharedMemory('psm_0123abcd', size=100)`.
///
/// ```
/// use multiprocess::SharedMemory;
///
/// let shm = SharedMemory::create(16)?;
/// shm.write_at(0, &[1, 2, 3])?;
/// let other = SharedMemory::open(shm.name())?;
/// let mut buf = [0u8; 3];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(buf, [1, 2, 3]);
/// shm.unlink()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    name: String,
    size: usize,
    segment: Option<Arc<Segment>>,
    /// The file's (device, inode): what the resource tracker knows it by.
    id: (u64, u64),
}

/// Options for making a segment: whether its creator's resource tracker unlinks it when the
/// creator ends (Python's `track` argument), and whether its memory is allocated at creation
/// or as it is first written (CPython's way). From [`SharedMemory::builder`].
///
/// ```
/// use multiprocess::SharedMemory;
///
/// // Outlives this process unless someone unlinks it.
/// let shm = SharedMemory::builder().track(false).create(64)?;
/// shm.unlink()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedMemoryBuilder {
    track: bool,
    sparse: bool,
}

impl SharedMemoryBuilder {
    /// Whether the resource tracker unlinks the segment when its creator ends without having
    /// unlinked it; `true` by default (Python's `track=True`). Unlike Python's, the option
    /// matters only when creating: attaching never registers.
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::builder().track(false).create(8)?;
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn track(mut self, track: bool) -> SharedMemoryBuilder {
        self.track = track;
        self
    }

    /// Whether a new segment's memory is left to be allocated page by page as it is first
    /// written, as CPython does; `false` by default. Creating is then cheaper (no page is
    /// cleared until used) and a large segment used sparsely costs only what it touches, but
    /// the room is checked only when the segment is created: if `/dev/shm` fills up later,
    /// a first write to an untouched page kills the process with `SIGBUS`. Not sparse, the
    /// whole segment is allocated at creation (see [`SharedMemory::create`]).
    ///
    /// ```
    /// use multiprocess::SharedMemory;
    /// // 256 MiB, of which only the page written takes memory.
    /// let shm = SharedMemory::builder().sparse(true).create(256 << 20)?;
    /// shm.write_at((256 << 20) - 4, b"last")?;
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn sparse(mut self, sparse: bool) -> SharedMemoryBuilder {
        self.sparse = sparse;
        self
    }

    /// Creates a segment of `size` bytes with a generated name (see
    /// [`SharedMemory::create`]).
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::builder().create(8)?;
    /// assert_eq!(shm.size(), 8);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create(self, size: usize) -> Result<SharedMemory> {
        check_size(size)?;
        for _ in 0..NAME_TRIES {
            let name = generated_name()?;
            match create_exact(check_name(&name)?, size, &self) {
                Err(Error::AlreadyExists(_)) => continue,
                other => return other,
            }
        }
        Err(Error::Io(io::Error::other("could not find a free shared memory name")))
    }

    /// Creates the segment `name` of `size` bytes (see [`SharedMemory::create_named`]).
    ///
    /// ```
    /// let name = format!("doc_builder_{}", std::process::id());
    /// let shm = multiprocess::SharedMemory::builder().track(false).create_named(&name, 8)?;
    /// assert_eq!(shm.name(), name);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create_named(self, name: &str, size: usize) -> Result<SharedMemory> {
        let name = check_name(name)?;
        check_size(size)?;
        create_exact(name, size, &self)
    }

    /// Attaches to the segment `name` if it exists, else creates it with `size` bytes (see
    /// [`SharedMemory::open_or_create`]); `track` applies if this call creates it.
    ///
    /// ```
    /// use multiprocess::SharedMemory;
    /// let name = format!("doc_builder_oc_{}", std::process::id());
    /// let shm = SharedMemory::builder().track(false).open_or_create(&name, 8)?;
    /// assert_eq!(shm.size(), 8);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn open_or_create(self, name: &str, size: usize) -> Result<SharedMemory> {
        let name = check_name(name)?;
        check_size(size)?;
        let deadline = Instant::now() + SIZING_WAIT;
        let mut unlinked = 0;
        loop {
            match create_exact(name, size, &self) {
                Err(Error::AlreadyExists(_)) => {}
                made => return made,
            }
            match attach(name)? {
                Attached::Segment(shm) => return Ok(shm),
                // Unlinked since: create it after all.
                Attached::Missing if unlinked < NAME_TRIES => unlinked += 1,
                Attached::Missing => {
                    return Err(Error::Io(io::Error::other(format!(
                        "shared memory {name:?} keeps being made and unlinked by others"
                    ))));
                }
                // Its creator has not sized it yet (it does so at once after making it).
                Attached::Empty if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Attached::Empty => {
                    return Err(Error::InvalidArgument(format!(
                        "shared memory {name:?} is empty: its creator never sized it"
                    )));
                }
            }
        }
    }
}

/// How long [`SharedMemoryBuilder::open_or_create`] waits for a segment another process has
/// just made to be given its size.
const SIZING_WAIT: Duration = Duration::from_secs(1);

/// What attaching to an existing name found.
enum Attached {
    Segment(SharedMemory),
    Missing,
    Empty,
}

/// Attaches to `name` (no leading `/`).
fn attach(name: &str) -> Result<Attached> {
    let path = path_of(name)?;
    let fd = match shm::shm_open(&path, false) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Attached::Missing),
        Err(e) => return Err(open_error(e, name)),
    };
    let size = shm::size_of_fd(fd.as_fd())?;
    if size == 0 {
        return Ok(Attached::Empty);
    }
    let id = shm::file_id(fd.as_fd())?;
    let segment = Segment::map(fd, size)?;
    Ok(Attached::Segment(SharedMemory::attached(name.to_string(), segment, id)))
}

impl SharedMemory {
    /// Creates a zero-filled segment of `size` bytes under a new name, `psm_` and 8 random
    /// hex digits; a name already taken is passed over for another (Python's
    /// `SharedMemory(create=True, size=size)`). Its creator's resource tracker unlinks it if
    /// this process ends without unlinking it.
    ///
    /// A `size` of 0 is [`Error::InvalidArgument`].
    ///
    /// The memory is allocated in `/dev/shm` now, not page by page as it is first written:
    /// a segment that does not fit is `Err(Io)` with [`std::io::ErrorKind::StorageFull`]
    /// ("/dev/shm is full: ..."), where CPython creates it and the first write past the
    /// free space kills the process with `SIGBUS` (CPython issue 114390). For CPython's way,
    /// cheaper to create and to use sparsely, see [`SharedMemoryBuilder::sparse`].
    ///
    /// ```
    /// use multiprocess::SharedMemory;
    ///
    /// let shm = SharedMemory::create(100)?;
    /// assert!(shm.name().starts_with("psm_"));
    /// assert_eq!(shm.size(), 100);
    /// assert!(SharedMemory::create(0).is_err());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create(size: usize) -> Result<SharedMemory> {
        SharedMemory::builder().create(size)
    }

    /// Creates a zero-filled segment named `name` of `size` bytes (Python's
    /// `SharedMemory(name, create=True, size=size)`). The name may start with `/` or not; it
    /// may not be empty, hold another `/` or a NUL, or be longer than 255 bytes
    /// ([`Error::InvalidArgument`]). A name already in use is [`Error::AlreadyExists`].
    ///
    /// ```
    /// use multiprocess::{Error, SharedMemory};
    ///
    /// let name = format!("doc_create_named_{}", std::process::id());
    /// let shm = SharedMemory::create_named(&name, 32)?;
    /// assert!(matches!(SharedMemory::create_named(&name, 32), Err(Error::AlreadyExists(_))));
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        SharedMemory::builder().create_named(name, size)
    }

    /// Options for creating a segment: [`track`](SharedMemoryBuilder::track).
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::builder().track(true).create(8)?;
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn builder() -> SharedMemoryBuilder {
        SharedMemoryBuilder { track: true, sparse: false }
    }

    /// Attaches to the existing segment `name`, with or without its leading `/` (Python's
    /// `SharedMemory(name)`). Its size is the segment's, as the kernel tells it. A name that
    /// does not exist is [`Error::NotFound`]; a malformed one [`Error::InvalidArgument`].
    ///
    /// ```
    /// use multiprocess::{Error, SharedMemory};
    ///
    /// let shm = SharedMemory::create(20)?;
    /// let same = SharedMemory::open(&format!("/{}", shm.name()))?;
    /// assert_eq!(same.size(), 20);
    /// shm.unlink()?;
    /// assert!(matches!(SharedMemory::open(shm.name()), Err(Error::NotFound(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<SharedMemory> {
        let name = check_name(name)?;
        match attach(name)? {
            Attached::Segment(shm) => Ok(shm),
            Attached::Missing => Err(Error::NotFound(name.to_string())),
            Attached::Empty => Err(Error::InvalidArgument(format!("shared memory {name:?} is empty: nothing to map"))),
        }
    }

    /// Attaches to the segment `name` if it exists, with its size (whatever `size` says: it
    /// is neither truncated nor grown); else creates it with `size` bytes, as
    /// [`create_named`](SharedMemory::create_named) does, tracked. Several processes may
    /// race to open-or-create one name: one creates it, the others attach to it. The one
    /// that created it is its creator (its resource tracker unlinks it if it ends without
    /// unlinking it); the others merely attached. To learn which you are, use
    /// `create_named` and [`open`](SharedMemory::open) on [`Error::AlreadyExists`].
    ///
    /// Python counterpart: `SharedMemory(name)` on a subclass whose `_flags` are
    /// `os.O_CREAT | os.O_RDWR` (CPython's test of this case; it has no public option).
    ///
    /// ```
    /// use multiprocess::SharedMemory;
    ///
    /// let name = format!("doc_open_or_create_{}", std::process::id());
    /// let first = SharedMemory::open_or_create(&name, 64)?; // creates
    /// first.write_at(0, b"hi")?;
    /// let second = SharedMemory::open_or_create(&name, 16)?; // attaches, size unchanged
    /// assert_eq!(second.size(), 64);
    /// let mut buf = [0u8; 2];
    /// second.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"hi");
    /// first.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn open_or_create(name: &str, size: usize) -> Result<SharedMemory> {
        SharedMemory::builder().open_or_create(name, size)
    }

    fn attached(name: String, segment: Segment, id: (u64, u64)) -> SharedMemory {
        SharedMemory { name, size: segment.len(), segment: Some(Arc::new(segment)), id }
    }

    /// The segment's name, without the leading `/` (Python's `name`).
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(1)?;
    /// assert_eq!(shm.name().len(), 12); // "psm_" and 8 hex digits
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes (Python's `size`): on Linux exactly what was asked for.
    /// Still known after [`close`](SharedMemory::close).
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(1)?;
    /// assert_eq!(shm.size(), 1);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// Closes this handle (Python's `close()`): the mapping goes with the last clone, and
    /// later reads and writes through this handle are [`Error::HandleClosed`]. The segment
    /// itself stays until unlinked, and [`unlink`](SharedMemory::unlink) still works. Closing
    /// twice is harmless.
    ///
    /// ```
    /// use multiprocess::{Error, SharedMemory};
    ///
    /// let mut shm = SharedMemory::create(8)?;
    /// shm.close();
    /// assert!(matches!(shm.read_at(0, &mut [0u8; 1]), Err(Error::HandleClosed)));
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.segment = None;
    }

    /// Whether [`close`](SharedMemory::close) was called on this handle.
    ///
    /// ```
    /// let mut shm = multiprocess::SharedMemory::create(8)?;
    /// assert!(!shm.is_closed());
    /// shm.close();
    /// assert!(shm.is_closed());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.segment.is_none()
    }

    /// Removes the name from `/dev/shm` (Python's `unlink()`): nobody can attach any more,
    /// and the memory goes when the last process has closed it. Whoever created the segment
    /// should call it once. A name already gone is [`Error::NotFound`], as the second call
    /// is. Works on a closed handle too. If this process created the segment, its resource
    /// tracker forgets it.
    ///
    /// ```
    /// use multiprocess::{Error, SharedMemory};
    ///
    /// let shm = SharedMemory::create(8)?;
    /// shm.unlink()?;
    /// assert!(matches!(shm.unlink(), Err(Error::NotFound(_))));
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        let path = path_of(&self.name)?;
        let result = shm::shm_unlink(&path).map_err(|e| open_error(e, &self.name));
        if matches!(result, Ok(()) | Err(Error::NotFound(_))) {
            // Unlinked, now or by someone before: our file has no name left to clean up. (A
            // no-op unless this process created it, through this handle or another.)
            resource_tracker::unregister(&self.name, self.id);
        }
        result
    }

    /// Copies `buf.len()` bytes from `offset` into `buf` (Python's `bytes(buf[offset:...])`).
    /// A range past the end is [`Error::IndexOutOfRange`] (naming its first byte outside),
    /// and a closed handle [`Error::HandleClosed`].
    ///
    /// Free of data races even while other threads and processes write (the copy is made of
    /// atomic word loads), but not one atomic step: a concurrent writer can leave part old,
    /// part new.
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(4)?;
    /// shm.write_at(1, &[7, 8])?;
    /// let mut buf = [0u8; 4];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(buf, [0, 7, 8, 0]);
    /// assert!(shm.read_at(2, &mut buf).is_err());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let segment = self.mapped()?;
        self.check_range(offset, buf.len())?;
        // SAFETY: the mapping (page-aligned) covers the range, checked above, and lives while
        // `segment` is borrowed.
        unsafe { atomic::load(segment.as_ptr(), offset, buf) };
        Ok(())
    }

    /// Copies `data` to the bytes from `offset` (Python's `buf[offset:offset + len] = data`).
    /// A range past the end is [`Error::IndexOutOfRange`], a closed handle
    /// [`Error::HandleClosed`]; nothing is written then.
    ///
    /// Free of data races, as [`read_at`](SharedMemory::read_at) is.
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(8)?;
    /// shm.write_at(0, b"hello")?;
    /// assert!(shm.write_at(6, b"abc").is_err());
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        let segment = self.mapped()?;
        self.check_range(offset, data.len())?;
        // SAFETY: as in `read_at`.
        unsafe { atomic::store(segment.as_ptr(), offset, data) };
        Ok(())
    }

    /// The first byte of the mapping (page-aligned; [`size`](SharedMemory::size) bytes long),
    /// valid while this handle is open and not moved from. [`Error::HandleClosed`] once
    /// closed.
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(8)?;
    /// assert_eq!(shm.as_ptr()? as usize % 4096, 0);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn as_ptr(&self) -> Result<*mut u8> {
        Ok(self.mapped()?.as_ptr())
    }

    /// The bytes themselves (Python's `buf`, read-only).
    ///
    /// # Safety
    /// While the slice lives, no thread or process may write to the segment (another
    /// process's write is a data race Rust cannot see): the caller synchronizes, for example
    /// with a [`Lock`](crate::Lock), or by reading only after every writer is done.
    ///
    /// ```
    /// let shm = multiprocess::SharedMemory::create(4)?;
    /// shm.write_at(0, &[1, 2, 3, 4])?;
    /// // SAFETY: nobody else knows the segment's name yet.
    /// let bytes = unsafe { shm.as_slice()? };
    /// assert_eq!(bytes, &[1, 2, 3, 4]);
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> Result<&[u8]> {
        let segment = self.mapped()?;
        // SAFETY: the mapping is `size` bytes and lives while `self` is borrowed (and open:
        // `close` takes `&mut self`); the caller rules out writers.
        Ok(unsafe { std::slice::from_raw_parts(segment.as_ptr(), self.size) })
    }

    /// The bytes themselves, writable (Python's `buf`). Borrowing the handle mutably rules out
    /// a second slice through it; clones of the handle and other processes are the caller's
    /// to keep away.
    ///
    /// # Safety
    /// While the slice lives, no other thread (through a clone) or process may read or write
    /// the segment: the caller synchronizes.
    ///
    /// ```
    /// let mut shm = multiprocess::SharedMemory::create(4)?;
    /// // SAFETY: nobody else knows the segment's name yet, and this is the only slice.
    /// unsafe { shm.as_mut_slice()? }.copy_from_slice(b"abcd");
    /// let mut buf = [0u8; 4];
    /// shm.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"abcd");
    /// shm.unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub unsafe fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        let segment = self.mapped()?;
        // SAFETY: as in `as_slice`; the caller guarantees exclusive access.
        Ok(unsafe { std::slice::from_raw_parts_mut(segment.as_ptr(), self.size) })
    }

    fn mapped(&self) -> Result<&Segment> {
        self.segment.as_deref().ok_or(Error::HandleClosed)
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::IndexOutOfRange { index: offset.max(self.size), len: self.size }),
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedMemory('{}', size={})", self.name.escape_debug(), self.size)
    }
}

#[derive(Serialize)]
enum WireOut<'a> {
    Descriptor { fd: SendFd<'a>, name: &'a str },
    Name(&'a str),
}

#[derive(Deserialize)]
enum WireIn {
    Descriptor { fd: RecvFd, name: String },
    Name(String),
}

/// Sends the descriptor and the name where descriptors can travel (a child's arguments): the
/// receiver maps the same memory (see the [module docs](self)). In a queue item or a
/// connection's message it sends the name only, as CPython pickles a `SharedMemory`, and the
/// receiver attaches by name. A closed handle cannot be sent.
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let segment =
            self.segment.as_ref().ok_or_else(|| crate::error::ser_custom("the shared memory handle is closed"))?;
        if crate::reduction::can_send_fds() {
            WireOut::Descriptor { fd: SendFd(segment.fd()), name: &self.name }.serialize(s)
        } else {
            WireOut::Name(&self.name).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<SharedMemory, D::Error> {
        let (fd, name) = match WireIn::deserialize(d)? {
            WireIn::Descriptor { fd, name } => (fd, name),
            WireIn::Name(name) => {
                let bare = check_name(&name).map_err(crate::error::de_custom)?;
                return match attach(bare).map_err(crate::error::de_custom)? {
                    Attached::Segment(shm) => Ok(shm),
                    Attached::Missing => {
                        Err(crate::error::de_custom(format!("no shared memory named {bare:?} (unlinked?)")))
                    }
                    Attached::Empty => Err(crate::error::de_custom(format!("shared memory {bare:?} is empty"))),
                };
            }
        };
        let name = check_name(&name).map_err(crate::error::de_custom)?.to_string();
        let id = shm::file_id(fd.0.as_fd()).map_err(crate::error::de_custom)?;
        // The size is the kernel's, never what the sender wrote. (A named segment cannot be
        // sealed against shrinking, as memfds are: like CPython's, it relies on its users.)
        let size = shm::size_of_fd(fd.0.as_fd()).map_err(crate::error::de_custom)?;
        if size == 0 {
            return Err(crate::error::de_custom("an empty shared memory segment"));
        }
        let segment = Segment::map(fd.0, size).map_err(crate::error::de_custom)?;
        Ok(SharedMemory::attached(name, segment, id))
    }
}

// ---------------------------------------------------------------------------------------------
// Names and creation.

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidArgument("'size' must be a positive number different from zero".into()));
    }
    if isize::try_from(size).is_err() {
        return Err(Error::InvalidArgument(format!("'size' {size} is too large")));
    }
    Ok(())
}

/// Unlinks the segment `name` (for a `SharedMemoryManager`'s server, which did not make it).
pub(crate) fn unlink_name(name: &str) -> Result<()> {
    let bare = check_name(name)?;
    shm::shm_unlink(&path_of(bare)?).map_err(|e| open_error(e, bare))
}

/// The name without its leading `/`, if it is one `shm_open` takes for a file of `/dev/shm`.
pub(crate) fn check_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let bad = |why: &str| Err(Error::InvalidArgument(format!("shared memory name {name:?}: {why}")));
    if bare.contains('\0') {
        return bad("embedded null character");
    }
    if bare.is_empty() || bare == "." || bare == ".." {
        return bad("not a file name");
    }
    if bare.contains('/') {
        return bad("'/' is allowed only as its first character");
    }
    if bare.len() > NAME_MAX {
        return bad("longer than 255 bytes");
    }
    Ok(bare)
}

fn path_of(bare: &str) -> Result<CString> {
    CString::new(format!("/{bare}")).map_err(|_| Error::InvalidArgument("embedded null character".into()))
}

fn open_error(e: io::Error, name: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound(name.to_string()),
        Some(libc::EEXIST) => Error::AlreadyExists(name.to_string()),
        Some(libc::EINVAL | libc::ENAMETOOLONG) => Error::InvalidArgument(format!("shared memory name {name:?}: {e}")),
        _ => Error::Io(e),
    }
}

/// Creates `name` exclusively, sizes, allocates (unless sparse) and maps it, and registers it
/// if tracked; on any failure the name is unlinked again.
fn create_exact(name: &str, size: usize, how: &SharedMemoryBuilder) -> Result<SharedMemory> {
    let path = path_of(name)?;
    let fd = shm::shm_open(&path, true).map_err(|e| open_error(e, name))?;
    let made = (|| -> Result<SharedMemory> {
        // A size past the free space is refused before anything is allocated (allocating
        // first would take all that is free, for a moment, from everyone).
        if let Some((free, total)) = shm::room(fd.as_fd())?
            && size as u64 > free
        {
            if size as u64 > total {
                // Not a matter of room taken by others: it would not fit in an empty one.
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "{size} bytes of shared memory {name:?} are more than all of /dev/shm ({total} bytes, \
                         {free} free): make it smaller, or /dev/shm larger"
                    ),
                )));
            }
            return Err(no_room(name, size, &format!("{free} bytes free of {total}")));
        }
        shm::set_len(fd.as_fd(), size)?;
        // Taken now, so that no write can find the memory missing later: a sparse segment on
        // a full tmpfs raises SIGBUS at the first write past the free space. (Another process
        // may have taken the free space since we looked.)
        if !how.sparse {
            shm::allocate(fd.as_fd(), size).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOSPC) => no_room(name, size, "taken by others meanwhile"),
                Some(libc::ENOMEM) => Error::Io(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("out of memory for the {size} bytes of shared memory {name:?}"),
                )),
                _ => Error::Io(e),
            })?;
        }
        let id = shm::file_id(fd.as_fd())?;
        let segment = Segment::map(fd, size)?;
        let shm = SharedMemory::attached(name.to_string(), segment, id);
        if how.track {
            resource_tracker::register(name, id)?;
        }
        Ok(shm)
    })();
    if made.is_err() {
        let _ = shm::shm_unlink(&path);
    }
    made
}

/// The error for a segment `/dev/shm` has no room for.
fn no_room(name: &str, size: usize, why: &str) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::StorageFull,
        format!("/dev/shm is full: no room for the {size} bytes of shared memory {name:?} ({why})"),
    ))
}

thread_local! {
    /// Names [`generated_name`] hands out before random ones: for tests of the retry on a
    /// taken name (SHM-09).
    static NEXT_NAMES: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
}

/// Makes the next generated names on this thread `names`, in order (for tests).
pub(crate) fn force_next_names(names: Vec<String>) {
    NEXT_NAMES.with(|n| n.borrow_mut().extend(names));
}

/// `psm_` and 8 random hex digits.
fn generated_name() -> Result<String> {
    if let Some(name) = NEXT_NAMES.with(|n| n.borrow_mut().pop_front()) {
        return Ok(name);
    }
    let mut bytes = [0u8; 4];
    proc::random_bytes(&mut bytes)?;
    Ok(format!("{PREFIX}{:08x}", u32::from_be_bytes(bytes)))
}
