//! The cases of `benches/as_users_run.rs`, interleaved: each round runs a short batch of every
//! case in turn, and a case's overhead is the median over rounds of (case − `bare`) within the
//! same round. Drift of a shared, noisy machine then hits every case of a round alike, which
//! criterion's one-case-after-another runs cannot promise.
//!
//! ```text
//! cd bench && cargo run --release --bin as_users_interleaved -- [ROUNDS] [CASE...]
//! ```
//!
//! Defaults: 300 rounds of 3 000 requests per case, every case. Pin it to one core
//! (`taskset -c 1`) for the steadiest figures.

use std::time::Instant;

use tsg_bench::as_users::{call, login, request, App, CASES, FLOOR_STEPS};

const BATCH: u32 = 3_000;
const WARM_UP: u32 = 20_000;

async fn batch(app: &mut App, cookie: &str, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(call(app, request("GET", "/me", cookie)).await);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let rounds: usize = match args.peek().and_then(|a| a.parse().ok()) {
        Some(n) => {
            args.next();
            n
        }
        None => 300,
    };
    let wanted: Vec<String> = args.collect();
    let cases: Vec<_> = CASES
        .iter()
        .filter(|(name, _)| {
            *name == "bare"
                || *name == "tower_sessions"
                || wanted.is_empty()
                || wanted.iter().any(|w| w == name)
        })
        .collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async {
        let mut apps = Vec::new();
        for (name, make) in &cases {
            let mut app: App = make().with_state(()).into_service();
            let cookie = login(&mut app).await;
            batch(&mut app, &cookie, WARM_UP).await;
            apps.push((*name, app, cookie));
        }
        let mut overheads = vec![Vec::with_capacity(rounds); apps.len()];
        let mut bare = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let mut times = Vec::with_capacity(apps.len());
            for (_, app, cookie) in apps.iter_mut() {
                times.push(batch(app, cookie, BATCH).await);
            }
            bare.push(times[0]);
            for (i, t) in times.iter().enumerate() {
                overheads[i].push(t - times[0]);
            }
        }
        let medians: Vec<f64> = overheads.iter_mut().map(|v| median(v)).collect();
        let ts = medians[1];
        println!(
            "as_users_interleaved: {rounds} rounds x {BATCH} requests per case; bare {:.0} ns (median)",
            median(&mut bare)
        );
        println!("overhead = case - bare in the same round, median over rounds; ratio = ÷ tower-sessions' overhead");
        for ((name, _, _), m) in apps.iter().zip(&medians) {
            let step = FLOOR_STEPS
                .iter()
                .find(|(case, _)| case == name)
                .map_or("", |(_, what)| what);
            println!("  {name:<26} {m:>6.0} ns  {:>5.2}  {step}", m / ts);
        }
    });
}
