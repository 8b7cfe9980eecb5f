//! The per-user index: which sessions each user holds, for session limits and listings.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::key_hasher::BuildKeyHasher;

/// A user's index list becomes a hash set beyond this many sessions, so that adding and
/// removing stay O(1) for a user with very many sessions (and it turns back into a list
/// below half of it).
const INDEX_LIST_MAX: usize = 32;

/// The per-user index, in shards: keyed SipHash of the user id → 64-bit key prefixes of
/// that user's sessions. Most users hold one session, which costs one 24-byte slot and no
/// allocation (`UserPrefixes::One`). A collision of two users' hashes only merges their lists, and
/// every reader checks the session's user id. SipHash with a random key, because user ids
/// are chosen by users and this map must not be floodable.
#[derive(Default)]
pub(super) struct UserIndex {
    map: HashMap<u64, UserPrefixes, BuildKeyHasher>,
}

/// The key prefixes of one user's sessions.
enum UserPrefixes {
    One(u64),
    /// Boxed so the common `One` case keeps the slot at 16 bytes instead of 24: at a
    /// million users that is 16 MB, for one extra allocation per user with several sessions.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u64>>),
    /// More than [`INDEX_LIST_MAX`] sessions: a set, so that adding and removing one stays
    /// O(1) (a list's removal is a scan, which made ending all of a big user's sessions
    /// quadratic).
    #[allow(clippy::box_collection)]
    Set(Box<HashSet<u64, BuildKeyHasher>>),
}

impl UserPrefixes {
    fn len(&self) -> usize {
        match self {
            UserPrefixes::One(_) => 1,
            UserPrefixes::Many(list) => list.len(),
            UserPrefixes::Set(set) => set.len(),
        }
    }

    /// After removals: a small set goes back to a list, a mostly empty set gives memory
    /// back. Returns whether nothing is left.
    fn settle(&mut self) -> bool {
        if let UserPrefixes::Set(set) = self {
            if set.len() <= INDEX_LIST_MAX / 2 {
                *self = UserPrefixes::Many(Box::new(set.iter().copied().collect()));
            } else if set.len() * 4 < set.capacity() {
                set.shrink_to_fit();
            }
        }
        self.len() == 0
    }
}

impl UserIndex {
    pub(super) fn add(&mut self, h: u64, p: u64) {
        match self.map.entry(h) {
            Entry::Vacant(v) => {
                v.insert(UserPrefixes::One(p));
            }
            Entry::Occupied(mut o) => match o.get_mut() {
                UserPrefixes::One(q) if *q == p => {}
                UserPrefixes::One(q) => {
                    let q = *q;
                    *o.get_mut() = UserPrefixes::Many(Box::new(vec![q, p]));
                }
                // Prefixes are unique per live session (create refuses a taken one), so no
                // duplicate check: adding stays O(1) for users with many sessions.
                UserPrefixes::Many(list) if list.len() < INDEX_LIST_MAX => list.push(p),
                UserPrefixes::Many(list) => {
                    let mut set: HashSet<u64, BuildKeyHasher> = list.iter().copied().collect();
                    set.insert(p);
                    *o.get_mut() = UserPrefixes::Set(Box::new(set));
                }
                UserPrefixes::Set(set) => {
                    set.insert(p);
                }
            },
        }
    }

    pub(super) fn remove(&mut self, h: u64, p: u64) {
        let now_empty = match self.map.get_mut(&h) {
            Some(UserPrefixes::One(q)) => *q == p,
            Some(keys) => {
                match keys {
                    UserPrefixes::Many(list) => {
                        // At most INDEX_LIST_MAX entries: the scan is bounded.
                        if let Some(i) = list.iter().position(|q| *q == p) {
                            list.swap_remove(i);
                        }
                    }
                    UserPrefixes::Set(set) => {
                        set.remove(&p);
                    }
                    UserPrefixes::One(_) => {}
                }
                keys.settle()
            }
            None => false,
        };
        if now_empty {
            self.map.remove(&h);
        }
    }

    /// Removes every prefix in `gone`: O(the user's sessions).
    pub(super) fn remove_all(&mut self, h: u64, gone: &HashSet<u64, BuildKeyHasher>) {
        let now_empty = match self.map.get_mut(&h) {
            Some(UserPrefixes::One(q)) => gone.contains(q),
            Some(keys) => {
                match keys {
                    UserPrefixes::Many(list) => list.retain(|q| !gone.contains(q)),
                    UserPrefixes::Set(set) => {
                        if gone.len() < set.len() {
                            for q in gone {
                                set.remove(q);
                            }
                        } else {
                            set.retain(|q| !gone.contains(q));
                        }
                    }
                    UserPrefixes::One(_) => {}
                }
                keys.settle()
            }
            None => false,
        };
        if now_empty {
            self.map.remove(&h);
        }
    }

    pub(super) fn get(&self, h: u64) -> Vec<u64> {
        match self.map.get(&h) {
            Some(UserPrefixes::One(p)) => vec![*p],
            Some(UserPrefixes::Many(list)) => list.to_vec(),
            Some(UserPrefixes::Set(set)) => set.iter().copied().collect(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_users_index_becomes_a_set_and_shrinks_back() {
        let mut index = UserIndex::default();
        for p in 0..1000 {
            index.add(7, p);
        }
        assert!(matches!(index.map.get(&7), Some(UserPrefixes::Set(_))));
        assert_eq!(index.get(7).len(), 1000);
        for p in 0..990 {
            index.remove(7, p);
        }
        assert!(matches!(index.map.get(&7), Some(UserPrefixes::Many(l)) if l.len() == 10));
        let gone: HashSet<u64, BuildKeyHasher> = (990..1000).collect();
        index.remove_all(7, &gone);
        assert!(index.map.is_empty());
    }
}
