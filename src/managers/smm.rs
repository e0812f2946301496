//! `SharedMemoryManager` (Python's `multiprocessing.managers.SharedMemoryManager`): a manager
//! whose server answers for the shared-memory segments made through it, and unlinks them all
//! when it stops, also when its owner was SIGKILLed.

use super::SyncManager;
use super::wire::Request;
use crate::shared_memory::{Item, ShareableList, SharedMemory};
use crate::{Result, StartMethod};
use std::fmt;

/// A manager of shared-memory segments (Python's `SharedMemoryManager`): the segments and
/// lists made through it live until it shuts down (or its owner dies), whoever made them,
/// and are unlinked then. It is a [`SyncManager`] too (it derefs to one).
///
/// A segment made through it is not known to the maker's own resource tracker: the
/// manager's server answers for it, so a client may exit and leave it for others.
///
/// ```
/// use multiprocess::managers::SharedMemoryManager;
/// use multiprocess::SharedMemory;
/// let smm = SharedMemoryManager::start()?;
/// let shm = smm.shared_memory(64)?;
/// let name = shm.name().to_string();
/// shm.write_at(0, b"kept")?;
/// assert_eq!(SharedMemory::open(&name)?.size(), shm.size());
/// smm.shutdown()?;
/// assert!(matches!(SharedMemory::open(&name), Err(multiprocess::Error::NotFound(_))));
/// # Ok::<(), multiprocess::Error>(())
/// ```
pub struct SharedMemoryManager {
    manager: SyncManager,
}

impl SharedMemoryManager {
    /// Starts the manager's server with the default start method (Python's
    /// `SharedMemoryManager()` and `start()`).
    ///
    /// ```
    /// let smm = multiprocess::managers::SharedMemoryManager::start()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start() -> Result<SharedMemoryManager> {
        Ok(SharedMemoryManager { manager: SyncManager::builder().start()? })
    }

    /// Starts the manager's server with start method `method`.
    ///
    /// ```
    /// use multiprocess::StartMethod;
    /// let smm = multiprocess::managers::SharedMemoryManager::start_with(StartMethod::Spawn)?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn start_with(method: StartMethod) -> Result<SharedMemoryManager> {
        Ok(SharedMemoryManager { manager: SyncManager::builder().start_method(method).start()? })
    }

    /// A new segment of `size` bytes, unlinked when the manager stops (`smm.SharedMemory(size)`).
    ///
    /// ```
    /// let smm = multiprocess::managers::SharedMemoryManager::start()?;
    /// assert!(smm.shared_memory(100)?.size() >= 100);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shared_memory(&self, size: usize) -> Result<SharedMemory> {
        let shm = SharedMemory::builder().track(false).create(size)?;
        self.track(&shm)?;
        Ok(shm)
    }

    /// A new list holding `items`, unlinked when the manager stops
    /// (`smm.ShareableList(sequence)`).
    ///
    /// ```
    /// let smm = multiprocess::managers::SharedMemoryManager::start()?;
    /// let sl = smm.shareable_list([1, 2, 3])?;
    /// assert_eq!(sl.len(), 3);
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shareable_list<I>(&self, items: I) -> Result<ShareableList>
    where
        I: IntoIterator,
        I::Item: Into<Item>,
    {
        let list = ShareableList::new_untracked(items.into_iter().map(Into::into).collect())?;
        self.track(list.shm())?;
        Ok(list)
    }

    /// Hands `shm` to the server; if it cannot take it, the segment goes at once.
    fn track(&self, shm: &SharedMemory) -> Result<()> {
        let told = self.manager.client.call(&Request::TrackSegment { name: shm.name().to_string() });
        if told.is_err() {
            let _ = shm.unlink();
        }
        told.map(drop)
    }

    /// Stops the server, which unlinks every segment made through it (`shutdown()`).
    ///
    /// ```
    /// let smm = multiprocess::managers::SharedMemoryManager::start()?;
    /// smm.shutdown()?;
    /// # Ok::<(), multiprocess::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        self.manager.shutdown()
    }
}

impl std::ops::Deref for SharedMemoryManager {
    type Target = SyncManager;

    fn deref(&self) -> &SyncManager {
        &self.manager
    }
}

impl fmt::Debug for SharedMemoryManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemoryManager").field("address", self.manager.address()).finish()
    }
}
