//! Progress bars for a pool's `map` and `imap` (cargo feature `progress`, with indicatif).
//! Python has none; the usual `tqdm(pool.imap(f, xs), total=n)` is what these stand for.

use super::{Pool, Task, default_chunksize};
use crate::Result;
use indicatif::{ProgressBar, ProgressIterator};
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Pool {
    /// As [`map`](Pool::map), drawing a progress bar on stderr that moves as results come
    /// in (in order).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// assert_eq!(pool.map_progress(square, 0..100)?[99], 9801);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn map_progress<F, T>(&self, f: F, items: impl IntoIterator<Item = T>) -> Result<Vec<F::Output>>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
    {
        let items: Vec<T> = items.into_iter().collect();
        let n = items.len();
        let chunksize = default_chunksize(n, self.processes);
        let bar = ProgressBar::new(n as u64);
        let out = self.imap_chunked(f, items, chunksize)?.progress_with(bar.clone()).collect();
        bar.finish();
        out
    }

    /// As [`imap`](Pool::imap), with a progress bar on stderr; `len` is the number of items
    /// if known (Python's `tqdm(..., total=len)`), else the bar counts up without an end.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = multiprocess::Pool::new(2)?;
    /// let sum: u64 = pool.imap_progress(square, 0..10, Some(10))?.map(|r| r.unwrap()).sum();
    /// assert_eq!(sum, 285);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn imap_progress<'a, F, T, I>(
        &'a self,
        f: F,
        items: I,
        len: Option<u64>,
    ) -> Result<impl Iterator<Item = Result<F::Output>> + 'a>
    where
        F: Task<(T,)>,
        T: Serialize + DeserializeOwned,
        I: IntoIterator<Item = T>,
        I::IntoIter: 'a,
    {
        let bar = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        Ok(self.imap(f, items)?.progress_with(bar))
    }
}
