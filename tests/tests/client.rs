//! The Rust client (`vault-client`) against real clusters.

/// vaultctl (through the client) and the server's audit log name codes with the same words.
#[test]
fn the_client_and_the_server_name_codes_alike() {
    for i in 0..=16 {
        let code = tonic::Code::from_i32(i);
        assert_eq!(vault_client::code_words(code), vault_node::error::code_words(code), "{code:?}");
    }
}
