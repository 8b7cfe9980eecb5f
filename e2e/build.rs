//! Builds examples/demo.rs (this package's `demo` binary) with its HTTPS part.
fn main() {
    println!("cargo:rustc-cfg=tsg_demo_tls");
}
