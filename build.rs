//! Tells the tests whether Redis and PostgreSQL are expected, so that a test that cannot run
//! shows up as `ignored` (with the reason) in `cargo test`'s output instead of passing.
//!
//! `cfg(tsg_redis)`: `REDIS_URL` is set, or `TSG_REQUIRE_REDIS=1` (CI, which then fails
//! without it). `cfg(tsg_redis_cluster)`: `REDIS_CLUSTER_TEST=1`. `cfg(tsg_postgres)`:
//! `POSTGRES_URL` is set, or `TSG_REQUIRE_POSTGRES=1`. The tests carry
//! `#[cfg_attr(not(tsg_redis), ignore = "...")]` (or `tsg_postgres`); when the cfg is set
//! they run, and a missing or unreachable server fails them.
//!
//! Why a build script: `#[ignore]` is decided at compile time, and libtest has no other
//! visible "skipped" (a test that returns early is `ok`, and what it prints is captured).
//! The alternatives cost more: `#[ignore]` on every Redis test plus `--include-ignored` in
//! CI would run the long flood tests too, and a `--cfg` in RUSTFLAGS rebuilds every
//! dependency. The cost here: library users compile and run this script once (it has no
//! dependencies and reads five variables), and the crate is rebuilt when one of them
//! changes. It never changes what the library does: only test attributes read these cfgs.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tsg_redis)");
    println!("cargo::rustc-check-cfg=cfg(tsg_redis_cluster)");
    println!("cargo::rustc-check-cfg=cfg(tsg_postgres)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=REDIS_URL");
    println!("cargo::rerun-if-env-changed=TSG_REQUIRE_REDIS");
    println!("cargo::rerun-if-env-changed=REDIS_CLUSTER_TEST");
    println!("cargo::rerun-if-env-changed=POSTGRES_URL");
    println!("cargo::rerun-if-env-changed=TSG_REQUIRE_POSTGRES");
    let var = |name| std::env::var(name).unwrap_or_default();
    if !var("REDIS_URL").is_empty() || var("TSG_REQUIRE_REDIS") == "1" {
        println!("cargo::rustc-cfg=tsg_redis");
    }
    if var("REDIS_CLUSTER_TEST") == "1" {
        println!("cargo::rustc-cfg=tsg_redis_cluster");
    }
    if !var("POSTGRES_URL").is_empty() || var("TSG_REQUIRE_POSTGRES") == "1" {
        println!("cargo::rustc-cfg=tsg_postgres");
    }
}
