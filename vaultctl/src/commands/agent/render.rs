//! Templates: minijinja, with the values of the secrets a template lists given to it through
//! functions (`secret`, `secret_base64`, `secret_version`), never as ambient variables, so a
//! template can use only the secrets its configuration names.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use zeroize::Zeroizing;

/// One secret as read: its version and value.
pub type Versioned = (u64, Arc<Zeroizing<Vec<u8>>>);
/// The values a render may use, by name.
pub type Values = BTreeMap<String, Versioned>;

#[derive(Debug, thiserror::Error)]
#[error("render {destination}: {message}")]
pub struct RenderError {
    pub destination: String,
    pub message: String,
}

fn lookup<'a>(values: &'a Values, name: &str) -> Result<&'a Versioned, Error> {
    values.get(name).ok_or_else(|| {
        Error::new(ErrorKind::InvalidOperation, format!("secret {name:?} is not in this template's `secrets` list"))
    })
}

/// Renders `source` with `values`. The output is zeroized when dropped.
pub fn render(destination: &str, source: &str, values: Arc<Values>) -> Result<Zeroizing<String>, RenderError> {
    let fail = |e: Error| RenderError { destination: destination.to_string(), message: describe(&e) };
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // A file ends as its template does (Jinja drops one trailing newline by default).
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().map_err(fail)?);
    // Rendered files are configuration, not HTML.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let v = values.clone();
    env.add_function("secret", move |name: String| -> Result<String, Error> {
        let (_, value) = lookup(&v, &name)?;
        String::from_utf8(value.as_slice().to_vec()).map_err(|_| {
            Error::new(ErrorKind::InvalidOperation, format!("secret {name:?} is not UTF-8 text: use secret_base64"))
        })
    });
    let v = values.clone();
    env.add_function("secret_base64", move |name: String| -> Result<String, Error> {
        let (_, value) = lookup(&v, &name)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(value.as_slice()))
    });
    let v = values;
    env.add_function("secret_version", move |name: String| -> Result<u64, Error> { Ok(lookup(&v, &name)?.0) });
    env.add_template("t", source).map_err(fail)?;
    let template = env.get_template("t").map_err(fail)?;
    template.render(()).map(Zeroizing::new).map_err(fail)
}

/// The error's text and where it happened. minijinja's errors name the template line and the
/// failing expression, never a rendered value.
fn describe(e: &Error) -> String {
    match e.line() {
        Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.kind().to_string())),
        None => e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, u64, &[u8])]) -> Arc<Values> {
        Arc::new(pairs.iter().map(|(n, v, b)| (n.to_string(), (*v, Arc::new(Zeroizing::new(b.to_vec()))))).collect())
    }

    #[test]
    fn functions_give_values_versions_and_base64() {
        let v = values(&[("app/db", 3, b"s3cret"), ("app/bin", 1, &[0, 255])]);
        let out = render(
            "/f",
            "pw={{ secret('app/db') }} v={{ secret_version('app/db') }} b={{ secret_base64('app/bin') }} <&>\n",
            v,
        )
        .expect("render");
        assert_eq!(out.as_str(), "pw=s3cret v=3 b=AP8= <&>\n", "no escaping; the trailing newline kept");
    }

    #[test]
    fn unlisted_secrets_binary_text_and_undefined_names_fail_without_values() {
        let v = values(&[("app/db", 3, b"s3cret"), ("app/bin", 1, &[0, 255])]);
        let e = render("/f", "{{ secret('app/other') }}", v.clone()).expect_err("unlisted");
        assert!(e.message.contains("not in this template"), "{e}");
        let e = render("/f", "{{ secret('app/bin') }}", v.clone()).expect_err("binary");
        assert!(e.message.contains("secret_base64"), "{e}");
        let e = render("/f", "{{ nope }}", v.clone()).expect_err("undefined");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = render("/f", "{{ secret('app/db') | nosuchfilter }}", v).expect_err("unknown filter");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
