//! The Lua scripts (`lua/*.lua`), their typed arguments, and their loading.
//!
//! Every write is one script: atomic, one round trip. A script is loaded once with
//! `SCRIPT LOAD` and called with `EVALSHA` (`StoreShared::eval` falls back to `EVAL`).
//!
//! **Arguments.** Each script has a struct of typed arguments next to its `include_str!`,
//! and one function, `call`, that turns it into the script's KEYS and ARGV. That function is
//! the only place in Rust that knows the positions; each `.lua` file names the same
//! positions once, at its top (`local ttl_ms = ARGV[3]`), and uses only the names below.
//! [`Call`] records the name of every position it is given, and the unit test
//! `script_arguments_match_the_names_the_lua_declares` holds those names against the
//! `local ... = KEYS[n]` / `ARGV[n]` lines of the `.lua` files, so a reordering on either side
//! fails a test instead of writing a blob where a version belongs.
//!
//! **Constants.** A script's text is a prelude generated from the Rust constants
//! ([`lua_prelude`]: `FORWARD_TTL`, `MAX_FORWARD_HOPS`, `GUEST_EVICT`), then `common.lua`,
//! then the script. The constants stay in Rust only (one source of truth); generating them
//! into the text rather than passing them as ARGV keeps them out of every call (no bytes,
//! no positions) and in the script's SHA, so two builds with different constants never share
//! a cached script.

use std::time::{Duration, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::LuaInterface;
use fred::types::Value;

use super::codec::{encode, millis};
use super::names::Names;
use super::RedisStoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;
use crate::store::{LimitPolicy, SessionLimit, FORWARD_TTL, MAX_FORWARD_HOPS};

/// TTLs are clamped to this (100 years), so that Redis accepts every `PEXPIRE` and Lua's
/// doubles stay exact.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;
/// How many index entries a script checks for existence (those with the earliest
/// deadlines): the cheap writes, `login` (whose eviction victims come from these entries
/// too) and, on top of its limit, `user_sessions`. It bounds their work, whatever the size of
/// the index.
const INDEX_SCAN: usize = 64;
/// How many guests one guest `create` evicts at most, to bring the guest set under the cap.
/// One suffices in the steady state; more let the set shrink after the cap was lowered.
const GUEST_EVICT: usize = 8;
/// Per-list bound of `user_sessions` (a larger limit is clamped to this).
const MAX_LIST: usize = 100_000;

/// Constants every script starts with, from the Rust ones (so the two cannot disagree).
fn lua_prelude() -> String {
    format!(
        "local FORWARD_TTL = '{}'\nlocal MAX_FORWARD_HOPS = {}\nlocal GUEST_EVICT = {}\n",
        millis(FORWARD_TTL),
        MAX_FORWARD_HOPS,
        GUEST_EVICT
    )
}

/// Helpers shared by every script (after the prelude).
pub(super) const COMMON: &str = include_str!("lua/common.lua");

// ----- the arguments -----

/// One call of a script: its KEYS and ARGV, each position under the name its `.lua` file
/// gives it, in the order they are added.
#[derive(Debug, Default)]
pub(super) struct Call {
    keys: Vec<(&'static str, String)>,
    argv: Vec<(&'static str, Value)>,
}

impl Call {
    fn key(mut self, name: &'static str, key: String) -> Self {
        self.keys.push((name, key));
        self
    }

    /// A key only some calls pass. It must come after every other key, so that the script
    /// reads `nil` for it when it is absent, and no other position moves.
    fn optional_key(mut self, name: &'static str, key: Option<String>) -> Self {
        self.keys.extend(key.map(|key| (name, key)));
        self
    }

    fn text(mut self, name: &'static str, text: impl Into<String>) -> Self {
        self.argv.push((name, Value::from(text.into())));
        self
    }

    /// A number, in decimal: Lua compares versions as strings and `tonumber`s the rest.
    fn number(self, name: &'static str, n: impl ToString) -> Self {
        self.text(name, n.to_string())
    }

    fn bytes(mut self, name: &'static str, bytes: &[u8]) -> Self {
        self.argv.push((name, Value::from(bytes)));
        self
    }

    /// ARGV 1 to 8 of the scripts that write a record (`create`, `update`, `rotate`,
    /// `login`): who writes, and the record.
    fn write_head(self, names: &Names, record: &RecordArgs) -> Self {
        self.text("prefix", names.prefix())
            .text("instance", names.instance())
            .number("ttl_ms", record.ttl_ms)
            .number("version", record.version)
            .bytes("blob", &record.blob)
            .text("user", record.user.clone().unwrap_or_default())
            .number("created_ms", record.created_ms)
            .number("scan_stop", INDEX_SCAN - 1)
    }

    /// KEYS and ARGV, as `EVALSHA` takes them.
    pub(super) fn into_parts(self) -> (Vec<String>, Vec<Value>) {
        (
            self.keys.into_iter().map(|(_, key)| key).collect(),
            self.argv.into_iter().map(|(_, arg)| arg).collect(),
        )
    }

    /// The names of the KEYS, then of the ARGV, in order.
    #[cfg(test)]
    pub(super) fn names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        (
            self.keys.iter().map(|(name, _)| *name).collect(),
            self.argv.iter().map(|(name, _)| *name).collect(),
        )
    }
}

/// A record as the write scripts store it (hash fields `v`, `d`, `c`, `u`) and its TTL.
#[derive(Debug)]
pub(super) struct RecordArgs {
    /// Clamped to 1 ms ..= [`MAX_TTL_MS`].
    ttl_ms: u64,
    version: u64,
    blob: Vec<u8>,
    /// The logged-in user; `None` for a guest.
    user: Option<String>,
    /// Creation, ms since the epoch (0 before it).
    created_ms: u64,
}

impl RecordArgs {
    pub(super) fn new(record: &SessionRecord, ttl: Duration) -> Result<Self, RedisStoreError> {
        Ok(RecordArgs {
            ttl_ms: millis(ttl).clamp(1, MAX_TTL_MS),
            version: record.version,
            blob: encode(record)?,
            user: record.identity.as_ref().map(|i| i.user_id.clone()),
            created_ms: record
                .created_at
                .duration_since(UNIX_EPOCH)
                .map(millis)
                .unwrap_or(0),
        })
    }

    /// Whether the record has no user (guests have a budget, see `create.lua`).
    pub(super) fn is_guest(&self) -> bool {
        self.user.is_none()
    }

    /// The user's index beside `key` (in its slot); only a logged-in session has one.
    fn index_key(&self, names: &Names, key: &SessionKey) -> Option<String> {
        self.user
            .as_deref()
            .map(|user| names.index_beside(key, user))
    }
}

// ----- the scripts, each with its arguments -----

/// Writes a record under a key that must not exist (and makes room for a guest).
pub(super) const CREATE: &str = include_str!("lua/create.lua");

/// The arguments of [`CREATE`].
#[derive(Debug)]
pub(super) struct CreateArgs {
    pub(super) key: SessionKey,
    pub(super) record: RecordArgs,
    /// The guest budget (`RedisStoreBuilder::guest_capacity`).
    pub(super) guest_capacity: u64,
}

impl CreateArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        Call::default()
            .key("key", names.record_key(&self.key))
            .optional_key("index", self.record.index_key(names, &self.key))
            .write_head(names, &self.record)
            .number("guest_capacity", self.guest_capacity)
    }
}

