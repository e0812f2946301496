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
/// [`Process::from_closure`]: crate::Process::from_closure
pub trait Target<Args>: Copy + Send + 'static {
    /// What the function returns.
    type Output: Outcome;
    /// Calls the function.
    fn call(self, args: Args) -> Self::Output;
}

/// The arguments a [`Target`] takes: a tuple of serde values (handles included).
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
pub trait Args: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Args for T {}

macro_rules! impl_target {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a),*> Target<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Ret + Copy + Send + 'static,
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
/// Python counterpart: a target returning (0), `sys.exit(n)`, or raising (1).
///
/// ```
/// use multiprocess::Outcome;
/// assert_eq!(().into_exitcode(), Ok(0));
/// assert_eq!(std::process::ExitCode::from(8).into_exitcode(), Ok(8));
/// let failed: Result<(), &str> = Err("boom");
/// assert_eq!(failed.into_exitcode(), Err("Error: \"boom\"".to_string()));
/// ```
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
