//! Client stubs of the vault's public API, generated from `proto/` at build time. Like
//! `vault-node`'s build script, this relies on prost-build finding `protoc` (`PROTOC`, else
//! `protoc` on `PATH`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_protos(&["../proto/vault/v1/vault.proto"], &["../proto"])?;
    Ok(())
}