/// Rewrites a record if it is at the expected version (compare-and-set).
pub(super) const UPDATE: &str = include_str!("lua/update.lua");

/// The arguments of [`UPDATE`].
#[derive(Debug)]
pub(super) struct UpdateArgs {
    pub(super) key: SessionKey,
    pub(super) expected: u64,
    pub(super) record: RecordArgs,
}

impl UpdateArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        Call::default()
            .key("key", names.record_key(&self.key))
            .optional_key("index", self.record.index_key(names, &self.key))
            .write_head(names, &self.record)
            .number("expected", self.expected)
    }
}

/// Moves a record at the expected version to a new key, leaving the old one forwarding.
pub(super) const ROTATE: &str = include_str!("lua/rotate.lua");

/// The arguments of [`ROTATE`].
#[derive(Debug)]
pub(super) struct RotateArgs {
    pub(super) old: SessionKey,
    pub(super) expected: u64,
    pub(super) new: SessionKey,
    pub(super) record: RecordArgs,
}

impl RotateArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        Call::default()
            .key("old_key", names.record_key(&self.old))
            .key("new_key", names.record_key(&self.new))
            .optional_key("index", self.record.index_key(names, &self.new))
            .write_head(names, &self.record)
            .number("expected", self.expected)
    }
}

/// Removes a key and whatever it forwards to.
pub(super) const DELETE: &str = include_str!("lua/delete.lua");

/// The arguments of [`DELETE`].
#[derive(Debug)]
pub(super) struct DeleteArgs {
    pub(super) key: SessionKey,
}

