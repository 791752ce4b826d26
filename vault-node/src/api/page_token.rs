//! Page tokens of the name listings (`ListSecrets`, `ListRotations`). A token names the
//! listing's prefix and the last name the page returned, which its caller has seen already (a
//! listing only ever walks names the caller may list, so there is no other position to
//! carry). It is base64url with a version tag and a check value that also covers which
//! listing issued it, so garbage, a truncated or edited token, one from a listing of another
//! prefix, or one another listing issued is refused as `INVALID_ARGUMENT` rather than taken
//! as a position. The
//! check value is not a secret: whoever forges a token can only point it at a name the
//! handler then checks the caller may list, which tells them nothing new.

use base64::Engine;
use sha2::{Digest, Sha256};
use tonic::Status;

const TAG: &str = "v1.";
const CHECK_LEN: usize = 8;

/// Which listing a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Secrets,
    Rotations,
}

impl Listing {
    /// What the check value is computed under; `Secrets` keeps the context of the tokens
    /// issued before there was more than one listing, so they stay valid across an upgrade.
    fn context(self) -> &'static [u8] {
        match self {
            Listing::Secrets => b"vault ListSecrets page token v1\0",
            Listing::Rotations => b"vault ListRotations page token v1\0",
        }
    }
}

fn check(listing: Listing, body: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new().chain_update(listing.context()).chain_update(body).finalize();
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&digest[..CHECK_LEN]);
    out
}

/// The token for the page after `last` in `listing` of `prefix`.
pub fn issue(listing: Listing, prefix: &str, last: &str) -> String {
    // Prefixes are at most a name long (255 bytes); a longer one lists nothing and gets no token.
    let len = u16::try_from(prefix.len()).unwrap_or(u16::MAX);
    let mut body = Vec::with_capacity(2 + prefix.len() + last.len() + CHECK_LEN);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(prefix.as_bytes());
    body.extend_from_slice(last.as_bytes());
    let sum = check(listing, &body);
    body.extend_from_slice(&sum);
    format!("{TAG}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body))
}

/// The answer to a page token this listing did not issue.
pub fn refused() -> Status {
    Status::invalid_argument("page_token is not a token this listing issued; start again without one")
}

/// The name a page token says to continue after, for `listing` of `prefix`; `None` for no
/// token (the first page). The caller must still check that it may list the name.
pub fn resume(listing: Listing, token: &str, prefix: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let raw = token.strip_prefix(TAG).ok_or_else(refused)?;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).map_err(|_| refused())?;
    if body.len() < 2 + CHECK_LEN {
        return Err(refused());
    }
    let (signed, sum) = body.split_at(body.len() - CHECK_LEN);
    if check(listing, signed) != sum {
        return Err(refused());
    }
    let len = usize::from(u16::from_be_bytes([signed[0], signed[1]]));
    let rest = &signed[2..];
    if rest.len() < len {
        return Err(refused());
    }
    let (their_prefix, last) = rest.split_at(len);
    if their_prefix != prefix.as_bytes() {
        return Err(Status::invalid_argument("page_token belongs to a listing of another prefix"));
    }
    let last = std::str::from_utf8(last).map_err(|_| refused())?;
    if last.is_empty() || !last.starts_with(prefix) {
        return Err(refused());
    }
    Ok(Some(last.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn issued_tokens_resume_and_others_are_refused() {
        let resume = |t: &str, p: &str| super::resume(Listing::Secrets, t, p);
        let t = issue(Listing::Secrets, "app/", "app/db");
        assert_eq!(resume(&t, "app/").unwrap().as_deref(), Some("app/db"));
        assert_eq!(resume("", "app/").unwrap(), None);
        assert_eq!(resume(&t, "other/").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(resume(&t, "").unwrap_err().code(), Code::InvalidArgument);
        // Each listing takes only its own tokens.
        let rotations = issue(Listing::Rotations, "app/", "app/db");
        assert_eq!(resume(&rotations, "app/").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(super::resume(Listing::Rotations, &rotations, "app/").unwrap().as_deref(), Some("app/db"));
        assert_eq!(super::resume(Listing::Rotations, &t, "app/").unwrap_err().code(), Code::InvalidArgument);
        let mut edited = t.clone().into_bytes();
        let i = edited.len() - 12;
        edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        for bad in ["app/db", "v1.", "v1.!!", "garbage", &t[..t.len() - 3], &edited, "v1.AAAAAAAAAAAAAAAA"] {
            assert_eq!(resume(bad, "app/").unwrap_err().code(), Code::InvalidArgument, "{bad:?}");
        }
    }
}
