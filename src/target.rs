//! What a process runs: a target function with serde arguments, and what its return value
//! means as an exit code.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::fmt::Debug;
use std::process::ExitCode;

/// A function a child process can run with arguments `Args` (a tuple of 0 to 8 serde values).
///
/// Implemented for fn items and non-capturing closures (`Fn(A1, .., An) -> R`) whose return
/// type is an [`Outcome`]. Such functions have no state, so under the spawn and forkserver
/// start methods the child finds the same function by its address in the same binary.
/// Capturing closures are rejected at compile time; use [`Process::from_closure`] for those.
///
/// What the compiler says when a function is not a target, at `cargo check`:
///
/// ```text
/// error[E0277]: `{closure@src/main.rs:4:27: 4:34}` is not a process target
///   = note: a target is a fn item or a closure that captures nothing; for a closure that
///           captures values, use `Process::from_closure(move || ..)`, which starts it by fork
/// ```
///
/// A closure that captures values is caught there when one of them is not `Copy`, `Send` and
/// `'static` (a `String`, a `Connection`, a reference); one that captures only such values
/// (a moved `i32`) passes the trait check, as no trait tells it from a closure without
/// captures, and is refused when the crate is built (`cargo build`, not `cargo check`) by an
/// assertion in [`Process::new`] naming [`Process::from_closure`].
///
/// Python counterpart: the `target` and `args` of `multiprocessing.Process`.
///
/// ```
/// use multiprocess::Process;
/// fn add(a: i32, b: i32) -> multiprocess::Result<()> {
///     assert_eq!(a + b, 3);
///     Ok(())
/// }
/// let mut p = Process::new(add, (1, 2));
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), multiprocess::Error>(())
/// ```
///
/// [`Process::new`]: crate::Process::new
/// [`Process::from_closure`]: crate::Process::from_closure
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a process target",
    label = "expected a fn item or a closure that captures nothing, returning an `Outcome`",
    note = "a target is a fn item or a closure that captures nothing; for a closure that captures values, use `Process::from_closure(move || ..)`, which starts it by fork",
    note = "a target takes the values of the args tuple (`(x,)` for one) and returns `()`, `ExitCode`, `Infallible`, or `Result<T, E>` with `T` one of these and `E: Debug`"
)]
pub trait Target<Args>: Copy + Send + 'static {
    /// What the function returns.
    type Output: Outcome;
    /// Calls the function.
    fn call(self, args: Args) -> Self::Output;
}

/// The arguments a [`Target`] takes: a tuple of serde values (handles included).
///
/// Each value is `Serialize + DeserializeOwned + Send + 'static`: the parent encodes the
/// tuple and the child decodes it (under fork too, so that every start method runs the same
/// code). Otherwise the compiler says, at `cargo check`:
///
/// ```text
/// error[E0277]: `(Rc<u8>,)` cannot be the arguments of a process target
///   = note: args are a tuple of 0 to 8 values, each `Serialize + DeserializeOwned + Send + 'static`
///           (handles such as `Connection`, `Lock` and `Queue` are)
/// ```
///
/// Python counterpart: the `args` of `multiprocessing.Process`, which must pickle.
///
/// ```
/// use multiprocess::{Connection, Process, pipe};
/// fn child(n: u32, words: Vec<String>, conn: Connection) -> multiprocess::Result<()> {
///     conn.send(&(n as usize + words.len()))
/// }
/// let (r, w) = pipe()?;
/// let mut p = Process::new(child, (1u32, vec!["a".to_string()], w));
/// p.start()?;
/// assert_eq!(r.recv::<usize>()?, 2);
/// p.join()?;
/// # Ok::<(), multiprocess::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the arguments of a process target",
    label = "not a tuple of serde values",
    note = "args are a tuple of 0 to 8 values, each `Serialize + DeserializeOwned + Send + 'static` (handles such as `Connection`, `Lock` and `Queue` are)",
    note = "for a type of your own, derive `serde::Serialize` and `serde::Deserialize`; `Rc`, `RefCell` borrows and references cannot travel"
)]
pub trait Args: Serialize + DeserializeOwned + Send + 'static {}

// Not recommended, so that a failing argument is reported as not `Args` (one error with the
// note above) rather than as three errors about serde and `Send`.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> Args for T {}

