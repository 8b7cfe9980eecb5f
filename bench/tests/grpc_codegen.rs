//! The gRPC demo's generated code is committed (so building the crate or its examples needs
//! no protobuf compiler at all). This test regenerates it from the `.proto` with protox (a
//! protobuf compiler written in Rust, so no system `protoc`) and tonic-prost-build, and fails
//! if the committed file is stale. `UPDATE_GENERATED=1` rewrites it instead.

use std::path::Path;

#[test]
fn committed_grpc_code_matches_the_proto() {
    // This package lives in `bench/`; the proto and the committed code are the crate's.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto = root.join("examples/grpc/auth.proto");
    let committed = root.join("examples/grpc/auth.rs");

    let fds = protox::compile([&proto], [root.join("examples/grpc")]).expect("the proto compiles");
    let out = std::env::temp_dir().join(format!("tsg-grpc-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    tonic_prost_build::configure()
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_fds(fds)
        .expect("tonic-prost-build generates code");
    let generated = std::fs::read_to_string(out.join("demo.auth.v1.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);

    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::write(&committed, &generated).expect("write the generated file");
        return;
    }
    let current = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        current == generated,
        "examples/grpc/auth.rs is stale: run `UPDATE_GENERATED=1 cargo test --manifest-path bench/Cargo.toml --test grpc_codegen`"
    );
}
