//! What the Redis tests share (`tests/redis.rs`, `tests/store_contract.rs`): the Redis they
//! are given, random key prefixes, a minimal RESP client for inspecting and cleaning up Redis,
//! and the store contract's harness for `RedisStore`.
//!
//! The tests that need Redis carry `#[cfg_attr(not(tsg_redis), ignore = "set REDIS_URL=...")]`
//! (`build.rs` sets `tsg_redis` when `REDIS_URL` is set or `TSG_REQUIRE_REDIS=1`), so without
//! Redis `cargo test` lists them as ignored, with the reason; when they run, a missing or
//! unreachable Redis fails them.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

mod server;
#[allow(unused_imports)] // not every test file starts servers
pub use server::*;

use tower_session_guard::store::contract::Harness;
use tower_session_guard::{RedisStore, SessionToken};

/// The Redis the tests use: `REDIS_URL`. A test that calls this without it fails (it runs
/// only when `build.rs` saw `REDIS_URL` or `TSG_REQUIRE_REDIS=1`, or under `--ignored`).
pub fn redis_url() -> String {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "REDIS_URL is not set: this test needs a Redis, e.g. REDIS_URL=redis://127.0.0.1:6379 \
             (TSG_REQUIRE_REDIS=1, as in .ci/run, makes its absence a failure)"
        ),
    }
}

pub fn random_id() -> String {
    SessionToken::generate().key().fingerprint().to_string()
}

/// A key prefix no other test uses, with a hash tag like the default's.
pub fn unique_prefix() -> String {
    format!("{{tsg-test-{}}}:", random_id())
}

// ----- a minimal RESP client, for inspecting and cleaning up Redis from the test -----

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => b.clone(),
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes().expect("a string")).expect("UTF-8")
    }
}

pub struct Raw {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    /// Connects to a `redis://[user:password@]host:port[/db]` URL.
    pub fn connect(url: &str) -> io::Result<Raw> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| io::Error::other(format!("not a redis:// URL: {url}")))?;
        let (auth, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (addr, db) = match rest.split_once('/') {
            Some((a, d)) => (a, Some(d).filter(|d| !d.is_empty())),
            None => (rest, None),
        };
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut raw = Raw {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        if let Some(auth) = auth {
            let reply = match auth.split_once(':') {
                Some(("", pass)) => raw.cmd(&["AUTH", pass])?,
                Some((user, pass)) => raw.cmd(&["AUTH", user, pass])?,
                None => raw.cmd(&["AUTH", auth])?,
            };
            assert_eq!(reply, Reply::Status("OK".into()), "AUTH");
        }
        if let Some(db) = db {
            raw.cmd(&["SELECT", db])?;
        }
        Ok(raw)
    }

    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&args)
    }

    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read()
    }

    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with("\r\n") {
            return Err(io::Error::other("connection closed"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    pub fn read(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        let num = || {
            rest.parse::<i64>()
                .map_err(|e| io::Error::other(format!("bad length {rest:?}: {e}")))
        };
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(num()?),
            "$" => match num()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match num()? {
                n if n < 0 => Reply::Array(Vec::new()),
                n => (0..n)
                    .map(|_| self.read())
                    .collect::<io::Result<_>>()
                    .map(Reply::Array)?,
            },
            other => return Err(io::Error::other(format!("unknown reply type {other:?}"))),
        })
    }

    /// Deletes every key under `prefix`; returns how many there were.
    pub fn delete_prefix(&mut self, prefix: &str) -> i64 {
        const DEL: &str = "local n = 0 \
            for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) n = n + 1 end \
            return n";
        match self.cmd(&["EVAL", DEL, "0", &key_pattern(prefix)]) {
            Ok(Reply::Int(n)) => n,
            _ => 0,
        }
    }
}

/// The `KEYS` pattern of every name under `prefix`, routed ones included (`{p.TAG}:...`
/// beside `{p}:...`): the prefix up to its hash tag's `}`, then `*`.
pub fn key_pattern(prefix: &str) -> String {
    match prefix.find('}') {
        Some(close) => format!("{}*", &prefix[..close]),
        None => format!("{prefix}*"),
    }
}

/// The name of `key`'s record under `prefix` (a hash-tag prefix such as `{tsg}:`): the
/// routing tag, if the key has one, goes inside the hash tag (`{tsg.AbC}:s:<hex>`).
pub fn record_name(prefix: &str, key: &tower_session_guard::store::SessionKey) -> String {
    format!("{}s:{}", base_name(prefix, key.route()), key.to_hex())
}

/// The base of the names under `prefix` for `route` (see the Redis store's key layout).
pub fn base_name(prefix: &str, route: Option<tower_session_guard::store::RouteTag>) -> String {
    match (route, prefix.find('}')) {
        (Some(tag), Some(close)) => {
            format!("{}.{}{}", &prefix[..close], tag.as_str(), &prefix[close..])
        }
        _ => prefix.to_owned(),
    }
}

/// Deletes the test's keys when the test ends, pass or fail.
pub struct Cleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mut raw) = Raw::connect(&self.url) {
            raw.delete_prefix(&self.prefix);
        }
    }
}

/// The store contract's harness for `RedisStore`: two stores (two connections, two
/// near-caches) on `url` under a fresh key prefix per opening, whose keys are deleted when
/// the harness is dropped.
pub struct RedisHarness {
    url: String,
    cleanups: Mutex<Vec<Cleanup>>,
}

impl RedisHarness {
    pub fn new(url: &str) -> Self {
        RedisHarness {
            url: url.to_owned(),
            cleanups: Mutex::default(),
        }
    }
}

impl Harness for RedisHarness {
    type Store = RedisStore;

    async fn open(&self, guest_budget: Option<u64>) -> (RedisStore, RedisStore) {
        let prefix = unique_prefix();
        // (For a cluster URL the cleanup finds nothing to connect to, which is fine: the
        // cluster's nodes are private servers, killed when the test ends.)
        self.cleanups.lock().unwrap().push(Cleanup {
            url: self.url.clone(),
            prefix: prefix.clone(),
        });
        let build = || {
            let mut b = RedisStore::builder(self.url.as_str()).prefix(prefix.as_str());
            if let Some(n) = guest_budget {
                b = b.guest_capacity(n);
            }
            b.build()
        };
        let a = build().await.expect("RedisStore connects");
        let b = build().await.expect("RedisStore connects");
        (a, b)
    }
}
