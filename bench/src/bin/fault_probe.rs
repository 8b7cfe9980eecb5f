//! The fault runs of issue 13 (`bench/faults.sh` drives this): two layer instances on one
//! backend under a steady load of authenticated requests, the backend killed and restarted,
//! and what the clients saw.
//!
//! ```text
//! fault_probe serve redis|postgres URL IP:PORT      # one layer instance; prints `ready on ADDR`
//! fault_probe drive a=ADDR b=ADDR kill='CMD' restart='CMD' [key=value ...]
//! ```
//!
//! **serve**: an axum server behind the layer as the benches configure it (`bench/src/lib.rs`:
//! exact pin, the demo's allow-mode policy, 30-minute idle timeout, system clock) on
//! `RedisStore` (any URL the store takes, `redis-cluster://a:1,b:2,...` included) or
//! `PostgresStore` (schema `tsg_faults`), every store setting at its default (Redis: 300 ms
//! command timeout; PostgreSQL: 500 ms; near-cache on). Routes: `POST /login?user=NAME`
//! (logs NAME in, role `user`), `GET /me` (200 and the user id, 401 without a session),
//! `POST /logout`. Store errors answer 503, as the layer does.
//!
//! **drive**, in order (all loops bounded in count and time; every request has a 5 s timeout):
//!
//! 1. Waits until both instances answer, logs in `sessions` users (alternating instances).
//! 2. **Cross-instance revocation** (`trials`, backend up, under the load of step 3): log a
//!    new user in on one instance, read it on the other (now in that instance's near-cache),
//!    log out on the first, then poll the other back to back until it refuses (401). Latency
//!    from the logout's answer to the first refusal; directions alternate.
//! 3. **Load**: `workers` tasks, each with its own keep-alive connection to each instance,
//!    send `GET /me` for a random session to alternating instances, one request every
//!    `pace_ms` per worker, until the end of the run. Every answer is recorded (instance,
//!    session, send and answer times, status; 0 = transport error or timeout).
//! 4. After `steady` seconds: `revoke` sessions are logged out (half on each instance) and
//!    their acknowledgements recorded (they stay in the load mix); then `kill` runs (`sh -c`;
//!    the kill time is when it returns). During the outage a few more logouts and logins are
//!    sent (their answers must be 503; such a logout's outcome is unknown, it is not counted
//!    as a revocation). After `outage` seconds `restart` runs (it must return when the backend
//!    accepts connections; empty: no restart, e.g. a cluster failover), then the load goes on
//!    for `after` seconds and every acknowledged revocation is read once more on both
//!    instances.
//!
//! Printed: per instance the time from the kill to its first 503, the answers between the
//! kill and the restart by status (200s split into before and after that instance's first
//! 503: a near-cache hit can be served until the store notices its connection is gone), the
//! longest and p99 wait of an answer in that window (fail-fast) and how many waited 250 ms or
//! more, the time from the restart (or from the kill, without one) to the first 200 and to
//! the last 503 (without a restart: from the kill, to the first 200 sent after the instance's
//! first 503, and to the last 503), requests sent after the restart that were served a
//! session logged out (and acknowledged) before the kill (must be 0; also counted: such
//! requests before the restart, i.e. within the cross-instance propagation window), live
//! sessions refused after the restart (lost writes), and the revocation latencies; then
//! `result {json}` for the script. The run fails (exit 1) on any 500, an acknowledged
//! revocation served after the restart or in the final reads, a live session refused after
//! the restart, or a revocation the other instance never refused.
//
// One file although it is long: a stand-alone measuring tool whose three parts (the server,
// the client and load, the report) share only its few types, read top to bottom in the
// order of a run; the bench package keeps each tool in one `src/bin` file.

use tsg_bench as support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tower_session_guard::{Identity, Session, SessionError, SystemClock};

// ----- serve -----

#[derive(serde::Deserialize)]
struct LoginQuery {
    user: String,
}

async fn login(
    session: Session,
    Query(q): Query<LoginQuery>,
) -> Result<&'static str, SessionError> {
    session
        .login(Identity::new(q.user).with_roles(["user"]))
        .await?;
    Ok("welcome")
}

