//! What the name listings (`ListSecrets`, `ListRotations`) share: who may list, which name
//! ranges a caller's listing walks, where a page starts, and the token of the next page. A
//! listing walks only the ranges the caller's grants cover, so neither its pages nor its
//! tokens depend on names the caller may not list.

use vault_core::model::{Action, NameRange};
use vault_core::SecretName;

use crate::api::page_token::{self, Listing};
use crate::auth::caller::Caller;
use crate::error::ApiError;

/// Most entries in one page, and the page size when the request names none.
pub const MAX_PAGE: usize = 1000;

/// Where one page of a listing reads.
pub struct Scope {
    /// The names under the prefix the caller may list, disjoint and in name order.
    pub ranges: Vec<NameRange>,
    /// The page starts after this name ("" for the first page).
    pub after: String,
    pub limit: usize,
}

/// The scope of a page of `listing` under `prefix` for `caller`, continuing after
/// `page_token`. A token whose role may list nothing is refused before anything is read; so
/// is a page token this listing did not issue to a caller who may list its name, the same
/// way whether or not such a name exists.
pub fn scope(
    caller: &Caller,
    listing: Listing,
    prefix: &str,
    page_size: u32,
    page_token: &str,
) -> Result<Scope, ApiError> {
    let limit = match page_size as usize {
        0 => MAX_PAGE,
        n => n.min(MAX_PAGE),
    };
    let Some(principal) = caller.principal.as_ref().filter(|p| p.role.grants_action(Action::List)) else {
        return Err(tonic::Status::permission_denied("this token's role grants `list` on no name").into());
    };
    let after = match page_token::resume(listing, page_token, prefix)? {
        Some(name) if SecretName::parse(&name).is_ok() && caller.allows(Action::List, &name) => name,
        Some(_) => return Err(page_token::refused().into()),
        None => String::new(),
    };
    Ok(Scope { ranges: principal.role.ranges(Action::List, prefix), after, limit })
}

/// The token of the page after one that ended at `last`: empty when nothing follows.
pub fn next_token(listing: Listing, prefix: &str, last: Option<&str>, more: bool) -> String {
    match last {
        Some(last) if more => page_token::issue(listing, prefix, last),
        _ => String::new(),
    }
}
