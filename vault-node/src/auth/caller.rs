use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tonic::Status;
use vault_core::model::{Action, Role, TokenRecord};
use vault_core::token::RawToken;

/// The authenticated caller of a request, put into request extensions by the auth layer.
#[derive(Clone, Debug)]
pub struct Caller {
    pub ip: IpAddr,
    /// Present for management calls (token authenticated).
    pub principal: Option<Principal>,
    /// The call's audit action, from the RPC table (`auth::rpcs`).
    pub action: &'static str,
    /// For reads from an address that may not read: why. The handler refuses once it knows
    /// the secret's name, so the refusal is recorded under the same action and name as an
    /// allowed read.
    pub read_denied: Option<String>,
    /// For reads over TLS: the common name of the verified client certificate presented.
    pub cert_cn: Option<Arc<str>>,
    /// For reads the operator console makes for a logged-in browser: the session's token name.
    pub console_user: Option<Arc<str>>,
    /// Set when the call's change is proposed to Raft: from then on the apply step records it
    /// (on every node), and the handler does not.
    proposed: Arc<AtomicBool>,
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub token: TokenRecord,
    pub role: Role,
    /// The bearer token as the caller presented it (redacted in `Debug`): a write hands it to
    /// the leader, which authorizes the write from it (see `vault_raft::transport::CallerWrite`).
    pub presented: RawToken,
}

impl Caller {
    pub fn new(ip: IpAddr, principal: Option<Principal>, action: &'static str) -> Self {
        Caller {
            ip,
            principal,
            action,
            read_denied: None,
            cert_cn: None,
            console_user: None,
            proposed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the call's change as proposed (see `proposed`).
    pub fn mark_proposed(&self) {
        self.proposed.store(true, Ordering::SeqCst);
    }

    pub fn was_proposed(&self) -> bool {
        self.proposed.load(Ordering::SeqCst)
    }

    /// Token name for management calls; for reads the client IP, the subject of the client
    /// certificate it presented (`cert:CN`), or the console session's token name
    /// (`console:NAME`).
    pub fn actor(&self) -> String {
        match (&self.principal, &self.console_user, &self.cert_cn) {
            (Some(p), _, _) => p.token.name.clone(),
            (None, Some(user), _) => format!("console:{user}"),
            (None, None, Some(cn)) => format!("cert:{cn}"),
            (None, None, None) => self.ip.to_string(),
        }
    }

    pub fn principal(&self) -> Result<&Principal, Status> {
        self.principal.as_ref().ok_or_else(|| Status::unauthenticated("this call needs a bearer token"))
    }

    /// The token the caller presented, which a write or cluster change carries to the leader.
    pub fn presented_token(&self) -> Result<RawToken, Status> {
        Ok(self.principal()?.presented.clone())
    }

    /// The role must grant `action` on `name`.
    pub fn require(&self, action: Action, name: &str) -> Result<(), Status> {
        let p = self.principal()?;
        if p.role.allows(action, name) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {} (role {}) may not {action} {name}",
                p.token.name, p.role.name
            )))
        }
    }

    /// For calls whose answer depends on whether `name` exists (version lifecycle, deleting a
    /// secret, rotation): the role must grant `action` and also `list` on `name`, since the
    /// answer tells what a listing would. Checked before anything is looked up, so a caller
    /// without either gets the same refusal whether or not the name exists.
    pub fn require_on_existing(&self, action: Action, name: &str) -> Result<(), Status> {
        self.require(action, name)?;
        let p = self.principal()?;
        if p.role.allows(Action::List, name) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {} (role {}) may not {action} {name} without `list` on it: the answer would tell whether it \
                 exists",
                p.token.name, p.role.name
            )))
        }
    }

    /// Whether the role grants `action` on `name` (for filtering listings).
    pub fn allows(&self, action: Action, name: &str) -> bool {
        self.principal.as_ref().is_some_and(|p| p.role.allows(action, name))
    }

    /// Token, role, audit, cluster and KMS administration: the built-in admin role only.
    pub fn require_admin(&self, what: &str) -> Result<(), Status> {
        let p = self.principal()?;
        if p.role.is_admin() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {} (role {}) may not {what}: needs the admin role",
                p.token.name, p.role.name
            )))
        }
    }
}

pub fn caller_of<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::internal("request reached a handler without passing authentication"))
}