async fn me(session: Session) -> Result<String, StatusCode> {
    session
        .record()
        .and_then(|r| r.identity.as_ref().map(|i| i.user_id.clone()))
        .ok_or(StatusCode::UNAUTHORIZED)
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("bye")
}

fn app(store: impl tower_session_guard::store::SessionStore) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .layer(support::guard_layer(
            store,
            SystemClock,
            tower_session_guard::config::DEFAULT_ABSOLUTE_TIMEOUT,
        ))
}

async fn serve(kind: &str, url: &str, addr: &str) -> Result<(), String> {
    let router = match kind {
        "redis" => app(tower_session_guard::RedisStore::builder(url.to_owned())
            .build()
            .await
            .map_err(|e| format!("redis store: {e}"))?),
        "postgres" => app(tower_session_guard::PostgresStore::builder(url.to_owned())
            .schema("tsg_faults")
            .build()
            .await
            .map_err(|e| format!("postgres store: {e}"))?),
        other => return Err(format!("unknown store {other:?} (redis or postgres)")),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("ready on {local}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .map_err(|e| e.to_string())
}

// ----- the client -----

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One keep-alive HTTP/1.1 connection to an instance, reopened after an error.
struct Conn {
    addr: SocketAddr,
    tx: Option<SendRequest<Empty<Bytes>>>,
}

/// An answer: status (0: transport error or timeout), the session cookie it set, the body.
struct Answer {
    status: u16,
    cookie: Option<String>,
    body: String,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, tx: None }
    }

    async fn send(&mut self, method: Method, path: &str, cookie: Option<&str>) -> Answer {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.try_send(method, path, cookie)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => {
                self.tx = None;
                Answer {
                    status: 0,
                    cookie: None,
                    body: String::new(),
                }
            }
        }
    }

    async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<Answer, Box<dyn std::error::Error + Send + Sync>> {
        if self.tx.as_ref().is_none_or(|tx| tx.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.tx = Some(tx);
        }
        let tx = self.tx.as_mut().ok_or("no connection")?;
        tx.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        if let Some(cookie) = cookie {
            req = req.header(header::COOKIE, cookie);
        }
        let res = tx.send_request(req.body(Empty::new())?).await?;
        let status = res.status().as_u16();
        let cookie = res
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .filter(|pair| pair.starts_with(support::GUARD_COOKIE) && !pair.ends_with('='))
            .map(str::to_owned);
        let body = res.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            cookie,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

// ----- drive -----

struct Settings {
    addrs: [SocketAddr; 2],
    kill: String,
    restart: String,
    sessions: usize,
    workers: usize,
    pace: Duration,
    steady: Duration,
    outage: Duration,
    after: Duration,
    revoke: usize,
    trials: usize,
}

impl Settings {
    fn parse(args: &[String]) -> Result<Settings, String> {
        let mut kv = BTreeMap::new();
        for arg in args {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {arg:?}"))?;
            kv.insert(k.to_owned(), v.to_owned());
        }
        let take = |k: &str| kv.get(k).cloned();
        let num = |k: &str, default: u64| -> Result<u64, String> {
            take(k).map_or(Ok(default), |v| {
                v.parse().map_err(|e| format!("{k}={v}: {e}"))
            })
        };
        let addr = |k: &str| -> Result<SocketAddr, String> {
            let v = take(k).ok_or_else(|| format!("{k}=IP:PORT is required"))?;
            v.parse().map_err(|e| format!("{k}={v}: {e}"))
        };
        let secs = |k: &str, default: f64| -> Result<Duration, String> {
            let v = take(k).map_or(Ok(default), |v| {
                v.parse::<f64>().map_err(|e| format!("{k}: {e}"))
            })?;
            Duration::try_from_secs_f64(v).map_err(|e| format!("{k}: {e}"))
        };
        Ok(Settings {
            addrs: [addr("a")?, addr("b")?],
            kill: take("kill").ok_or("kill='CMD' is required")?,
            restart: take("restart").unwrap_or_default(),
            sessions: usize::try_from(num("sessions", 400)?).map_err(|e| e.to_string())?,
            workers: usize::try_from(num("workers", 8)?).map_err(|e| e.to_string())?,
            pace: Duration::from_millis(num("pace_ms", 2)?),
            steady: secs("steady", 3.0)?,
            outage: secs("outage", 3.0)?,
            after: secs("after", 4.0)?,
            revoke: usize::try_from(num("revoke", 40)?).map_err(|e| e.to_string())?,
            trials: usize::try_from(num("trials", 200)?).map_err(|e| e.to_string())?,
        })
    }
}

/// One answered request of the load.
#[derive(Clone, Copy)]
struct Obs {
    instance: u8,
    session: u32,
    sent: Duration,
    answered: Duration,
    status: u16,
}

/// Revocation state per session: 0 live, else the acknowledgement time in ns since the start
/// (+1), or `UNKNOWN` for a logout whose outcome is unknown.
const UNKNOWN: u64 = u64::MAX;

struct Shared {
    start: Instant,
    cookies: Vec<String>,
    revoked: Vec<AtomicU64>,
    stop: AtomicBool,
    observed: Mutex<Vec<Obs>>,
}

impl Shared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn worker(shared: Arc<Shared>, addrs: [SocketAddr; 2], seed: u64, pace: Duration) {
    let mut conns = [Conn::new(addrs[0]), Conn::new(addrs[1])];
    let mut rng = seed | 1;
    let mut local = Vec::with_capacity(16_384);
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = seed;
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let instance = (n % 2) as usize;
        let session = (xorshift(&mut rng) % shared.cookies.len() as u64) as usize;
        let sent = shared.now();
        let answer = conns[instance]
            .send(Method::GET, "/me", Some(&shared.cookies[session]))
            .await;
        local.push(Obs {
            instance: instance as u8,
            session: session as u32,
            sent,
            answered: shared.now(),
            status: answer.status,
        });
    }
    shared
        .observed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(local);
}

