//! The Lua scripts: every write is one script (atomic, one round trip), loaded once with
//! `SCRIPT LOAD` and called with `EVALSHA`.

use std::time::{Duration, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::LuaInterface;

use super::codec::millis;
use super::RedisStoreError;
use crate::record::SessionRecord;
use crate::store::{FORWARD_TTL, MAX_FORWARD_HOPS};

/// TTLs are clamped to this (100 years), so that Redis accepts every `PEXPIRE` and Lua's
/// doubles stay exact.
pub(super) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// How many index entries a script checks for existence (those with the earliest
/// deadlines): the cheap writes, `login` (whose eviction victims come from these entries
/// too) and, on top of its limit, `user_sessions`. It bounds their work, whatever the size of
/// the index.
pub(super) const INDEX_SCAN: usize = 64;
/// How many guests one guest `create` evicts at most, to bring the guest set under the cap.
/// One suffices in the steady state; more let the set shrink after the cap was lowered.
pub(super) const GUEST_EVICT: usize = 8;
/// Per-list bound of `user_sessions` (a larger limit is clamped to this).
pub(super) const MAX_LIST: usize = 100_000;

/// Constants every script starts with, from the Rust ones (so the two cannot disagree).
fn lua_prelude() -> String {
    format!(
        "local FORWARD_TTL = '{}'\nlocal MAX_FORWARD_HOPS = {}\nlocal GUEST_EVICT = {}\n",
        millis(FORWARD_TTL),
        MAX_FORWARD_HOPS,
        GUEST_EVICT
    )
}

/// Helpers shared by every script. Key names are computed from the prefix in Lua; on a
/// cluster that is legal because every key of the store carries the prefix's hash tag.
const LUA_COMMON: &str = include_str!("lua/common.lua");

/// KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// guest capacity. Returns {1, evicted guest keys...} (applied) or {0} (the key exists).
///
/// A guest first drops the guest set's expired entries (by score), then, if the set is at
/// the capacity, evicts the guests with the earliest deadlines (at most `GUEST_EVICT`):
/// record, set entry and an invalidation message each. Never a logged-in session.
const LUA_CREATE: &str = include_str!("lua/create.lua");

/// KEYS: key, [index]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// expected. A guest's deadline in the guest set follows its record's, like an index entry.
const LUA_UPDATE: &str = include_str!("lua/update.lua");

/// KEYS: old, new, [index]. ARGV: prefix, instance, ttl, version, blob, user, created,
/// scan, expected. The old key is left forwarding to the new one for `FORWARD_TTL`, and
/// leaves its index or the guest set; the new key joins its index or the guest set.
const LUA_ROTATE: &str = include_str!("lua/rotate.lua");

/// KEYS: key. ARGV: prefix, instance. Removes the key and, while what it removed was a
/// forwarding entry, the key that entry names (at most `MAX_FORWARD_HOPS` hops), up to and
/// including the live record reached, with its index or guest-set entry. Publishes for the
/// given key even if it is missing (a delete is usually a revocation, and a message costs
/// nothing inside the script) and for every other key removed. Returns {1 if a live record
/// was removed, else 0; then the keys removed other than the given one}.
const LUA_DELETE: &str = include_str!("lua/delete.lua");

/// KEYS: new, index, [old]. ARGV: prefix, instance, ttl, version, blob, user, created, scan,
/// limit max ('' for none), policy ('evict', 'reject' or ''), expected version of old.
/// Returns {1, evicted keys...} (applied), {0} (conflict) or {2} (limit reached).
///
/// Bounded work, whatever the size of the index: entries past their deadline go by score;
/// the first `scan`+1 entries (the earliest deadlines) are checked for a record, and are the
/// only candidates for `EvictOldest` (oldest creation first); the user's sessions are counted
/// with ZCARD (the scripts remove the entries of records they end). So an index over the
/// limit by more than a window shrinks by up to a window per login. The old key, if any, is
/// left forwarding to the new one.
const LUA_LOGIN: &str = include_str!("lua/login.lua");

/// KEYS: index. ARGV: limit, scan. Returns {key, blob, key, blob, ...} of at most `limit`
/// live sessions, those with the earliest deadlines, after examining at most `limit` +
/// `scan` entries (the entries without a record among them are dropped).
const LUA_USER_SESSIONS: &str = include_str!("lua/user_sessions.lua");

/// One script: its full text and its SHA-1 as `SCRIPT LOAD` returned it.
#[derive(Debug)]
pub(super) struct Script {
    pub(super) body: String,
    pub(super) sha: String,
}

#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) rotate: Script,
    pub(super) delete: Script,
    pub(super) login: Script,
    pub(super) user_sessions: Script,
}

pub(super) async fn load_scripts(client: &Client) -> Result<Scripts, RedisStoreError> {
    let prelude = lua_prelude();
    let load = |body: &str| {
        let body = format!("{prelude}{LUA_COMMON}{body}");
        async move {
            // On a cluster this loads the script on every primary; the answer is its SHA-1.
            let sha: String = client.script_load_cluster(body.clone()).await?;
            Ok::<_, RedisStoreError>(Script { body, sha })
        }
    };
    Ok(Scripts {
        create: load(LUA_CREATE).await?,
        update: load(LUA_UPDATE).await?,
        rotate: load(LUA_ROTATE).await?,
        delete: load(LUA_DELETE).await?,
        login: load(LUA_LOGIN).await?,
        user_sessions: load(LUA_USER_SESSIONS).await?,
    })
}

pub(super) fn ttl_ms(ttl: Duration) -> String {
    millis(ttl).clamp(1, MAX_TTL_MS).to_string()
}

pub(super) fn created_ms(record: &SessionRecord) -> String {
    record
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
        .to_string()
}
