//! What the HTTP demo and the gRPC demo share: the demo users, the validation policy and the
//! command-line flags.

#![allow(dead_code)] // each demo uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tower_session_guard::config::{
    DEFAULT_ABSOLUTE_TIMEOUT, DEFAULT_GUEST_IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, MAX_LIFETIME,
};
use tower_session_guard::store::SessionStore;
use tower_session_guard::{
    ForwardedHeader, Identity, LimitPolicy, PinMode, PolicyError, PolicyMode, Rule,
    SessionGuardBuilder, SessionGuardLayer, ValidationPolicy,
};

/// A demo account.
pub struct DemoUser {
    pub name: &'static str,
    pub password: &'static str,
    pub roles: &'static [&'static str],
    pub groups: &'static [&'static str],
}

pub const USERS: &[DemoUser] = &[
    DemoUser {
        name: "alice",
        password: "alice-pass",
        roles: &["admin"],
        groups: &["staff"],
    },
    DemoUser {
        name: "bob",
        password: "bob-pass",
        roles: &["user"],
        groups: &["contractors"],
    },
];

/// The user with these credentials. Passwords are compared in constant time; names are not
/// secret.
pub fn find_user(username: &str, password: &str) -> Option<&'static DemoUser> {
    USERS.iter().find(|u| {
        u.name == username && bool::from(u.password.as_bytes().ct_eq(password.as_bytes()))
    })
}

impl DemoUser {
    pub fn identity(&self) -> Identity {
        Identity::new(self.name)
            .with_roles(self.roles.iter().copied())
            .with_groups(self.groups.iter().copied())
    }
}

/// The session validation policy: allow mode, so a session continues only if a rule holds.
/// Alice (admin) may use her session only from 127.0.0.1 or ::1; bob (user) from 127.0.0.0/8.
pub fn demo_policy() -> Result<ValidationPolicy, PolicyError> {
    ValidationPolicy::builder()
        .mode(PolicyMode::Allow)
        .rule(
            Rule::new("admins from the console host")
                .roles(["admin"])
                .ip_ranges(["127.0.0.1/32", "::1/128"]),
        )
        .rule(
            Rule::new("users on loopback")
                .roles(["user"])
                .ip_ranges(["127.0.0.0/8", "::1/128"]),
        )
        .build()
}

/// The flags both servers take.
pub struct Args {
    pub addr: SocketAddr,
    pub idle: Duration,
    pub absolute: Duration,
    pub pin: PinMode,
    pub trusted_proxies: Vec<String>,
    /// `--forwarded-header x-forwarded-for|forwarded|x-real-ip`: the header the trusted
    /// proxies write (required with `--trusted-proxy`).
    pub forwarded_header: Option<ForwardedHeader>,
    /// `--capacity N`: the memory store's capacity in sessions.
    pub capacity: Option<u64>,
    /// `--redis URL`: sessions in Redis instead of in memory.
    pub redis: Option<String>,
    /// `--postgres URL`: sessions in PostgreSQL instead of in memory.
    pub postgres: Option<String>,
    /// `--max-sessions N`: cap each user's live sessions (the oldest are evicted).
    pub max_sessions: Option<usize>,
    /// Flags this parser does not know, for the caller.
    pub rest: Vec<String>,
}

pub const FLAGS: &str = "[--addr IP:PORT] [--idle-timeout SECS] [--absolute-timeout SECS] \
[--pin exact|subnet|off] [--trusted-proxy CIDR]... \
[--forwarded-header x-forwarded-for|forwarded|x-real-ip] [--capacity N] [--redis URL] \
[--postgres URL] [--max-sessions N]";

/// Parses the shared flags from `args`; unknown words are left in `rest`.
pub fn parse_args(
    args: impl IntoIterator<Item = String>,
    default_addr: SocketAddr,
) -> Result<Args, String> {
    let mut out = Args {
        addr: default_addr,
        idle: DEFAULT_IDLE_TIMEOUT,
        absolute: DEFAULT_ABSOLUTE_TIMEOUT,
        pin: PinMode::Exact,
        trusted_proxies: Vec::new(),
        forwarded_header: None,
        capacity: None,
        redis: None,
        postgres: None,
        max_sessions: None,
        rest: Vec::new(),
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let known = matches!(
            flag.as_str(),
            "--addr"
                | "--idle-timeout"
                | "--absolute-timeout"
                | "--pin"
                | "--trusted-proxy"
                | "--redis"
                | "--postgres"
                | "--max-sessions"
                | "--forwarded-header"
                | "--capacity"
        );
        if !known {
            out.rest.push(flag);
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s > 0 && *s <= MAX_LIFETIME.as_secs())
                .map(Duration::from_secs)
                .ok_or_else(|| {
                    format!(
                        "{flag} takes a whole number of seconds from 1 to {} (400 days, the \
longest lifetime browsers and the library allow), got {v:?}",
                        MAX_LIFETIME.as_secs()
                    )
                })
        };
        match flag.as_str() {
            "--addr" => {
                out.addr = value
                    .parse()
                    .map_err(|_| format!("--addr takes IP:PORT, got {value:?}"))?
            }
            "--idle-timeout" => out.idle = secs(&value)?,
            "--absolute-timeout" => out.absolute = secs(&value)?,
            "--pin" => {
                out.pin = match value.as_str() {
                    "exact" => PinMode::Exact,
                    "subnet" => PinMode::subnet(),
                    "off" => PinMode::Off,
                    other => {
                        return Err(format!("--pin takes exact, subnet or off, got {other:?}"))
                    }
                }
            }
            "--redis" => out.redis = Some(value),
            "--postgres" => out.postgres = Some(value),
            "--forwarded-header" => out.forwarded_header = Some(value.parse()?),
            "--capacity" => {
                out.capacity = Some(value.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(
                    || format!("--capacity takes a whole number of sessions > 0, got {value:?}"),
                )?)
            }
            "--max-sessions" => {
                out.max_sessions = Some(value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(
                    || format!("--max-sessions takes a whole number > 0, got {value:?}"),
                )?)
            }
            _ => out.trusted_proxies.push(value),
        }
    }
    if !out.trusted_proxies.is_empty() && out.forwarded_header.is_none() {
        return Err(
            "--trusted-proxy needs --forwarded-header x-forwarded-for|forwarded|x-real-ip: \
the header your proxy writes. Proxies pass every other forwarding header through from the \
client, so the demo must know which one to believe."
                .into(),
        );
    }
    if out.forwarded_header.is_some() && out.trusted_proxies.is_empty() {
        return Err("--forwarded-header needs at least one --trusted-proxy CIDR".into());
    }
    if out.idle > out.absolute {
        return Err(format!(
            "--idle-timeout ({}s) must not be longer than --absolute-timeout ({}s)",
            out.idle.as_secs(),
            out.absolute.as_secs()
        ));
    }
    Ok(out)
}

