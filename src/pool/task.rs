//! What a pool runs: a function of serde arguments returning a serde value, found in a
//! worker by its address in the same binary, and run over a chunk of argument tuples.

use crate::popen;
use crate::queues::codec::Append;
use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A function a pool can run on arguments `Args` (a tuple of 0 to 8 serde values),
/// returning a serde value: a fn item or a closure that captures nothing, under every start
/// method; under fork, any closure.
///
/// A function with no state is found by its address in the same binary, so a worker
/// started by any start method runs it. A closure that captures values runs only in a
/// process forked after it was made: a fork pool starts fresh workers for it (see
/// [`Pool`](crate::Pool)). Under spawn and forkserver, the pool refuses it with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
///
/// Python counterpart: the `func` of `Pool.apply(func, args)`.
///
/// ```
/// use multiprocess::Pool;
/// fn add(a: i32, b: i32) -> i32 {
///     a + b
/// }
/// let pool = Pool::new(1)?;
/// assert_eq!(pool.apply(add, (2, 3))?, 5);
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pool task",
    label = "expected a function of the args returning a serde value",
    note = "a task is a fn item or a `Send + Sync + 'static` closure that takes the values of the args tuple (`(x,)` for one, the item itself for `map`) and returns a `Serialize + DeserializeOwned + Send + 'static` value",
    note = "a closure that captures values runs in a fork pool only; under spawn and forkserver the pool refuses it with `Error::InvalidArgument`"
)]
pub trait Task<Args>: Send + Sync + 'static {
    /// What the function returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Calls the function.
    fn call(&self, args: Args) -> Self::Output;
}

macro_rules! impl_task {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a),*> Task<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Send + Sync + 'static,
            Ret: Serialize + DeserializeOwned + Send + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(&self, ($($a,)*): ($($a,)*)) -> Ret {
                self($($a),*)
            }
        }
    };
}
impl_task!();
impl_task!(A1);
impl_task!(A1, A2);
impl_task!(A1, A2, A3);
impl_task!(A1, A2, A3, A4);
impl_task!(A1, A2, A3, A4, A5);
impl_task!(A1, A2, A3, A4, A5, A6);
impl_task!(A1, A2, A3, A4, A5, A6, A7);
impl_task!(A1, A2, A3, A4, A5, A6, A7, A8);

/// The worker-side runner of a stateless task type: decodes a chunk (`Vec<Args>`), calls
/// the function on each, and appends the encoded `Vec<Result<Output, String>>` (a panic's
/// message) to the vector it is given.
pub(crate) type Runner = fn(&[u8], &mut Vec<u8>);

/// The worker-side runner of a closure type: as [`Runner`], with the closure's address.
///
/// # Safety
/// The address must be that of a live closure of the runner's type in this process's
/// memory: one made before this process was forked from the pool's parent.
pub(crate) type ClosureRunner = unsafe fn(usize, &[u8], &mut Vec<u8>);

/// How many capturing closures have been given to fork pools in this process: a closure
/// numbered `n` is in the memory of every process forked after the count reached `n`.
static CLOSURES: AtomicU64 = AtomicU64::new(0);

/// The closures made so far: a worker forked now can run each of them.
pub(crate) fn closures_made() -> u64 {
    CLOSURES.load(Ordering::SeqCst)
}

/// A task as the pool sends it.
#[derive(Clone)]
pub(crate) enum Func {
    /// A fn item or a closure with no captures: any worker runs it.
    Plain(Runner),
    /// A capturing closure: only workers forked after it was made can run it.
    Closure(Closure),
}

impl Func {
    /// The runner's offset in the binary, and the closure it runs, if it is one.
    pub(crate) fn runner_and_closure(&self) -> (i64, Option<&Closure>) {
        match self {
            Func::Plain(runner) => (offset_of(*runner as usize), None),
            Func::Closure(c) => (offset_of(c.runner as usize), Some(c)),
        }
    }
}

/// A capturing closure, kept alive in the parent while chunks of it are queued or running.
#[derive(Clone)]
pub(crate) struct Closure {
    pub(crate) runner: ClosureRunner,
    /// The closure's address, the same in every process forked after `number`.
    pub(crate) address: usize,
    /// Its number in [`CLOSURES`]: a worker forked when the count was at least this runs it.
    pub(crate) number: u64,
    _keep: Arc<dyn Any + Send + Sync>,
}

