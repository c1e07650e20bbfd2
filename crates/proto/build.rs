//! Compiles every contract under `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "cnmas/common/v1/common.proto",
        "cnmas/intake/v1/intake.proto",
        "cnmas/intake/v1/file_import.proto",
        "cnmas/consent/v1/consent.proto",
        "cnmas/scheduler/v1/scheduler.proto",
        "cnmas/dialer/v1/dialer.proto",
        "cnmas/results/v1/results.proto",
        "cnmas/rights/v1/rights.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    tonic_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