impl DeleteArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        Call::default()
            .key("key", names.record_key(&self.key))
            .text("prefix", names.prefix())
            .text("instance", names.instance())
    }
}

/// Rotates (or creates) into a logged-in session, with the user's index and limit.
pub(super) const LOGIN: &str = include_str!("lua/login.lua");

/// The arguments of [`LOGIN`].
#[derive(Debug)]
pub(super) struct LoginArgs {
    /// The guest session it replaces, at the version it was read.
    pub(super) old: Option<(SessionKey, u64)>,
    pub(super) new: SessionKey,
    pub(super) record: RecordArgs,
    pub(super) limit: Option<SessionLimit>,
}

impl LoginArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        let (max, policy) = match self.limit {
            Some(SessionLimit { max, policy }) => (
                max.to_string(),
                match policy {
                    LimitPolicy::EvictOldest => "evict",
                    LimitPolicy::RejectNew => "reject",
                },
            ),
            None => (String::new(), ""),
        };
        let user = self.record.user.as_deref().unwrap_or_default();
        Call::default()
            .key("new_key", names.record_key(&self.new))
            .key("index", names.index_beside(&self.new, user))
            .optional_key("old_key", self.old.map(|(key, _)| names.record_key(&key)))
            .write_head(names, &self.record)
            .text("limit_max", max)
            .text("limit_policy", policy)
            .text(
                "old_version",
                self.old.map(|(_, v)| v.to_string()).unwrap_or_default(),
            )
    }
}

/// On a cluster, the second half of a login from a guest whose key is in another slot than
/// the user's: leaves the guest key forwarding to the new session if it is still at the
/// version the login read (see `StoreShared::login`).
pub(super) const RETIRE: &str = include_str!("lua/retire.lua");

/// The arguments of [`RETIRE`].
#[derive(Debug)]
pub(super) struct RetireArgs {
    pub(super) old: SessionKey,
    pub(super) expected: u64,
    pub(super) new: SessionKey,
}

impl RetireArgs {
    pub(super) fn call(&self, names: &Names) -> Call {
        Call::default()
            .key("old_key", names.record_key(&self.old))
            .text("prefix", names.prefix())
            .text("instance", names.instance())
            .number("expected", self.expected)
            .text("new_name", names.record_key(&self.new))
    }
}

/// Lists a user's live sessions.
pub(super) const USER_SESSIONS: &str = include_str!("lua/user_sessions.lua");

/// The arguments of [`USER_SESSIONS`].
#[derive(Debug)]
pub(super) struct UserSessionsArgs<'a> {
    /// One of the user's indexes ([`Names::user_indexes`]).
    pub(super) index: &'a str,
    /// Another one, read after it in the same script (one node only: on a cluster they are
    /// in different slots).
    pub(super) legacy: Option<&'a str>,
    /// At most this many sessions (clamped to [`MAX_LIST`]).
    pub(super) limit: usize,
}

impl UserSessionsArgs<'_> {
    pub(super) fn call(&self) -> Call {
        Call::default()
            .key("index", self.index.to_owned())
            .optional_key("legacy", self.legacy.map(str::to_owned))
            .number("limit", self.limit.min(MAX_LIST))
            .number("scan", INDEX_SCAN)
    }
}

// ----- loading -----

/// One script: its full text and its SHA-1 as `SCRIPT LOAD` returned it.
#[derive(Debug)]
pub(super) struct Script {
    pub(super) body: String,
    pub(super) sha: String,
}

/// Every script, loaded.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) rotate: Script,
    pub(super) delete: Script,
    pub(super) login: Script,
    pub(super) user_sessions: Script,
    pub(super) retire: Script,
}

pub(super) async fn load_scripts(client: &Client) -> Result<Scripts, RedisStoreError> {
    let prelude = lua_prelude();
    let load = |script: &str| {
        let body = format!("{prelude}{COMMON}{script}");
        async move {
            // On a cluster this loads the script on every primary; the answer is its SHA-1.
            let sha: String = client.script_load_cluster(body.clone()).await?;
            Ok::<_, RedisStoreError>(Script { body, sha })
        }
    };
    Ok(Scripts {
        create: load(CREATE).await?,
        update: load(UPDATE).await?,
        rotate: load(ROTATE).await?,
        delete: load(DELETE).await?,
        login: load(LOGIN).await?,
        user_sessions: load(USER_SESSIONS).await?,
        retire: load(RETIRE).await?,
    })
}
