//! `ShareableList` (Python's `multiprocessing.shared_memory.ShareableList`) and its items.
//!
//! # Layout
//!
//! Every field is an 8-byte word (native byte order) at a multiple of 8, read and written
//! only with atomics. `n` is the number of items.
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic: `b"mpSList1"` as a little-endian u64, written last when the list is made |
//! | 8 | the list's lock: a process-shared futex word holding its holder's pid (4 bytes), then 4 zero bytes |
//! | 16 | `n` |
//! | 24 | reserved, 0 |
//! | 32 + 16·i | item i's *meta*: its type tag in the top byte (1 int, 2 float, 3 bool, 4 str, 5 bytes, 6 none), the byte length of a str or bytes value in the low 56 bits |
//! | 40 + 16·i | item i's *capacity*: the bytes reserved for its value, a multiple of 8 and at least 8, fixed when the list is made |
//! | 32 + 16·n | the values, each at the sum of the capacities before it: an int as an `i64`, a float as an `f64`, a bool as the word 0 or 1, a str (UTF-8) or bytes value as its bytes (its length is in the meta word, so NUL bytes are kept), none as nothing |
//!
//! A str or bytes item of `len` bytes gets a capacity of `8 · (len / 8 + 1)` bytes, CPython's
//! rule; any other item 8. A later value must fit its slot's capacity.
//!
//! When a list is opened, its count and capacities are read once and checked against the
//! segment's size (from the kernel); later reads trust only that copy. Each meta word is checked
//! when read (a known tag, a length within the capacity, valid UTF-8 for a str), so a list that
//! another process scribbled over gives [`Error::Codec`], never a panic or a read out of bounds.
//! `get`, `set` and the whole-list reads hold the lock, so values are never torn; its holder's
//! death frees it at once.

use super::{SharedMemory, atomic};
use crate::synchronize::mutex::{Acquired, RawMutex};
use crate::sys::Deadline;
use crate::sys::shm::Segment;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const MAGIC: u64 = u64::from_le_bytes(*b"mpSList1");
const MAGIC_AT: usize = 0;
const LOCK_AT: usize = 8;
const COUNT_AT: usize = 16;
const TABLE_AT: usize = 32;
const SLOT: usize = 16;
const WORD: usize = 8;

const TAG_SHIFT: u32 = 56;
const LEN_MASK: u64 = (1 << TAG_SHIFT) - 1;
const INT: u8 = 1;
const FLOAT: u8 = 2;
const BOOL: u8 = 3;
const STR: u8 = 4;
const BYTES: u8 = 5;
const NONE: u8 = 6;

/// How long `get` and `set` wait for the list's lock. Its holder copies a few bytes and lets
/// go (and a dead holder is noticed at once), so a lock held this long is held by a stopped or
/// misbehaving process: [`Error::Timeout`] rather than a hang.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One value of a [`ShareableList`]: the types Python's `ShareableList` holds.
///
/// Conversions make lists from Rust values: integers up to 32 bits and `i64` give `Int`,
/// `f32` and `f64` give `Float`, `&str` and `String` give `Str`, byte slices, arrays and
/// `Vec<u8>` give `Bytes`, `()` and an `Option`'s `None` give `None`. `Display` writes an item
/// as Python's `repr` does (`'howdy'`, `b'HoWdY'`, `True`, `None`).
///
/// Equality is Rust's: types must match, so unlike Python `Int(1)`, `Float(1.0)` and
/// `Bool(true)` are three different values, and a NaN equals nothing.
///
/// ```
/// use multiprocess::shared_memory::Item;
///
/// assert_eq!(Item::from(42), Item::Int(42));
/// assert_eq!(Item::from("howdy"), Item::Str("howdy".into()));
/// assert_eq!(Item::from(b"HoWdY"), Item::Bytes(b"HoWdY".to_vec()));
/// assert_eq!(Item::from(None::<i64>), Item::None);
/// assert_eq!(Item::from(b"a\0").to_string(), r"b'a\x00'");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// Python's `int`, within 64 bits.
    Int(i64),
    /// Python's `float`.
    Float(f64),
    /// Python's `bool`.
    Bool(bool),
    /// Python's `str`.
    Str(String),
    /// Python's `bytes`.
    Bytes(Vec<u8>),
    /// Python's `None`.
    None,
}