/// `f` as the pool sends it.
pub(crate) fn func<F: Task<A>, A: DeserializeOwned>(f: F) -> Func {
    if std::mem::size_of::<F>() == 0 {
        // Nothing to keep: the worker re-makes it out of nothing.
        std::mem::forget(f);
        return Func::Plain(run_stateless::<F, A>);
    }
    let keep = Arc::new(f);
    let address = Arc::as_ptr(&keep) as usize;
    // Counted after it was made: a worker forked once the count is at least `number` was
    // forked after this closure was in memory.
    let number = CLOSURES.fetch_add(1, Ordering::SeqCst) + 1;
    Func::Closure(Closure { runner: run_closure::<F, A>, address, number, _keep: keep })
}

fn run_stateless<F: Task<A>, A: DeserializeOwned>(payload: &[u8], out: &mut Vec<u8>) {
    // SAFETY: `F` is zero-sized (checked in `func`, the only maker of this runner): a fn
    // item or a closure capturing nothing, with no bytes and no invariants, so the value
    // the pool was given in the parent is re-made here out of nothing. It is not dropped, as
    // the parent's was not.
    let f = std::mem::ManuallyDrop::new(unsafe { std::mem::zeroed::<F>() });
    run_chunk::<F, A>(&f, payload, out)
}

/// # Safety
/// As [`ClosureRunner`]: `address` is an `F` made before this process was forked.
unsafe fn run_closure<F: Task<A>, A: DeserializeOwned>(address: usize, payload: &[u8], out: &mut Vec<u8>) {
    // SAFETY: by the contract, the parent held this `F` in an `Arc` at `address` when it
    // forked us, and our copy of it is never freed (the parent's `Arc` was not ours to drop).
    let f: &F = unsafe { &*(address as *const F) };
    run_chunk::<F, A>(f, payload, out)
}

/// Runs `f` on each argument tuple of a chunk (`Vec<A>`) and encodes the results as a
/// `Vec<Result<Output, String>>` (a panic's message), each decoded, run and encoded in turn:
/// neither the arguments nor the results are ever held as a list (a map's chunk of 125,000
/// would be megabytes of memory touched, in a fresh worker for the first time).
fn run_chunk<F: Task<A>, A: DeserializeOwned>(f: &F, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(payload.len() + 16);
    if let Err(e) = crate::reduction::seed_from_bytes(RunEach { f, out, _args: PhantomData }, payload, |_| true) {
        // Arguments that do not decode (another type: not from this pool) fail the chunk as
        // one result; tasks decoded before the fault have run.
        out.truncate(start);
        out.extend(encoded_failure(&format!("cannot decode the task's arguments: {e}")));
    }
}

/// One failure, as a chunk's encoded results.
fn encoded_failure(message: &str) -> Vec<u8> {
    postcard::to_allocvec(&[Err::<(), &str>(message)][..]).unwrap_or_default()
}

/// Decodes a chunk's arguments one tuple at a time, runs the task on each and appends its
/// encoded result to `out`.
struct RunEach<'a, F, A> {
    f: &'a F,
    out: &'a mut Vec<u8>,
    _args: PhantomData<fn(A)>,
}

impl<'de, F: Task<A>, A: DeserializeOwned> DeserializeSeed<'de> for RunEach<'_, F, A> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: Task<A>, A: DeserializeOwned> Visitor<'de> for RunEach<'_, F, A> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a chunk of argument tuples")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        // The results' count goes first: the arguments'. postcard tells it unless the
        // arguments take fewer bytes than their count (`()`): then the results wait in a
        // buffer of their own until they are counted.
        let count = seq.size_hint();
        let mut unknown = Vec::new();
        let body: &mut Vec<u8> = match count {
            Some(count) => {
                put(self.out, &(count as u64));
                self.out
            }
            None => &mut unknown,
        };
        let mut ran = 0u64;
        while let Some(args) = seq.next_element::<A>()? {
            ran += 1;
            match catch_unwind(AssertUnwindSafe(|| self.f.call(args))) {
                Ok(value) => {
                    let mark = body.len();
                    if let Err(e) = postcard::serialize_with_flavor(&Ok::<_, ()>(&value), Append(body)) {
                        body.truncate(mark);
                        put(body, &Err::<(), String>(format!("cannot encode the task's result: {e}")));
                    }
                }
                Err(_) => put(body, &Err::<(), String>(take_panic_message())),
            }
        }
        if count.is_none() {
            put(self.out, &ran);
            self.out.extend_from_slice(&unknown);
        }
        Ok(())
    }
}