async fn login_on(conn: &mut Conn, user: &str) -> Result<String, String> {
    let answer = conn
        .send(Method::POST, &format!("/login?user={user}"), None)
        .await;
    match (answer.status, answer.cookie) {
        (200, Some(cookie)) => Ok(cookie),
        (status, _) => Err(format!("login of {user} answered {status} {}", answer.body)),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `cmd` with `sh -c` on a blocking thread (the load goes on meanwhile); an error unless
/// it exits 0.
async fn run(cmd: &str) -> Result<(), String> {
    let owned = cmd.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &owned])
            .status()
    })
    .await
    .map_err(|e| format!("{cmd}: {e}"))?
    .map_err(|e| format!("{cmd}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd}: {status}"))
    }
}

/// Cross-instance revocation latencies (ms) over `trials`, under whatever load runs.
async fn revocation_trials(
    addrs: [SocketAddr; 2],
    trials: usize,
) -> Result<(Vec<f64>, usize), String> {
    let mut conns = [Conn::new(addrs[0]), Conn::new(addrs[1])];
    let mut latencies = Vec::with_capacity(trials);
    let mut never = 0;
    for t in 0..trials {
        let (a, b) = if t % 2 == 0 { (0, 1) } else { (1, 0) };
        let cookie = login_on(&mut conns[a], &format!("trial{t}")).await?;
        let read = conns[b].send(Method::GET, "/me", Some(&cookie)).await;
        if read.status != 200 {
            return Err(format!(
                "trial {t}: the other instance answered {} before the logout",
                read.status
            ));
        }
        let out = conns[a].send(Method::POST, "/logout", Some(&cookie)).await;
        if out.status != 200 {
            return Err(format!("trial {t}: logout answered {}", out.status));
        }
        let acked = Instant::now();
        // Poll until refused, at most 10 s (twice the near-cache TTL).
        let refused = loop {
            let answer = conns[b].send(Method::GET, "/me", Some(&cookie)).await;
            if answer.status == 401 {
                break Some(acked.elapsed());
            }
            if acked.elapsed() > Duration::from_secs(10) {
                break None;
            }
        };
        match refused {
            Some(d) => latencies.push(ms(d)),
            None => never += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, never))
}