impl Item {
    /// Bytes its value takes in a slot.
    fn len_in_slot(&self) -> usize {
        match self {
            Item::Int(_) | Item::Float(_) | Item::Bool(_) => WORD,
            Item::Str(s) => s.len(),
            Item::Bytes(b) => b.len(),
            Item::None => 0,
        }
    }

    /// The capacity of a slot made for it: CPython's rule.
    fn capacity(&self) -> Option<usize> {
        match self {
            Item::Str(_) | Item::Bytes(_) => (self.len_in_slot() / WORD).checked_add(1)?.checked_mul(WORD),
            _ => Some(WORD),
        }
    }
}

macro_rules! item_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {$(
        impl From<$t> for Item {
            fn from(v: $t) -> Item {
                Item::$variant($conv(v))
            }
        }
    )*};
}

item_from! {
    i64 => Int(|v| v),
    i32 => Int(i64::from),
    i16 => Int(i64::from),
    i8 => Int(i64::from),
    u32 => Int(i64::from),
    u16 => Int(i64::from),
    u8 => Int(i64::from),
    f64 => Float(|v| v),
    f32 => Float(f64::from),
    bool => Bool(|v| v),
    String => Str(|v| v),
    &str => Str(str::to_string),
    &String => Str(String::clone),
    Vec<u8> => Bytes(|v| v),
    &[u8] => Bytes(<[u8]>::to_vec),
}

impl<const N: usize> From<&[u8; N]> for Item {
    fn from(v: &[u8; N]) -> Item {
        Item::Bytes(v.to_vec())
    }
}

impl From<()> for Item {
    fn from((): ()) -> Item {
        Item::None
    }
}

impl<T: Into<Item>> From<Option<T>> for Item {
    fn from(v: Option<T>) -> Item {
        v.map_or(Item::None, Into::into)
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Int(v) => write!(f, "{v}"),
            Item::Float(v) if v.is_nan() => f.write_str("nan"),
            Item::Float(v) => write!(f, "{v:?}"),
            Item::Bool(true) => f.write_str("True"),
            Item::Bool(false) => f.write_str("False"),
            Item::None => f.write_str("None"),
            Item::Str(s) => {
                let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
                write!(f, "{quote}")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c == quote => write!(f, "\\{c}")?,
                        c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "{quote}")
            }
            Item::Bytes(b) => {
                let quote = if b.contains(&b'\'') && !b.contains(&b'"') { b'"' } else { b'\'' };
                write!(f, "b{}", quote as char)?;
                for &byte in b {
                    match byte {
                        b'\\' => f.write_str("\\\\")?,
                        byte if byte == quote => write!(f, "\\{}", byte as char)?,
                        b'\n' => f.write_str("\\n")?,
                        b'\r' => f.write_str("\\r")?,
                        b'\t' => f.write_str("\\t")?,
                        0x20..0x7f => write!(f, "{}", byte as char)?,
                        _ => write!(f, "\\x{byte:02x}")?,
                    }
                }
                write!(f, "{}", quote as char)
            }
        }
    }
}

/// Where item i's value lives, and how much room it has: read once and checked.
#[derive(Clone, Copy, Debug)]
struct Slot {
    offset: usize,
    capacity: usize,
}

fn meta_at(index: usize) -> usize {
    TABLE_AT + index * SLOT
}

fn corrupt(what: impl fmt::Display) -> Error {
    Error::Codec(format!("shared list is corrupt: {what}"))
}

/// The word at `at` of the segment, if it lies inside.
fn word(segment: &Segment, at: usize) -> Result<&AtomicU64> {
    if !at.is_multiple_of(WORD) || at.checked_add(WORD).is_none_or(|end| end > segment.len()) {
        return Err(corrupt(format!("offset {at} outside the segment")));
    }
    // SAFETY: the mapping is page-aligned and the word lies inside it (checked above); it
    // lives while `segment` is borrowed.
    Ok(unsafe { atomic::word(segment.as_ptr(), at) })
}

/// The list's lock, held while alive.
struct ListGuard<'a> {
    mutex: &'a RawMutex,
}

impl Drop for ListGuard<'_> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

