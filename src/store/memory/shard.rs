//! The store's shards: the map of compact records and the guest and forward queues behind one
//! lock, and how a key finds its shard.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::compact::Blob;
use super::key_hasher::BuildKeyHasher;

/// Shards of the store (and of the per-user index), each behind its own lock.
pub(super) const SHARDS: usize = 64;

/// One shard: its sessions and forwards, and the bookkeeping that its lock guards with them.
#[derive(Default)]
pub(super) struct Shard {
    /// First 64 bits of the key → the session or forwarding entry; the blob holds the full
    /// key, checked on every lookup.
    pub(super) map: HashMap<u64, Blob, BuildKeyHasher>,
    /// Writes since the last sweep.
    pub(super) writes: u32,
    /// When the last sweep ran (ns since the epoch).
    pub(super) swept_at: u64,
    /// This shard's guests in creation order: key prefix and a store-wide sequence number.
    /// Entries of guests that ended stay until they reach the front or the queue is
    /// compacted (when it holds more than twice the live guests), but the front is always a
    /// live guest: removing the front guest pops every stale entry behind it.
    pub(super) guest_queue: VecDeque<(u64, u64)>,
    /// Guest sessions in `map`.
    pub(super) guest_count: usize,
    /// Forwarding entries in the order they were written, which is the order they expire
    /// (they all live [`FORWARD_TTL`](crate::store::FORWARD_TTL)); stale entries are skipped
    /// when they reach the front.
    pub(super) forward_queue: VecDeque<u64>,
    /// Forwarding entries in `map`.
    pub(super) forward_count: usize,
}

/// The shard of the session or forward whose key starts with `p`.
#[inline]
pub(super) fn shard_of(p: u64) -> usize {
    // The low bits pick the shard; the hasher mixes all 64 bits for the map itself.
    (p as usize) % SHARDS
}

// Locks only guard plain maps updated by single operations, so a poisoned lock still holds a
// consistent map.
#[inline]
pub(super) fn read_shard(s: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    s.read().unwrap_or_else(|p| p.into_inner())
}
#[inline]
pub(super) fn write_shard(s: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    s.write().unwrap_or_else(|p| p.into_inner())
}
#[inline]
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
