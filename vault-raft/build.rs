fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/vault/raft");
    tonic_prost_build::configure()
        // A received Blob is a slice of the receive buffer, not a fresh copy of every message.
        .bytes(".vault.raft.v1.Blob")
        .build_client(true)
        .build_server(true)
        .compile_protos(&["../proto/vault/raft/v1/raft.proto"], &["../proto"])?;
    Ok(())
}
