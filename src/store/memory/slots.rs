//! Slots against the store's bounds (sessions, guests): counters taken below a cap and given
//! back, and which slots a removed session hands on to the one it makes room for.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Takes one slot of `counter` if it is below `cap`.
#[inline]
pub(super) fn take_slot(counter: &AtomicUsize, cap: usize) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

/// Gives one slot of `counter` back (never below zero, so a bookkeeping slip can never wrap
/// around into a store that looks full forever).
#[inline]
pub(super) fn give_slot(counter: &AtomicUsize) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Which of a removed session's slots the remover keeps (to hand to the session it makes
/// room for) instead of giving them back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeepSlots {
    Nothing,
    /// Its slot against the capacity (its guest slot, if any, is given back).
    Session,
    /// Its slot against the capacity and, if it is a guest, its guest slot.
    SessionAndGuest,
}
