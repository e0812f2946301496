//! What a manager's clients and its server say to each other: typed requests and replies,
//! postcard-encoded, one message each way per call.
//!
//! Values travel as the postcard bytes of the user's type ([`Bytes`]); the server stores and
//! compares them as bytes and never decodes them, so nothing a client sends can make the
//! server run code of the client's choosing (CPython's manager unpickles). Every request
//! names the operation as an enum variant, never as a string.

use serde::{Deserialize, Serialize};

/// A value's postcard bytes.
pub(crate) type Bytes = Vec<u8>;

/// The version of this protocol: a client and a server that disagree refuse each other at
/// the first message, instead of failing to decode in the middle of a call.
pub(crate) const PROTOCOL: u32 = 3;

/// This crate's version, which a client and its server must share: values travel as the
/// bytes of types both sides must define alike.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An object's number in its server. 0 is never an object.
pub(crate) type Id = u64;

/// The kinds of object a manager makes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dict,
    List,
    Namespace,
    Value,
    /// A queue of at most `maxsize` items (0: unbounded); `joinable` counts unfinished tasks.
    Queue {
        maxsize: u64,
        joinable: bool,
    },
    /// A lock: `Lock` (any thread may release), `RLock` (reentrant, owned by one thread),
    /// or a semaphore of `value` (bounded: never released above it).
    Lock {
        flavour: LockFlavour,
        value: u64,
    },
    Event,
    /// A condition variable over its own `RLock`.
    Condition,
    /// A barrier of `parties`.
    Barrier {
        parties: u64,
    },
    /// A set.
    Set,
}

/// Which lock.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockFlavour {
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
}

/// How a set compares with other items.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetRelation {
    Subset,
    Superset,
    Disjoint,
}

/// How long a blocking operation may wait.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all (`block=False`, `get_nowait`).
    No,
    /// Until it can.
    Forever,
    /// At most this many nanoseconds.
    Nanos(u64),
}

impl Wait {
    pub(crate) fn from_timeout(timeout: Option<std::time::Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(t) => Wait::Nanos(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

/// One request.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Request {
    /// The first message on a connection: who the client is (its pid and process tag), and
    /// which protocol it speaks.
    Hello { protocol: u32, version: String, pid: u32, tag: u32 },
    /// Asks for a shared-memory mailbox on this connection: the server answers `Done`, and
    /// the segment's descriptor follows on the socket (see `channel`).
    Channel,
    /// Makes an object of a type registered under `name`, whose interface the client knows
    /// as `interface` with `digest` (refused if the server's differs); the caller's process
    /// holds one reference to it.
    CreateCustom { name: String, interface: String, digest: u64, args: Bytes, holds: Vec<Id> },
    /// Makes an object; the caller's process holds one reference to it.
    Create { kind: Kind, init: Init, holds: Vec<Id> },
    /// Calls an operation on an object. `holds` lists the objects whose proxies are inside
    /// the values the call stores (the object then holds a reference to each).
    Call { id: Id, op: Op, holds: Vec<Id> },
    /// Takes one more reference for the caller's process.
    IncRef { id: Id },
    /// Gives one back.
    DecRef { id: Id },
    /// Takes a reference that no process holds yet, for a proxy on its way to another
    /// process: the one that decodes it claims it. Until then the caller's process answers
    /// for it (given back when that process ends, if never claimed).
    Pin { id: Id },
    /// Claims a pinned reference for the caller's process (or, if it was claimed already,
    /// takes a new one while the object lives).
    Claim { id: Id, pin: u64 },
    /// Pins one reference per id listed (an id may come more than once): what a process
    /// about to fork does for the proxies its child inherits.
    PinMany { ids: Vec<Id> },
    /// Claims pins (a fork child claiming what its parent pinned for it); which succeeded.
    ClaimMany { pins: Vec<(Id, u64)> },
    /// Shares `value` (a serde value, proxies in it) under `name`, for any client to `Lookup`;
    /// it replaces what was there.
    Share { name: String, value: Bytes, holds: Vec<Id> },
    /// The value shared under `name`: an `Item` whose references the caller's process adopts.
    Lookup { name: String },
    /// A shared-memory segment made for a `SharedMemoryManager`: the server unlinks it when it
    /// stops, also when its owner was killed.
    TrackSegment { name: String },
    /// How many objects the server holds (`_number_of_objects()`).
    NumberOfObjects,
    /// Stops the server (`shutdown()`); only the owner sends it.
    Shutdown,
}

/// What a new object starts with.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Init {
    Empty,
    /// One value (a `Value`).
    One(Bytes),
    /// A sequence (a list).
    Items(Vec<Bytes>),
    /// Pairs (a dict).
    Pairs(Vec<(Bytes, Bytes)>),
}

/// The operations. Indices are Python's: negative ones count from the end.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Op {
    // dict
    DictGet(Bytes),
    DictInsert(Bytes, Bytes),
    DictRemove(Bytes),
    DictContains(Bytes),
    DictKeys,
    DictValues,
    DictItems,
    DictUpdate(Vec<(Bytes, Bytes)>),
    DictSetDefault(Bytes, Bytes),
    DictPopItem,
    // list
    ListGet(i64),
    ListSet(i64, Bytes),
    ListPush(Bytes),
    ListExtend(Vec<Bytes>),
    ListInsert(i64, Bytes),
    ListPop(Option<i64>),
    ListRemove(Bytes),
    ListIndex(Bytes),
    ListCount(Bytes),
    ListSlice(Option<i64>, Option<i64>),
    ListReverse,
    ListRepeat(u64),
    /// The items and the list's version, for an operation the client does (a sort).
    ListSnapshot,
    /// Replaces every item if the list is still at `version`.
    ListReplace {
        version: u64,
        items: Vec<Bytes>,
    },
    // namespace
    NsGet(String),
    /// A name, the value, and its `Debug` text (the server cannot decode it to show it).
    NsSet(String, Bytes, String),
    NsDel(String),
    NsItems,
    // value
    ValueGet,
    ValueSet(Bytes),
    // queue
    QueuePut(Bytes, Wait),
    QueueGet(Wait),
    QueueSize,
    QueueTaskDone,
    QueueJoin(Wait),
    // locks and semaphores; `thread` names the calling thread of the calling process
    LockAcquire {
        thread: u64,
        wait: Wait,
    },
    LockRelease {
        thread: u64,
    },
    LockLocked,
    LockValue,
    // condition (its lock takes the lock operations)
    CondWait {
        thread: u64,
        wait: Wait,
    },
    CondNotify {
        thread: u64,
        n: u64,
    },
    // barrier
    BarrierWait(Wait),
    BarrierAbort,
    BarrierReset,
    /// Parties, waiting, broken.
    BarrierState,
    // set
    SetAdd(Bytes),
    SetRemove(Bytes),
    SetContains(Bytes),
    SetPop,
    SetItems,
    SetUpdate(Vec<Bytes>),
    SetDifferenceUpdate(Vec<Bytes>),
    SetIntersectionUpdate(Vec<Bytes>),
    SetSymmetricDifferenceUpdate(Vec<Bytes>),
    /// Whether the set is a subset of, a superset of, or disjoint from the items given.
    SetCompare(SetRelation, Vec<Bytes>),
    // event
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Wait),
    // an object of a registered type: its method number and encoded arguments
    Method {
        method: u32,
        args: Bytes,
    },
    // any container
    Len,
    Clear,
}

