fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // For gRPC server reflection (grpcurl and the like need no proto files).
        .file_descriptor_set_path(out.join("vault_descriptor.bin"))
        .build_client(true)
        .build_server(true)
        .compile_protos(&["../proto/vault/v1/vault.proto"], &["../proto"])?;
    Ok(())
}