async fn drive(s: Settings) -> Result<(), String> {
    // 1. Both instances answer, then the sessions.
    let mut conns = [Conn::new(s.addrs[0]), Conn::new(s.addrs[1])];
    for conn in &mut conns {
        let deadline = Instant::now() + Duration::from_secs(30);
        while conn.send(Method::GET, "/me", None).await.status != 401 {
            if Instant::now() > deadline {
                return Err(format!("{} does not answer", conn.addr));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut cookies = Vec::with_capacity(s.sessions);
    for i in 0..s.sessions {
        cookies.push(login_on(&mut conns[i % 2], &format!("load{i}")).await?);
    }
    let shared = Arc::new(Shared {
        start: Instant::now(),
        revoked: (0..cookies.len()).map(|_| AtomicU64::new(0)).collect(),
        cookies,
        stop: AtomicBool::new(false),
        observed: Mutex::new(Vec::new()),
    });

    // 3. The load, for the rest of the run.
    let load: Vec<_> = (0..s.workers)
        .map(|w| {
            tokio::spawn(worker(
                shared.clone(),
                s.addrs,
                0x9e37_79b9 * (w as u64 + 1),
                s.pace,
            ))
        })
        .collect();
    let load_started = shared.now();

    // 2. Revocation latency under that load.
    let (latencies, never) = revocation_trials(s.addrs, s.trials).await?;
    println!(
        "cross-instance revocation over {} trials: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, never refused {never}",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // 4. Steady load, revocations, the kill, the outage, the restart.
    let steady_until = load_started + s.steady;
    tokio::time::sleep(steady_until.saturating_sub(shared.now())).await;
    let revoke = s.revoke.min(shared.cookies.len() / 4);
    for i in 0..revoke {
        let answer = conns[i % 2]
            .send(Method::POST, "/logout", Some(&shared.cookies[i]))
            .await;
        if answer.status != 200 {
            return Err(format!(
                "logout of session {i} before the kill answered {}",
                answer.status
            ));
        }
        shared.revoked[i].store(shared.now().as_nanos() as u64 + 1, Ordering::SeqCst);
    }
    run(&s.kill).await?;
    let killed = shared.now();
    println!(
        "killed at {:.3} s ({} revoked just before)",
        killed.as_secs_f64(),
        revoke
    );
    // Writes during the outage: a few logouts and logins, one every 100 ms.
    let mut outage_writes: Vec<(String, u16)> = Vec::new();
    let mut during = 0;
    while shared.now() < killed + s.outage {
        let i = revoke + during;
        if during % 2 == 0 && i < shared.cookies.len() / 2 {
            let answer = conns[i % 2]
                .send(Method::POST, "/logout", Some(&shared.cookies[i]))
                .await;
            shared.revoked[i].store(UNKNOWN, Ordering::SeqCst);
            outage_writes.push(("logout".into(), answer.status));
        } else {
            let answer = conns[i % 2]
                .send(Method::POST, &format!("/login?user=outage{i}"), None)
                .await;
            outage_writes.push(("login".into(), answer.status));
        }
        during += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restart_begun = shared.now();
    let ready = if s.restart.is_empty() {
        killed
    } else {
        run(&s.restart).await?;
        shared.now()
    };
    println!(
        "restart begun at {:.3} s, backend ready at {:.3} s",
        restart_begun.as_secs_f64(),
        ready.as_secs_f64()
    );
    tokio::time::sleep(s.after).await;
    shared.stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.map_err(|e| format!("load worker: {e}"))?;
    }
    // The final reads of every acknowledged revocation, on both instances.
    let mut final_served = 0;
    for (i, at) in shared.revoked.iter().enumerate() {
        let at = at.load(Ordering::SeqCst);
        if at == 0 || at == UNKNOWN {
            continue;
        }
        for conn in conns.iter_mut() {
            if conn
                .send(Method::GET, "/me", Some(&shared.cookies[i]))
                .await
                .status
                == 200
            {
                final_served += 1;
            }
        }
    }

    // ----- the figures -----
    let mut observed =
        std::mem::take(&mut *shared.observed.lock().unwrap_or_else(|e| e.into_inner()));
    observed.sort_by_key(|o| o.answered);
    let revoked_at = |session: u32| shared.revoked[session as usize].load(Ordering::SeqCst);
    let mut json = serde_json::Map::new();
    json.insert("requests".into(), observed.len().into());
    json.insert("revoked_before_kill".into(), revoke.into());
    let mut rows = Vec::new();
    // What must never happen; any of it makes the run fail (exit 1) after the report.
    let mut violations: Vec<String> = Vec::new();
    let all_500 = observed.iter().filter(|o| o.status == 500).count();
    if all_500 > 0 {
        violations.push(format!("{all_500} answers were 500"));
    }
    if never > 0 {
        violations.push(format!(
            "{never} revocations were never refused by the other instance"
        ));
    }
    if final_served > 0 {
        violations.push(format!(
            "{final_served} final reads served an acknowledged revocation"
        ));
    }
    for instance in 0..2u8 {
        let mine: Vec<&Obs> = observed.iter().filter(|o| o.instance == instance).collect();
        let first_503 = mine
            .iter()
            .find(|o| o.answered >= killed && o.status == 503)
            .map(|o| o.answered - killed);
        let outage: Vec<&&Obs> = mine
            .iter()
            .filter(|o| o.answered >= killed && o.answered < restart_begun)
            .collect();
        let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
        for o in &outage {
            *by_status.entry(o.status).or_default() += 1;
        }
        let detect_at = first_503.map(|d| killed + d);
        let ok_before_detect = outage
            .iter()
            .filter(|o| o.status == 200 && detect_at.is_some_and(|d| o.answered < d))
            .count();
        let ok_after_detect = outage
            .iter()
            .filter(|o| o.status == 200 && detect_at.is_none_or(|d| o.answered >= d))
            .count();
        let last_200 = outage
            .iter()
            .rev()
            .find(|o| o.status == 200)
            .map(|o| o.answered - killed);
        let mut waits: Vec<f64> = outage.iter().map(|o| ms(o.answered - o.sent)).collect();
        waits.sort_by(f64::total_cmp);
        let slow = waits.iter().filter(|w| **w >= 250.0).count();
        // Without a restart (a cluster's failover) `ready` is the kill: the heal is the first
        // 200 sent after this instance's first 503.
        let healed = mine
            .iter()
            .find(|o| o.sent >= ready && o.status == 200 && detect_at.is_none_or(|d| o.sent >= d))
            .map(|o| o.answered - ready);
        let last_503 = mine
            .iter()
            .rev()
            .find(|o| o.answered >= ready && o.status == 503)
            .map(|o| o.answered - ready);
        // Served although its logout was acknowledged before the request was sent: after
        // the restart (must be 0), and before it (the cross-instance propagation window).
        let revoked_ok = |o: &&&Obs| {
            let at = revoked_at(o.session);
            o.status == 200 && at != 0 && at != UNKNOWN && o.sent.as_nanos() as u64 + 1 > at
        };
        let revoked_served = mine
            .iter()
            .filter(|o| o.sent >= ready)
            .filter(revoked_ok)
            .count();
        let revoked_served_before = mine
            .iter()
            .filter(|o| o.sent < ready)
            .filter(revoked_ok)
            .count();
        let unknown_served = mine
            .iter()
            .filter(|o| o.sent >= ready && o.status == 200 && revoked_at(o.session) == UNKNOWN)
            .count();
        let lost = mine
            .iter()
            .filter(|o| o.sent >= ready && o.status == 401 && revoked_at(o.session) == 0)
            .count();
        let name = if instance == 0 { "A" } else { "B" };
        let opt =
            |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} ms", ms(d)));
        println!(
            "instance {name}: kill -> first 503 {}; outage answers {:?}; 200 before first 503 {ok_before_detect}, after {ok_after_detect} (last 200 at {}); \
             wait max {:.1} ms, p99 {:.1} ms, >= 250 ms {slow}; restart -> first 200 {}, last 503 {}; \
             revoked served after restart {revoked_served} (before restart, after ack: {revoked_served_before}); \
             outage logouts (outcome unknown) served after restart {unknown_served}; live sessions refused after restart {lost}",
            opt(first_503),
            by_status,
            opt(last_200),
            waits.last().copied().unwrap_or(0.0),
            percentile(&waits, 99.0),
            opt(healed),
            opt(last_503),
        );
        let count = |status: u16| by_status.get(&status).copied().unwrap_or(0);
        let others: u64 = by_status
            .iter()
            .filter(|(s, _)| ![200, 503].contains(*s))
            .map(|(_, n)| n)
            .sum();
        if revoked_served > 0 {
            violations.push(format!(
                "instance {name}: {revoked_served} requests served a session revoked before the kill, after the restart"
            ));
        }
        if lost > 0 {
            violations.push(format!(
                "instance {name}: {lost} requests refused a live session after the restart (lost sessions)"
            ));
        }
        // Without a restart (a failover) a 200 after the first 503 is the heal itself.
        if ok_after_detect > 0 && !s.restart.is_empty() {
            println!(
                "note: instance {name} served {ok_after_detect} near-cache hits after its first 503 \
                 (before its store saw the connection closed)"
            );
        }
        rows.push(serde_json::json!({
            "instance": name,
            "first_503_ms": first_503.map(ms),
            "outage_answers": outage.len(),
            "outage_503": count(503),
            "outage_500": count(500),
            "outage_200_before_first_503": ok_before_detect,
            "outage_200_after_first_503": ok_after_detect,
            "outage_other": others,
            "outage_last_200_ms": last_200.map(ms),
            "outage_by_status": by_status.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
            "wait_max_ms": waits.last().copied(),
            "wait_p99_ms": percentile(&waits, 99.0),
            "waits_250ms_or_more": slow,
            "first_200_after_restart_ms": healed.map(ms),
            "last_503_after_restart_ms": last_503.map(ms),
            "revoked_served_after_restart": revoked_served,
            "revoked_served_after_ack_before_restart": revoked_served_before,
            "unknown_logouts_served_after_restart": unknown_served,
            "live_refused_after_restart": lost,
        }));
    }
    let write_statuses: BTreeMap<String, u64> =
        outage_writes.iter().fold(BTreeMap::new(), |mut m, (k, s)| {
            *m.entry(format!("{k} {s}")).or_default() += 1;
            m
        });
    println!("writes during the outage: {write_statuses:?}");
    println!("acknowledged revocations served in the final reads: {final_served}");
    json.insert("instances".into(), rows.into());
    json.insert(
        "outage_writes".into(),
        write_statuses
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    json.insert("final_revoked_served".into(), final_served.into());
    json.insert("outage_s".into(), s.outage.as_secs_f64().into());
    json.insert(
        "restart_duration_ms".into(),
        ms(ready.saturating_sub(restart_begun)).into(),
    );
    json.insert(
        "revocation_ms".into(),
        serde_json::json!({
            "trials": latencies.len() + never,
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().copied(),
            "never_refused": never,
        }),
    );
    json.insert("violations".into(), violations.clone().into());
    println!("result {}", serde_json::Value::Object(json));
    if violations.is_empty() {
        println!("verdict: fail-closed, nothing revoked returned, no session lost");
        Ok(())
    } else {
        Err(format!("violations: {}", violations.join("; ")))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fault_probe serve redis|postgres URL IP:PORT | fault_probe drive a=ADDR b=ADDR kill=CMD [restart=CMD] [key=value ...]";
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() == 4 => rt.block_on(serve(&args[1], &args[2], &args[3])),
        Some("drive") => match Settings::parse(&args[1..]) {
            Ok(settings) => rt.block_on(drive(settings)),
            Err(e) => Err(format!("{e}\n{usage}")),
        },
        _ => Err(usage.to_owned()),
    };
    if let Err(e) = result {
        eprintln!("fault_probe: {e}");
        std::process::exit(1);
    }
}