fn lock(segment: &Segment) -> Result<ListGuard<'_>> {
    // The lock is the word at LOCK_AT, which `word` checks is inside.
    let w = word(segment, LOCK_AT)?;
    // SAFETY: `RawMutex` is two `AtomicU32`s (8 bytes, aligned to 4); an aligned 8-byte
    // atomic word holds them exactly, and only the lock ever reaches it.
    let mutex = unsafe { &*w.as_ptr().cast::<RawMutex>() };
    match mutex.lock(Deadline::after(Some(LOCK_TIMEOUT))) {
        Acquired::No => Err(Error::Timeout),
        // A holder that died mid-`set` left at most one torn value, which reads check.
        Acquired::Yes | Acquired::OwnerDied => Ok(ListGuard { mutex }),
    }
}

/// A fixed-length list of [`Item`]s in a [`SharedMemory`] segment, which any process may
/// attach to by name (Python's `multiprocessing.shared_memory.ShareableList`).
///
/// Its length is fixed when it is made; each item may be replaced by any other that fits its
/// slot: an int, float or bool always fits, a str or bytes value if its length is within the
/// slot's capacity (the creating item's length rounded up past the next multiple of 8, as in
/// CPython). Strings and bytes are stored with their length, so NUL bytes and multi-byte
/// UTF-8 come back intact (CPython strips trailing NULs, gh-106939, and can cut UTF-8,
/// gh-145261). Indices are `usize`: Python's negative indices have no counterpart (use
/// `len() - 1`). A list passed to a child travels as its segment's descriptor.
///
/// The list has a lock in its segment: each `get`, `set` and whole-list read is atomic with
/// respect to the others, in any process.
///
/// ```
/// use multiprocess::{ShareableList, shared_memory::Item};
///
/// let sl = ShareableList::new([Item::from("howdy"), b"HoWdY".into(), (-273.154).into(), 100.into(), ().into(), true.into(), 42.into()])?;
/// assert_eq!(sl.len(), 7);
/// assert_eq!(sl.get(0)?, Item::Str("howdy".into()));
/// assert_eq!(sl.index(&100.into())?, 3);
/// sl.set(4, "some")?;
/// let same = ShareableList::open(sl.name())?;
/// assert_eq!(same.get(4)?, Item::from("some"));
/// sl.shm().unlink()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[derive(Clone)]
pub struct ShareableList {
    shm: SharedMemory,
    slots: Arc<[Slot]>,
}

impl ShareableList {
    /// A new list holding `items`, in a new segment with a generated name (Python's
    /// `ShareableList(sequence)`). The segment is tracked: see [`SharedMemory::create`].
    ///
    /// ```
    /// use multiprocess::{ShareableList, shared_memory::Item};
    ///
    /// let sl = ShareableList::new(0..5i32)?;
    /// assert_eq!(sl.to_vec()?, (0..5).map(Item::Int).collect::<Vec<_>>());
    /// let empty = ShareableList::new(Vec::<Item>::new())?;
    /// assert_eq!(empty.len(), 0);
    /// sl.shm().unlink()?;
    /// empty.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new<I>(items: I) -> Result<ShareableList>
    where
        I: IntoIterator,
        I::Item: Into<Item>,
    {
        ShareableList::make(None, items.into_iter().map(Into::into).collect(), true)
    }

    /// A new list in a segment this process's resource tracker does not know: a
    /// `SharedMemoryManager` answers for it.
    pub(crate) fn new_untracked(items: Vec<Item>) -> Result<ShareableList> {
        ShareableList::make(None, items, false)
    }

    /// A new list holding `items`, in a new segment named `name` (Python's
    /// `ShareableList(sequence, name=name)`). Errors as [`SharedMemory::create_named`].
    ///
    /// ```
    /// use multiprocess::ShareableList;
    ///
    /// let name = format!("doc_list_{}", std::process::id());
    /// let sl = ShareableList::new_named(&name, ["a", "b"])?;
    /// assert_eq!(sl.name(), name);
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn new_named<I>(name: &str, items: I) -> Result<ShareableList>
    where
        I: IntoIterator,
        I::Item: Into<Item>,
    {
        ShareableList::make(Some(name), items.into_iter().map(Into::into).collect(), true)
    }