mod sealed {
    /// What a [`Target`](super::Target) asks of a function besides its signature: no state
    /// that a copy in another process could not have. A trait of its own, with an impl the
    /// compiler does not recommend, so that a closure capturing a `String` is reported as not
    /// a target (naming `Process::from_closure`) rather than as "`String: Copy`".
    pub trait Stateless<Args>: Copy + Send + 'static {}
}

macro_rules! impl_target {
    ($($a:ident),*) => {
        // `Copy` keeps out a closure that holds a `String`, a handle or a borrow; the size
        // check in `Process::new` keeps out the rest.
        #[diagnostic::do_not_recommend]
        impl<Func, Ret, $($a),*> sealed::Stateless<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + 'static,
        {
        }

        impl<Func, Ret, $($a),*> Target<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + sealed::Stateless<($($a,)*)>,
            Ret: Outcome,
        {
            type Output = Ret;
            #[allow(non_snake_case)]
            fn call(self, ($($a,)*): ($($a,)*)) -> Ret {
                self($($a),*)
            }
        }
    };
}
impl_target!();
impl_target!(A1);
impl_target!(A1, A2);
impl_target!(A1, A2, A3);
impl_target!(A1, A2, A3, A4);
impl_target!(A1, A2, A3, A4, A5);
impl_target!(A1, A2, A3, A4, A5, A6);
impl_target!(A1, A2, A3, A4, A5, A6, A7);
impl_target!(A1, A2, A3, A4, A5, A6, A7, A8);

/// What a target's return value means for the exit code: the same set of types as
/// [`std::process::Termination`], so a target reads like a `main`.
///
/// `()` exits 0; an [`ExitCode`] exits with its value; `Ok(x)` as `x` does; `Err(e)` exits 1
/// after printing `Process <name>:` and `Error: {e:?}` to stderr, as CPython prints an uncaught
/// exception's traceback.
///
/// Any other return type is refused at `cargo check`; a process's return value is not sent
/// back, so the compiler points to the ways that are:
///
/// ```text
/// error[E0277]: `Option<u8>` cannot be what a process target returns
///   = note: a target returns `()`, `ExitCode`, `Infallible`, or `Result<T, E>` with `T` one of
///           these and `E: Debug`, as `main` may
///   = note: the return value only sets the exit code: to send a value to the parent, pass a
///           `Connection` or a `Queue` in the args, or use a `Pool`
/// ```
///
/// Python counterpart: a target returning (0), `sys.exit(n)`, or raising (1).
///
/// ```
/// use multiprocess::Outcome;
/// assert_eq!(().into_exitcode(), Ok(0));
/// assert_eq!(std::process::ExitCode::from(8).into_exitcode(), Ok(8));
/// let failed: Result<(), &str> = Err("boom");
/// assert_eq!(failed.into_exitcode(), Err("Error: \"boom\"".to_string()));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be what a process target returns",
    label = "this returns `{Self}`, which is not an `Outcome`",
    note = "a target returns `()`, `ExitCode`, `Infallible`, or `Result<T, E>` with `T` one of these and `E: Debug`, as `main` may",
    note = "the return value only sets the exit code: to send a value to the parent, pass a `Connection` or a `Queue` in the args, or use a `Pool`"
)]
pub trait Outcome {
    /// The exit code, or the error text to print before exiting 1.
    fn into_exitcode(self) -> Result<i32, String>;
}

impl Outcome for () {
    fn into_exitcode(self) -> Result<i32, String> {
        Ok(0)
    }
}

impl Outcome for ExitCode {
    fn into_exitcode(self) -> Result<i32, String> {
        // `ExitCode` keeps its number private; on Unix it is one byte, so find which.
        Ok((0..=255u8).find(|&n| ExitCode::from(n) == self).map_or(1, i32::from))
    }
}

impl Outcome for Infallible {
    fn into_exitcode(self) -> Result<i32, String> {
        match self {}
    }
}

impl<T: Outcome, E: Debug> Outcome for Result<T, E> {
    fn into_exitcode(self) -> Result<i32, String> {
        match self {
            Ok(v) => v.into_exitcode(),
            Err(e) => Err(format!("Error: {e:?}")),
        }
    }
}
