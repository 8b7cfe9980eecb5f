//! The layer's in-process cost as an application pays it (issue 14), next to a bare router
//! and tower-sessions, in one run:
//!
//! ```text
//! cd bench && cargo bench --bench as_users_run
//! ```
//!
//! What `benches/layer.rs` leaves out on purpose (it isolates the layer's own steps with a
//! simulated clock and a small store), this bench puts back, so that its ratios are the ones
//! an application sees and the ones the independent harness (`../shared/perf-anchor/`)
//! reports:
//!
//! * the **system clock** (a real `clock_gettime` per request), not a `ManualClock`;
//! * the client address as axum's **`ConnectInfo<SocketAddr>`**, as `axum::serve` with
//!   `into_make_service_with_connect_info` sets it, not the crate's own `PeerAddr`;
//! * a **store sized for a large site** (`MemoryStore::with_capacity(4_000_000)`);
//! * the demo's configuration: exact pin and a one-rule allow-mode `ValidationPolicy`;
//! * the **handler reads the user and answers JSON** (`{"user":"alice"}`), the same handler
//!   tail in every case; `guard_identity` reads through `Session::identity()` (the README's
//!   read), `guard_record` through `Session::record()`;
//! * every router is finished with `with_state(())`, as `axum::serve` does, and each request
//!   is built the same way (the `Cookie` header and the `ConnectInfo` extension) in every case.
//!
//! Overhead = case − `bare`; the summary prints the layer's overhead ÷ tower-sessions'.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use tsg_bench::as_users::{call, login, request, App, CASES, FLOOR_STEPS};

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args()
        .without_plots();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("as_users_run");
    for (name, make) in CASES {
        let mut app: App = make().with_state(()).into_service();
        let cookie = rt.block_on(login(&mut app));
        group.bench_function(name, |b| {
            b.iter(|| {
                let res = rt.block_on(call(&mut app, request("GET", "/me", &cookie)));
                black_box(res)
            })
        });
    }
    group.finish();
    c.final_summary();
    summary();
}

/// The overheads and their ratio, from the estimates criterion wrote in this run.
fn summary() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("criterion/as_users_run");
    let median = |case: &str| -> Option<f64> {
        let text = std::fs::read_to_string(dir.join(case).join("new/estimates.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.get("median")?.get("point_estimate")?.as_f64()
    };
    let Some(bare) = median("bare") else {
        println!("no estimates under {} (a filtered run?)", dir.display());
        return;
    };
    let ts = median("tower_sessions").map(|t| t - bare);
    println!("as_users_run: median ns per request, overhead = case - bare ({bare:.0} ns)");
    for case in ["tower_sessions", "guard_identity", "guard_record"] {
        if let Some(m) = median(case) {
            let ratio = ts.map_or("-".to_owned(), |t| format!("{:.2}", (m - bare) / t));
            println!(
                "  {case:<16} {m:>7.0} ns   overhead {:>6.0} ns   ÷ tower-sessions' overhead {ratio}",
                m - bare
            );
        }
    }
    // One factor at a time, against guard_record.
    if let Some(record) = median("guard_record") {
        println!("factors (each case differs from guard_record in one thing):");
        for (case, what) in [
            (
                "guard_manual_clock",
                "a ManualClock instead of the system clock",
            ),
            (
                "guard_default_store",
                "MemoryStore::new() instead of a 4M store",
            ),
        ] {
            if let Some(m) = median(case) {
                println!("  {case:<20} {:>+6.0} ns  ({what})", m - record);
            }
        }
        if let (Some(text), Some(constant)) = (median("bare_text"), median("guard_constant")) {
            println!(
                "  guard_constant - bare_text {:>6.0} ns  (the layer's overhead when the handler \
                 answers a constant without reading the session)",
                constant - text
            );
        }
    }
    // The floor: what a layer that does only part of the work costs, at best.
    println!("the floor (src/floor.rs), overhead over bare and ÷ tower-sessions' overhead:");
    for (case, what) in FLOOR_STEPS {
        if let Some(m) = median(case) {
            let ratio = ts.map_or("-".to_owned(), |t| format!("{:.2}", (m - bare) / t));
            println!("  {case:<26} {:>6.0} ns  {ratio:>5}  ({what})", m - bare);
        }
    }
}