    /// Attaches to the list in the segment `name` (Python's `ShareableList(name=name)`).
    /// [`Error::NotFound`] if there is no such segment, [`Error::Codec`] if it does not hold a
    /// valid list.
    ///
    /// ```
    /// use multiprocess::ShareableList;
    ///
    /// let sl = ShareableList::new([1, 2, 3])?;
    /// let same = ShareableList::open(sl.name())?;
    /// same.set(0, 880)?;
    /// assert_eq!(sl.get(0)?, 880.into());
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<ShareableList> {
        ShareableList::attach(SharedMemory::open(name)?)
    }

    fn make(name: Option<&str>, items: Vec<Item>, track: bool) -> Result<ShareableList> {
        let too_large = || Error::InvalidArgument("the list is too large".into());
        let mut offset = items.len().checked_mul(SLOT).and_then(|t| t.checked_add(TABLE_AT)).ok_or_else(too_large)?;
        let mut slots = Vec::with_capacity(items.len());
        for item in &items {
            let capacity = item.capacity().ok_or_else(too_large)?;
            slots.push(Slot { offset, capacity });
            offset = offset.checked_add(capacity).ok_or_else(too_large)?;
        }
        let builder = SharedMemory::builder().track(track);
        let shm = match name {
            Some(name) => builder.create_named(name, offset)?,
            None => builder.create(offset)?,
        };
        let list = ShareableList { shm, slots: slots.into() };
        if let Err(e) = list.fill(&items) {
            let _ = list.shm.unlink();
            return Err(e);
        }
        Ok(list)
    }

    /// Writes a new list's header and items; the magic goes last, so that nobody attaches
    /// to a half-made list.
    fn fill(&self, items: &[Item]) -> Result<()> {
        let segment = self.shm.mapped()?;
        word(segment, COUNT_AT)?.store(items.len() as u64, Ordering::Relaxed);
        for (index, (item, slot)) in items.iter().zip(self.slots.iter()).enumerate() {
            word(segment, meta_at(index) + WORD)?.store(slot.capacity as u64, Ordering::Relaxed);
            write_item(segment, index, *slot, item)?;
        }
        word(segment, MAGIC_AT)?.store(MAGIC, Ordering::Release);
        Ok(())
    }

    /// Reads and checks the header of the list in `shm`.
    fn attach(shm: SharedMemory) -> Result<ShareableList> {
        let segment = shm.mapped()?;
        let size = segment.len();
        if size < TABLE_AT || word(segment, MAGIC_AT)?.load(Ordering::Acquire) != MAGIC {
            return Err(corrupt(format!("{:?} does not hold a shareable list", shm.name())));
        }
        let count = word(segment, COUNT_AT)?.load(Ordering::Relaxed);
        let n = usize::try_from(count)
            .ok()
            .filter(|&n| n <= (size - TABLE_AT) / SLOT)
            .ok_or_else(|| corrupt(format!("{count} items cannot fit in {size} bytes")))?;
        let mut offset = TABLE_AT + n * SLOT;
        let mut slots = Vec::with_capacity(n);
        for index in 0..n {
            let raw = word(segment, meta_at(index) + WORD)?.load(Ordering::Relaxed);
            let capacity = usize::try_from(raw)
                .ok()
                .filter(|c| *c >= WORD && c.is_multiple_of(WORD))
                .ok_or_else(|| corrupt(format!("item {index} has a capacity of {raw} bytes")))?;
            let end = offset
                .checked_add(capacity)
                .filter(|&end| end <= size)
                .ok_or_else(|| corrupt(format!("item {index} runs past the segment's end")))?;
            slots.push(Slot { offset, capacity });
            offset = end;
        }
        Ok(ShareableList { shm, slots: slots.into() })
    }

