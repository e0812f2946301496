//! The error a `put` returns: it hands the item back.

use crate::Error;
use std::fmt;

/// Why a `put` did not put its item, with the item (Python's `queue.Full`, and the
/// `ValueError` of a closed queue). The item is never lost: take it back with
/// [`into_inner`](PutError::into_inner), or let `?` turn the error into an [`Error`]
/// (dropping the item) where it is not wanted.
///
/// ```
/// use multiprocess::{Error, PutError, Queue};
/// let q = Queue::with_maxsize(1)?;
/// q.put(1)?;
/// let e = q.put_nowait(2).unwrap_err();
/// assert!(matches!(e, PutError::Full(2)));
/// assert_eq!(e.into_inner(), 2);
/// let e: Error = q.put_nowait(3).unwrap_err().into();
/// assert!(matches!(e, Error::Full));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub enum PutError<T> {
    /// The queue held `maxsize` items until the call gave up (`queue.Full`).
    Full(T),
    /// This handle was closed (`ValueError: Queue is closed`).
    Closed(T),
    /// The item could not be put: it could not be encoded, or is too large for a queue.
    Failed(T, Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    ///
    /// ```
    /// let q = multiprocess::Queue::new()?;
    /// q.close();
    /// assert_eq!(q.put("x".to_string()).unwrap_err().into_inner(), "x");
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(item) | PutError::Closed(item) | PutError::Failed(item, _) => item,
        }
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        match e {
            PutError::Full(_) => Error::Full,
            PutError::Closed(_) => Error::Closed,
            PutError::Failed(_, e) => e,
        }
    }
}

// Not derived: the item need not be `Debug` for the error to be.
impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Failed(_, e) => write!(f, "Failed(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("queue is full"),
            PutError::Closed(_) => f.write_str("queue is closed"),
            PutError::Failed(_, e) => write!(f, "item not put: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}
