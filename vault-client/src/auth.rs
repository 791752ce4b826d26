//! The bearer token: kept in zeroizing memory, sent as `authorization: Bearer ...` on every
//! call, never shown by `Debug`.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A raw token (surrounding whitespace dropped).
pub(crate) struct Token(Zeroizing<String>);

impl Token {
    pub fn new(raw: String) -> Token {
        let raw = Zeroizing::new(raw);
        Token(Zeroizing::new(raw.trim().to_string()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The interceptor that adds the token, if any, to each request.
#[derive(Clone, Default)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    pub(crate) fn new(token: Option<&Token>) -> Result<Auth> {
        match token.map(|t| t.0.as_str()).filter(|t| !t.is_empty()) {
            None => Ok(Auth(None)),
            Some(t) => {
                let header = Zeroizing::new(format!("Bearer {t}"));
                let mut v = MetadataValue::try_from(header.as_str())
                    .map_err(|_| Error::Config("the token contains characters not allowed in a header".into()))?;
                v.set_sensitive(true);
                Ok(Auth(Some(v)))
            }
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer [REDACTED]" } else { "none" })
    }
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