    /// The number of items (Python's `len(sl)`).
    ///
    /// ```
    /// let sl = multiprocess::ShareableList::new(["x"; 3])?;
    /// assert_eq!(sl.len(), 3);
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the list has no items.
    ///
    /// ```
    /// let sl = multiprocess::ShareableList::new(Vec::<i64>::new())?;
    /// assert!(sl.is_empty());
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Item `index` (Python's `sl[index]`, for `index >= 0`). Past the end is
    /// [`Error::IndexOutOfRange`]; a corrupt slot [`Error::Codec`]; the list's lock held by a
    /// live process for 10 s (one stopped, or misbehaving) [`Error::Timeout`].
    ///
    /// ```
    /// use multiprocess::{Error, ShareableList, shared_memory::Item};
    ///
    /// let sl = ShareableList::new([Item::from(b"a\0b"), Item::None])?;
    /// assert_eq!(sl.get(0)?, Item::Bytes(b"a\0b".to_vec()));
    /// assert_eq!(sl.get(1)?, Item::None);
    /// assert!(matches!(sl.get(2), Err(Error::IndexOutOfRange { index: 2, len: 2 })));
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<Item> {
        let slot = self.slot(index)?;
        let segment = self.shm.mapped()?;
        let _guard = lock(segment)?;
        read_item(segment, index, slot)
    }

    /// Replaces item `index` with `item` (Python's `sl[index] = item`). An int, float or bool
    /// always fits; a str or bytes value longer than the slot's capacity is
    /// [`Error::InvalidArgument`] and leaves the item unchanged (CPython's
    /// "exceeds available storage"). Past the end is [`Error::IndexOutOfRange`]; the lock
    /// held for 10 s is [`Error::Timeout`], as for [`get`](ShareableList::get).
    ///
    /// ```
    /// use multiprocess::{Error, ShareableList, shared_memory::Item};
    ///
    /// let sl = ShareableList::new(["howdy"])?; // a slot of 8 bytes
    /// sl.set(0, "encodés")?; // 8 bytes of UTF-8
    /// assert!(matches!(sl.set(0, "encodées"), Err(Error::InvalidArgument(_))));
    /// assert_eq!(sl.get(0)?, Item::from("encodés"));
    /// sl.set(0, 3.5)?;
    /// assert_eq!(sl.get(0)?, Item::Float(3.5));
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn set(&self, index: usize, item: impl Into<Item>) -> Result<()> {
        let item = item.into();
        let slot = self.slot(index)?;
        if item.len_in_slot() > slot.capacity {
            return Err(Error::InvalidArgument(format!(
                "bytes/str item exceeds available storage: {} bytes, item {index} holds at most {}",
                item.len_in_slot(),
                slot.capacity
            )));
        }
        let segment = self.shm.mapped()?;
        let _guard = lock(segment)?;
        write_item(segment, index, slot, &item)
    }

    /// Every item, read under one hold of the lock (Python's `list(sl)`).
    ///
    /// ```
    /// use multiprocess::{ShareableList, shared_memory::Item};
    ///
    /// let sl = ShareableList::new([Item::from(1), "two".into()])?;
    /// assert_eq!(sl.to_vec()?, vec![Item::Int(1), Item::Str("two".into())]);
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<Item>> {
        let segment = self.shm.mapped()?;
        let _guard = lock(segment)?;
        self.slots.iter().enumerate().map(|(index, &slot)| read_item(segment, index, slot)).collect()
    }

    /// The position of the first item equal to `item` (Python's `sl.index(item)`); absent is
    /// [`Error::InvalidArgument`] (Python's `ValueError`). Equality is [`Item`]'s: `100` does
    /// not match `100.0`.
    ///
    /// ```
    /// use multiprocess::{Error, ShareableList, shared_memory::Item};
    ///
    /// let sl = ShareableList::new([Item::from("100"), 100.into()])?;
    /// assert_eq!(sl.index(&100.into())?, 1);
    /// assert!(matches!(sl.index(&Item::None), Err(Error::InvalidArgument(_))));
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn index(&self, item: &Item) -> Result<usize> {
        self.to_vec()?
            .iter()
            .position(|x| x == item)
            .ok_or_else(|| Error::InvalidArgument(format!("{item} not in ShareableList")))
    }

    /// How many items equal `item` (Python's `sl.count(item)`).
    ///
    /// ```
    /// let sl = multiprocess::ShareableList::new([42, 7, 42])?;
    /// assert_eq!(sl.count(&42.into())?, 2);
    /// assert_eq!(sl.count(&"42".into())?, 0);
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn count(&self, item: &Item) -> Result<usize> {
        Ok(self.to_vec()?.iter().filter(|x| *x == item).count())
    }

    /// The segment's name (Python's `sl.shm.name`).
    ///
    /// ```
    /// let sl = multiprocess::ShareableList::new([1])?;
    /// assert_eq!(sl.name(), sl.shm().name());
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The segment that holds the list (Python's `sl.shm`): unlink it through this.
    ///
    /// ```
    /// let sl = multiprocess::ShareableList::new([1])?;
    /// assert_eq!(sl.shm().size(), 32 + 16 + 8);
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Closes this handle's segment (Python's `sl.shm.close()`): later reads and writes are
    /// [`Error::HandleClosed`]; the list stays in its segment until unlinked.
    ///
    /// ```
    /// use multiprocess::{Error, ShareableList};
    ///
    /// let mut sl = ShareableList::new([1])?;
    /// sl.close();
    /// assert!(matches!(sl.get(0), Err(Error::HandleClosed)));
    /// sl.shm().unlink()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.shm.close();
    }

