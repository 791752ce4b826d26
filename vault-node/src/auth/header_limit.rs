//! The API's header-list limit (`VAULT_API_MAX_HEADER_BYTES`), answered as a gRPC status.
//!
//! HTTP/2 itself refuses a header list over its `SETTINGS_MAX_HEADER_LIST_SIZE` with HTTP 431,
//! which gRPC clients can only report as `UNKNOWN`. So the HTTP/2 limit is set well above the
//! configured one ([`transport_limit`]) and the configured one is enforced here, before
//! anything else looks at the request, as `RESOURCE_EXHAUSTED` in a trailers-only answer.

use tonic::Status;

/// What HTTP/2 itself accepts: four times the configured limit, and at least 64 KiB, so a
/// client well over the configured limit still gets a status it can read; past it, HTTP 431.
/// Kept small: every concurrent stream of every connection may hold a header list this large
/// until this layer answers (HPACK makes a large list cheap to send), so this bounds what an
/// unauthenticated client can make the node hold.
pub fn transport_limit(configured: u32) -> u32 {
    configured.saturating_mul(4).max(64 << 10)
}

/// The size of a request's header list as HTTP/2 counts it (RFC 9113 §6.5.2: each field's
/// name and value plus 32 bytes), pseudo-header fields included.
pub fn header_list_size<B>(req: &http::Request<B>) -> usize {
    const FIELD_OVERHEAD: usize = 32;
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (":authority", uri.authority().map_or(0, |a| a.as_str().len())),
        (":path", uri.path_and_query().map_or(0, |p| p.as_str().len())),
    ];
    let pseudo: usize = pseudo.iter().map(|(name, len)| name.len() + len + FIELD_OVERHEAD).sum();
    let fields: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + FIELD_OVERHEAD).sum();
    pseudo + fields
}

/// The refusal for a request whose header list is over `max` bytes, if it is.
pub fn check<B>(req: &http::Request<B>, max: usize) -> Option<Status> {
    let size = header_list_size(req);
    (size > max).then(|| {
        Status::resource_exhausted(format!(
            "the request's header list is {size} bytes; this server takes at most {max} (VAULT_API_MAX_HEADER_BYTES)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_every_field_and_the_limit_is_enforced() {
        let mut req = http::Request::builder()
            .method("POST")
            .uri("http://127.0.0.1:8200/vault.v1.Secrets/GetSecret")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let base = header_list_size(&req);
        assert_eq!(base, (7 + 4 + 32) + (7 + 4 + 32) + (10 + 14 + 32) + (5 + 27 + 32) + (2 + 8 + 32));
        assert!(check(&req, base).is_none());
        req.headers_mut().insert("x-padding", "p".repeat(100).parse().unwrap());
        assert_eq!(header_list_size(&req), base + 9 + 100 + 32);
        let refused = check(&req, base + 100).expect("over the limit");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(transport_limit(4 << 10), 64 << 10);
        assert_eq!(transport_limit(16 << 10), 64 << 10);
        assert_eq!(transport_limit(1 << 20), 4 << 20);
        assert_eq!(transport_limit(u32::MAX), u32::MAX);
    }
}