/// Appends `value` (a count, or a result that cannot fail to encode) to `out`.
fn put(out: &mut Vec<u8>, value: &impl Serialize) {
    // A `u64` or a `Result<(), String>` always encodes: nothing to handle.
    let _ = postcard::serialize_with_flavor(value, Append(out));
}

/// A function of this binary as an offset, to travel to a worker.
pub(crate) fn offset_of(address: usize) -> i64 {
    popen::fn_offset_of(address)
}

/// The stateless runner at `offset`.
///
/// # Safety
/// `offset` must come from [`offset_of`] of a [`Runner`] in a process running this binary:
/// the pool's own parent, over the pool's own queue.
pub(crate) unsafe fn runner_at(offset: i64) -> Runner {
    // SAFETY: by the contract, the address is a `Runner` in this binary.
    unsafe { std::mem::transmute::<usize, Runner>(popen::address_at(offset)) }
}

/// The closure runner at `offset`.
///
/// # Safety
/// As [`runner_at`], for a [`ClosureRunner`].
pub(crate) unsafe fn closure_runner_at(offset: i64) -> ClosureRunner {
    // SAFETY: by the contract, the address is a `ClosureRunner` in this binary.
    unsafe { std::mem::transmute::<usize, ClosureRunner>(popen::address_at(offset)) }
}

thread_local! {
    /// The last panic's message and location, recorded by the worker's panic hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether this process records panics for its tasks' results (a pool worker).
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// In a worker: panics are recorded for the task's result instead of printed (the parent
/// reports them, as CPython re-raises a task's exception in the caller). The hook that
/// records them is the crate's own child hook, installed before a fork (see
/// `bootstrap::install_panic_header`); this only switches it over, without the hook lock,
/// which another thread of the parent may have held at the fork (a fork child that took it
/// then waited for ever).
pub(crate) fn record_panics() {
    crate::bootstrap::install_panic_header();
    RECORDING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether panics are recorded here (see [`record_panics`]).
pub(crate) fn recording() -> bool {
    RECORDING.load(std::sync::atomic::Ordering::SeqCst)
}

/// Records a panic's message and location for the task's result (from the panic hook).
pub(crate) fn record(info: &std::panic::PanicHookInfo<'_>) {
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    let text = match info.location() {
        Some(at) => format!("{message} (at {}:{}:{})", at.file(), at.line(), at.column()),
        None => message,
    };
    LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
}

pub(crate) fn take_panic_message() -> String {
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Task<A>, A: DeserializeOwned>(f: &F, payload: &[u8]) -> Vec<Result<F::Output, String>> {
        let mut out = vec![0xaa];
        run_chunk::<F, A>(f, payload, &mut out);
        assert_eq!(out[0], 0xaa, "appended, after what was there");
        crate::reduction::from_bytes_exact(&out[1..]).unwrap()
    }

    fn halve(x: u32) -> u32 {
        assert!(x.is_multiple_of(2), "odd: {x}");
        x / 2
    }

    #[test]
    fn a_chunk_runs_each_task_and_encodes_each_result() {
        let args = postcard::to_allocvec(&vec![(4u32,), (3,), (10,)]).unwrap();
        let out = run::<_, (u32,)>(&halve, &args);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], Ok(2));
        // The message is recorded by a worker's panic hook (not installed in this test).
        assert!(out[1].is_err(), "{out:?}");
        assert_eq!(out[2], Ok(5));
    }

    #[test]
    fn a_chunk_of_empty_argument_tuples_is_counted_as_it_runs() {
        // Ten `()` take no bytes after their count: postcard cannot vouch for the count.
        fn seven() -> u8 {
            7
        }
        let args = postcard::to_allocvec(&vec![(); 10]).unwrap();
        assert_eq!(run::<_, ()>(&seven, &args), vec![Ok(7); 10]);
    }

    #[test]
    fn arguments_of_another_type_fail_the_chunk() {
        // One tuple, whose `u32` ends in the middle of its varint.
        let out = run::<_, (u32,)>(&halve, &[1, 0x80]);
        assert!(matches!(out.as_slice(), [Err(m)] if m.starts_with("cannot decode the task's arguments")), "{out:?}");
    }
}