    fn slot(&self, index: usize) -> Result<Slot> {
        self.slots.get(index).copied().ok_or(Error::IndexOutOfRange { index, len: self.slots.len() })
    }
}

/// Reads item `index`, checking what its meta word says against the slot.
fn read_item(segment: &Segment, index: usize, slot: Slot) -> Result<Item> {
    let meta = word(segment, meta_at(index))?.load(Ordering::Relaxed);
    let tag = (meta >> TAG_SHIFT) as u8;
    let len = (meta & LEN_MASK) as usize;
    let value = || word(segment, slot.offset).map(|w| w.load(Ordering::Relaxed));
    match tag {
        INT => Ok(Item::Int(value()? as i64)),
        FLOAT => Ok(Item::Float(f64::from_bits(value()?))),
        BOOL => match value()? {
            0 => Ok(Item::Bool(false)),
            1 => Ok(Item::Bool(true)),
            v => Err(corrupt(format!("item {index} is a bool of value {v}"))),
        },
        NONE => Ok(Item::None),
        STR | BYTES => {
            if len > slot.capacity {
                return Err(corrupt(format!("item {index} claims {len} bytes in a slot of {}", slot.capacity)));
            }
            let mut bytes = vec![0u8; len];
            // SAFETY: the slot lies inside the page-aligned mapping (checked when the list was
            // made or opened) and `len` is within it; the mapping lives while borrowed.
            unsafe { atomic::load(segment.as_ptr(), slot.offset, &mut bytes) };
            if tag == BYTES {
                return Ok(Item::Bytes(bytes));
            }
            String::from_utf8(bytes).map(Item::Str).map_err(|_| corrupt(format!("item {index} is not valid UTF-8")))
        }
        _ => Err(corrupt(format!("item {index} has the unknown type tag {tag}"))),
    }
}

/// Writes `item`, which fits the slot (the caller checked), then its meta word.
fn write_item(segment: &Segment, index: usize, slot: Slot, item: &Item) -> Result<()> {
    let (tag, bits) = match item {
        Item::Int(v) => (INT, Some(*v as u64)),
        Item::Float(v) => (FLOAT, Some(v.to_bits())),
        Item::Bool(v) => (BOOL, Some(u64::from(*v))),
        Item::None => (NONE, None),
        Item::Str(_) => (STR, None),
        Item::Bytes(_) => (BYTES, None),
    };
    let meta = word(segment, meta_at(index))?;
    if let Some(bits) = bits {
        word(segment, slot.offset)?.store(bits, Ordering::Relaxed);
    }
    let bytes = match item {
        Item::Str(s) => s.as_bytes(),
        Item::Bytes(b) => b,
        _ => &[],
    };
    debug_assert!(bytes.len() <= slot.capacity);
    // SAFETY: as in `read_item`: the slot lies inside the mapping and the value fits it.
    unsafe { atomic::store(segment.as_ptr(), slot.offset, bytes) };
    meta.store((u64::from(tag) << TAG_SHIFT) | bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

impl fmt::Debug for ShareableList {
    /// As CPython's `repr`: `ShareableList(['howdy', 42], name='psm_0123abcd')`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShareableList(")?;
        match self.to_vec() {
            Ok(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")?;
            }
            Err(e) => write!(f, "<{e}>")?,
        }
        write!(f, ", name='{}')", self.name().escape_debug())
    }
}

/// Sends the segment (its descriptor and name): the child attaches to the same list.
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<ShareableList, D::Error> {
        ShareableList::attach(SharedMemory::deserialize(d)?).map_err(crate::error::de_custom)
    }
}