/// Logs to stdout (session events included: fingerprints, never tokens).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Prints what the server is and who can log in.
pub fn print_banner(url: &str, args: &Args) {
    println!("tower-session-guard demo on {url}");
    println!(
        "idle timeout {}s, absolute lifetime {}s, pin {:?}, trusted proxies {:?}",
        args.idle.as_secs(),
        args.absolute.as_secs(),
        args.pin,
        args.trusted_proxies
    );
    println!(
        "policy (allow mode): admins only from 127.0.0.1 or ::1; users from 127.0.0.0/8 or ::1"
    );
    println!("demo users:");
    for u in USERS {
        println!(
            "  {} / {}  roles {:?}  groups {:?}",
            u.name, u.password, u.roles, u.groups
        );
    }
}

/// The session layer both demos use: the flags' timeouts, pin, proxies and session cap, and
/// the demo policy.
pub fn layer(
    store: impl SessionStore,
    args: &Args,
) -> Result<SessionGuardLayer<ValidationPolicy>, String> {
    builder(store, args)?
        .build()
        .map_err(|e| format!("invalid session settings: {e}"))
}

/// [`layer`]'s builder before `build()`, for a demo that adds options of its own.
pub fn builder(
    store: impl SessionStore,
    args: &Args,
) -> Result<SessionGuardBuilder<ValidationPolicy>, String> {
    let policy = demo_policy().map_err(|e| format!("invalid policy: {e}"))?;
    let mut builder = SessionGuardLayer::builder(store)
        .idle_timeout(args.idle)
        .guest_idle_timeout(DEFAULT_GUEST_IDLE_TIMEOUT.min(args.idle))
        .absolute_timeout(args.absolute)
        .pin_mode(args.pin)
        .trusted_proxies(args.trusted_proxies.iter().cloned());
    if let Some(header) = args.forwarded_header {
        builder = builder.forwarded_header(header);
    }
    if let Some(n) = args.max_sessions {
        builder = builder.max_sessions_per_user(n, LimitPolicy::EvictOldest);
    }
    Ok(builder.policy(policy))
}

/// The embedded store, with `--capacity` if given.
pub fn memory_store(args: &Args) -> tower_session_guard::MemoryStore {
    match args.capacity {
        Some(n) => tower_session_guard::MemoryStore::with_capacity(n),
        None => tower_session_guard::MemoryStore::new(),
    }
}

/// `--redis URL`: sessions in Redis, with a moka near-cache kept coherent across instances.
#[cfg(feature = "redis")]
pub async fn connect_redis(url: &str) -> Result<tower_session_guard::RedisStore, String> {
    tower_session_guard::RedisStore::connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// `--redis URL` in a build without feature `redis` (the published package tests and runs
/// its examples without it).
#[cfg(not(feature = "redis"))]
pub async fn connect_redis(_url: &str) -> Result<tower_session_guard::MemoryStore, String> {
    Err("this build has no Redis store: run with `--features redis`".to_owned())
}

/// `--postgres URL`: sessions in PostgreSQL (schema `tsg`, created on first use), with a moka
/// near-cache kept coherent across instances by LISTEN/NOTIFY.
#[cfg(feature = "postgres")]
pub async fn connect_postgres(url: &str) -> Result<tower_session_guard::PostgresStore, String> {
    tower_session_guard::PostgresStore::connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// `--postgres URL` in a build without feature `postgres`.
#[cfg(not(feature = "postgres"))]
pub async fn connect_postgres(_url: &str) -> Result<tower_session_guard::MemoryStore, String> {
    Err("this build has no PostgreSQL store: run with `--features postgres`".to_owned())
}
