//! Result slots given back for reuse: each task's slot is an allocation of its own, and a
//! loop of submits makes and frees tens of thousands in a row. Through glibc's allocator
//! that cost a quarter of the caller's time per submit: the caller's own large vectors,
//! freed, make it merge the freed slots and give their pages back to the system, and the
//! next batch of slots then comes from new pages.
//!
//! A slot given back (its result read or dropped, nobody else holding it) is emptied and put
//! in this thread's magazine of [`MAGAZINE`]; a full magazine spills half into its pool's
//! depot, and an empty one refills from there. The depot holds [`DEPOT_MAX`] at most and goes
//! with its pool: what a pool keeps is at most what it once had outstanding.

use super::result::Slot;
use std::cell::RefCell;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// Slots a thread keeps at hand (some 6 KB): moved to and from a depot this many at a time.
const MAGAZINE: usize = 64;
/// Slots a pool's depot keeps at most (some 12 MB).
const DEPOT_MAX: usize = 1 << 17;

thread_local! {
    static HAND: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// A pool's depot of empty slots.
#[derive(Default)]
pub(crate) struct Spares {
    depot: Mutex<Vec<Arc<Slot>>>,
}

impl Spares {
    /// An empty slot (telling `sender` its index when filled, if any): a spare one if there
    /// is one.
    pub(crate) fn take(&self, sender: Option<(Sender<usize>, usize)>) -> Arc<Slot> {
        let spare = HAND
            .try_with(|hand| {
                let mut hand = hand.borrow_mut();
                if hand.is_empty() {
                    let mut depot = self.depot.lock().unwrap_or_else(|e| e.into_inner());
                    let from = depot.len().saturating_sub(MAGAZINE);
                    hand.extend(depot.drain(from..));
                }
                hand.pop()
            })
            .ok()
            .flatten();
        match spare {
            Some(mut slot) => {
                if sender.is_some()
                    && let Some(empty) = Arc::get_mut(&mut slot)
                {
                    *empty = Slot::empty(sender);
                }
                slot
            }
            None => Arc::new(Slot::empty(sender)),
        }
    }

    /// Takes `slot` back if nobody else holds it (a clone of its result, the manager that
    /// has not filed it yet); otherwise it is only let go.
    pub(crate) fn give_back(&self, mut slot: Arc<Slot>) {
        let Some(held) = Arc::get_mut(&mut slot) else { return };
        // Emptied now, not when taken: its result's bytes, a waker or a callback go at once.
        *held = Slot::empty(None);
        let _ = HAND.try_with(|hand| {
            let mut hand = hand.borrow_mut();
            if hand.len() >= MAGAZINE {
                // The older half goes to the depot; what it has no room for, to the allocator.
                let spill = hand.len() - MAGAZINE / 2;
                let mut depot = self.depot.lock().unwrap_or_else(|e| e.into_inner());
                let room = DEPOT_MAX.saturating_sub(depot.len()).min(spill);
                depot.extend(hand.drain(..room));
                hand.drain(..spill - room);
            }
            hand.push(slot);
        });
    }

    /// [`give_back`](Spares::give_back) for each of `slots`.
    pub(crate) fn give_back_all(&self, slots: impl IntoIterator<Item = Arc<Slot>>) {
        slots.into_iter().for_each(|slot| self.give_back(slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_given_back_are_taken_again_empty_and_only_if_nobody_holds_them() {
        let spares = Spares::default();
        let a = spares.take(None);
        a.fill(Err(super::super::result::Failure::Cancelled));
        let address = Arc::as_ptr(&a);
        let clone = a.clone();
        // Held twice: only let go.
        spares.give_back(a);
        let b = spares.take(None);
        assert_ne!(Arc::as_ptr(&b), address);
        // Held once: kept, and taken again empty.
        spares.give_back(clone);
        let c = spares.take(None);
        assert_eq!(Arc::as_ptr(&c), address);
        assert!(!c.is_filled());
        // Many: the hand spills into the depot and is refilled from it, each slot once.
        let many: Vec<_> = (0..1000).map(|_| spares.take(None)).collect();
        let mut addresses: Vec<_> = many.iter().map(Arc::as_ptr).collect();
        spares.give_back_all(many);
        let again: Vec<_> = (0..1000).map(|_| spares.take(None)).collect();
        let mut reused: Vec<_> = again.iter().map(Arc::as_ptr).collect();
        addresses.sort();
        reused.sort();
        assert_eq!(addresses, reused, "every slot given back is taken again once");
        assert!(again.iter().all(|s| Arc::strong_count(s) == 1 && !s.is_filled()));
        assert!(spares.depot.lock().unwrap().len() <= DEPOT_MAX);
    }
}