/// One reply.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Reply {
    Hello {
        protocol: u32,
        version: String,
        server_pid: u32,
        /// A number the server drew at start: a client that finds another number at the
        /// same address is talking to a new server, where its old proxies mean nothing.
        instance: u64,
    },
    Created(Id),
    Done,
    Bool(bool),
    Count(u64),
    Value(Bytes),
    Maybe(Option<Bytes>),
    Values(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    /// A namespace's attributes: name, value, `Debug` text.
    Named(Vec<(String, Bytes, String)>),
    MaybePair(Option<(Bytes, Bytes)>),
    Snapshot {
        version: u64,
        items: Vec<Bytes>,
    },
    /// A queue item, and the objects whose references the server moved to the caller's
    /// process with it (the proxies inside it adopt them).
    Item {
        value: Bytes,
        adopted: Vec<Id>,
    },
    Pinned(u64),
    Pins(Vec<u64>),
    /// A barrier's parties, parties waiting, and whether it is broken.
    Barrier {
        parties: u64,
        waiting: u64,
        broken: bool,
    },
    /// A queue's items waiting, and its bound (0: none).
    QueueSize {
        len: u64,
        maxsize: u64,
    },
    Claimed(Vec<bool>),
    /// The operation failed as the Python method would raise.
    Error(Remote),
}

/// An error the server reports: its kind, as the Python exception's name, and message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) kind: RemoteKind,
    pub(crate) message: String,
}

/// The errors a manager's objects raise, each turned into the matching [`crate::Error`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteKind {
    /// `IndexError`: the index asked for, and the length.
    Index { index: i64, len: u64 },
    /// `ValueError`: an item not in a list.
    NotInList,
    /// A list changed while the client worked on a copy (a sort): try again.
    Changed,
    /// No such object (freed, or never made).
    NoObject,
    /// The operation does not apply to this kind of object (a bad request).
    WrongKind,
    /// The request could not be decoded, or broke the protocol.
    BadRequest,
    /// `queue.Empty`
    Empty,
    /// `queue.Full`
    Full,
    /// The operation succeeded, but the lock's last holder died holding it.
    OwnerDied,
    /// `ValueError`/`RuntimeError`: released too many times.
    ReleasedTooManyTimes,
    /// `RuntimeError`: an `RLock` released by a thread that does not hold it.
    NotOwner,
    /// `ValueError('task_done() called too many times')`
    TaskDoneTooManyTimes,
    /// `threading.BrokenBarrierError`
    BrokenBarrier,
    /// What a registered type's method raised: its kind (a panic is `Panic`).
    Raised(String),
}

impl Remote {
    pub(crate) fn new(kind: RemoteKind, message: impl Into<String>) -> Remote {
        Remote { kind, message: message.into() }
    }
}
