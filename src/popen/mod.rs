//! Starting a child, one file per start method (Python's `popen_fork.py`,
//! `popen_spawn_posix.py`, `popen_forkserver.py`), and the type-erased target they start.

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use crate::bootstrap::ArgBytes;
use crate::reduction::{self, Encoded};
use crate::target::{Args, Outcome, Target};
use crate::{Error, Result};
use std::os::fd::OwnedFd;

/// A target with its arguments, ready to run in a fork child or to be encoded for another
/// binary image.
pub(crate) trait Launch: Send {
    /// Runs the target here (in a fork child): its exit code, or the error text to print.
    /// Takes the arguments out and leaves the (now empty) value in place: a child that is
    /// about to exit need not free it, and freeing would write to pages it shares with its
    /// parent, each write a page copy.
    fn run(&mut self) -> std::result::Result<i32, String>;
    /// The entry point's offset and the encoded arguments, for spawn and forkserver.
    fn encode(&self) -> Result<Payload>;
}

/// What a spawn or forkserver child needs to find and call its target.
pub(crate) struct Payload {
    /// The entry point, as an offset from [`anchor`] in this binary.
    pub(crate) entry: i64,
    pub(crate) args: Encoded,
}

/// The child-side entry point a [`Payload`] names: decodes the arguments, drops the message
/// they came in, and calls the target.
pub(crate) type Entry = fn(ArgBytes, Vec<OwnedFd>) -> std::result::Result<i32, String>;

/// A fixed point in the binary; entry points travel as offsets from it, because ASLR moves
/// the whole image but not its parts relative to each other.
#[inline(never)]
fn anchor() -> usize {
    // A body of its own keeps the linker from folding it into another empty function.
    std::hint::black_box(0x6d70_616e_6368_6f72)
}

fn offset_of(entry: Entry) -> i64 {
    entry as usize as i64 - (anchor as fn() -> usize) as usize as i64
}

/// The entry point at `offset` from the anchor.
///
/// # Safety
/// `offset` must come from [`offset_of`] in a process running the same binary (the caller
/// checks the executable's identity first).
pub(crate) unsafe fn entry_at(offset: i64) -> Entry {
    let address = ((anchor as fn() -> usize) as usize as i64).wrapping_add(offset) as usize;
    // SAFETY: by the contract, `address` is where `offset_of` found an `Entry` in this binary.
    unsafe { std::mem::transmute::<usize, Entry>(address) }
}

/// A plain `fn()` as an offset from [`anchor`], to travel to a child (a barrier's action).
pub(crate) fn fn_offset(f: fn()) -> i64 {
    fn_offset_of(f as usize)
}

/// A function's address as an offset from [`anchor`].
pub(crate) fn fn_offset_of(address: usize) -> i64 {
    address as i64 - (anchor as fn() -> usize) as usize as i64
}

/// The address at `offset` from [`anchor`] in this process.
pub(crate) fn address_at(offset: i64) -> usize {
    ((anchor as fn() -> usize) as usize as i64).wrapping_add(offset) as usize
}

/// The `fn()` at `offset` from the anchor.
///
/// # Safety
/// As [`entry_at`]: `offset` must come from [`fn_offset`] in a process running this binary.
pub(crate) unsafe fn fn_at(offset: i64) -> fn() {
    let address = ((anchor as fn() -> usize) as usize as i64).wrapping_add(offset) as usize;
    // SAFETY: by the contract, `address` is where `fn_offset` found a `fn()` in this binary.
    unsafe { std::mem::transmute::<usize, fn()>(address) }
}

/// A fn item or non-capturing closure with its arguments (taken out when run).
pub(crate) struct FnLaunch<F, A> {
    pub(crate) f: F,
    pub(crate) args: Option<A>,
}

fn entry<F: Target<A>, A: Args>(bytes: ArgBytes, fds: Vec<OwnedFd>) -> std::result::Result<i32, String> {
    let args: A = reduction::decode(bytes.as_slice(), fds).map_err(|e| format!("cannot decode the arguments: {e}"))?;
    // The target has its own copy now: the message's memory goes back before it runs.
    drop(bytes);
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a process target must capture nothing: for a closure that captures values, use Process::from_closure"
        )
    };
    // SAFETY: `F` is zero-sized (asserted above and in `Process::new`): a fn item or a closure
    // that captures nothing. Such a value has no bytes and no invariants, so the one
    // `Process::new` was given in the parent is re-made here out of nothing.
    let f: F = unsafe { std::mem::zeroed() };
    f.call(args).into_exitcode()
}

impl<F: Target<A>, A: Args> Launch for FnLaunch<F, A> {
    fn run(&mut self) -> std::result::Result<i32, String> {
        let args = self.args.take().ok_or("the target already ran")?;
        self.f.call(args).into_exitcode()
    }

    fn encode(&self) -> Result<Payload> {
        let args = self.args.as_ref().ok_or(Error::AlreadyStarted)?;
        Ok(Payload { entry: offset_of(entry::<F, A>), args: reduction::encode(args)? })
    }
}

/// Any `FnOnce` closure: it can only run in a fork child, which has the closure in memory.
pub(crate) struct ClosureLaunch<C>(pub(crate) Option<C>);

impl<C, R> Launch for ClosureLaunch<C>
where
    C: FnOnce() -> R + Send + 'static,
    R: Outcome,
{
    fn run(&mut self) -> std::result::Result<i32, String> {
        let closure = self.0.take().ok_or("the target already ran")?;
        closure().into_exitcode()
    }

    fn encode(&self) -> Result<Payload> {
        Err(Error::StartMethod("a closure can only be started by fork".into()))
    }
}
