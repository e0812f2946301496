//! What a pool runs: a function of serde arguments returning a serde value, found in a
//! worker by its address in the same binary, and run over a chunk of argument tuples.

use crate::popen;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A function a pool can run on arguments `Args` (a tuple of 0 to 8 serde values): a fn
/// item or a closure that captures nothing, returning a serde value.
///
/// Such functions have no state, so a worker started by any start method finds the same
/// function by its address in the same binary.
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
pub trait Task<Args>: Copy + Send + 'static {
    /// What the function returns.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Calls the function.
    fn call(self, args: Args) -> Self::Output;
}

macro_rules! impl_task {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a),*> Task<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + 'static,
            Ret: Serialize + DeserializeOwned + Send + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(self, ($($a,)*): ($($a,)*)) -> Ret {
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

/// The worker-side runner of one task type: decodes a chunk (`Vec<Args>`), calls the
/// function on each, and encodes `Vec<Result<Output, String>>` (a panic's message).
pub(crate) type Runner = fn(&[u8]) -> Vec<u8>;

/// The runner for `F` on `A`.
pub(crate) fn runner<F: Task<A>, A: DeserializeOwned>() -> Runner {
    const { assert!(std::mem::size_of::<F>() == 0, "a pool task must be a fn item or a closure that captures nothing") };
    run_chunk::<F, A>
}

fn run_chunk<F: Task<A>, A: DeserializeOwned>(payload: &[u8]) -> Vec<u8> {
    let results: Vec<Result<F::Output, String>> = match postcard::from_bytes::<Vec<A>>(payload) {
        Ok(chunk) => chunk
            .into_iter()
            .map(|args| {
                // SAFETY: `F` is zero-sized (asserted in `runner`): a fn item or a closure
                // capturing nothing, with no bytes and no invariants, so the value the pool
                // was given in the parent is re-made here out of nothing.
                let f: F = unsafe { std::mem::zeroed() };
                catch_unwind(AssertUnwindSafe(|| f.call(args))).map_err(|_| take_panic_message())
            })
            .collect(),
        Err(e) => vec![Err(format!("cannot decode the task's arguments: {e}"))],
    };
    postcard::to_allocvec(&results).unwrap_or_else(|e| {
        let failed: Vec<Result<(), String>> =
            results.iter().map(|_| Err(format!("cannot encode the task's result: {e}"))).collect();
        postcard::to_allocvec(&failed).unwrap_or_default()
    })
}

/// The runner as an offset in this binary, to travel to a worker.
pub(crate) fn runner_offset(runner: Runner) -> i64 {
    popen::fn_offset_of(runner as usize)
}

/// The runner at `offset`.
///
/// # Safety
/// `offset` must come from [`runner_offset`] in a process running this binary: the pool's
/// own parent, over the pool's own queue.
pub(crate) unsafe fn runner_at(offset: i64) -> Runner {
    // SAFETY: by the contract, the address is a `Runner` in this binary.
    unsafe { std::mem::transmute::<usize, Runner>(popen::address_at(offset)) }
}

thread_local! {
    /// The last panic's message and location, recorded by the worker's panic hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// In a worker: panics are recorded for the task's result instead of printed (the parent
/// reports them, as CPython re-raises a task's exception in the caller).
pub(crate) fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
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
    }));
}

pub(crate) fn take_panic_message() -> String {
    LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".into())
}
