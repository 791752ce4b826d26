//! `vaultctl run`: a program with secrets in its environment.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tonic::Code;
use vault_client::{pb, Client, Route};

use crate::commands::rpc;
use crate::failure::Failure;

// The arguments of `vaultctl run`. No doc comment here: the help text is the doc comment of
// the `Run` variant in main.rs.
#[derive(Args)]
pub struct RunArgs {
    /// VAR=NAME or VAR=NAME@VERSION; repeat for more.
    #[arg(long = "env", value_name = "VAR=NAME[@VERSION]", required_unless_present = "env_file")]
    pub env: Vec<String>,
    /// A file of VAR=NAME[@VERSION] lines (blank lines and `#` comments allowed): which
    /// secrets go in which variables, never values. Adds to --env.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(c: &Client, args: RunArgs) -> Result<(), Failure> {
    let RunArgs { mut env, env_file, command } = args;
    if let Some(file) = env_file {
        env.extend(read_env_file(&file)?);
    }
    run_with_secrets(c, &env, &command).await
}

/// One `--env VAR=NAME[@VERSION]`.
fn parse_env_spec(spec: &str) -> anyhow::Result<(String, String, u64)> {
    let (var, target) = spec.split_once('=').ok_or_else(|| anyhow!("--env {spec:?}: expected VAR=NAME[@VERSION]"))?;
    let (var, target) = (var.trim(), target.trim());
    let valid_var = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_var {
        bail!("--env {spec:?}: {var:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    let (name, version) = match target.rsplit_once('@') {
        Some((name, v)) => {
            let v: u64 = v.parse().map_err(|_| anyhow!("--env {spec:?}: version {v:?} is not a number"))?;
            if v == 0 {
                bail!("--env {spec:?}: versions start at 1");
            }
            (name, v)
        }
        None => (target, 0),
    };
    if name.is_empty() {
        bail!("--env {spec:?}: no secret name");
    }
    Ok((var.to_string(), name.to_string(), version))
}

/// The VAR=NAME[@VERSION] lines of an `--env-file` (blank lines and `#` comments skipped).
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read --env-file {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
}

/// `vaultctl run`: reads every secret in one linearizable batch, then replaces this process
/// with `command`, the secrets in its environment. Values stay in memory that is zeroized if
/// the exec fails; on success the process image, and they with it, is replaced.
async fn run_with_secrets(c: &Client, specs: &[String], command: &[String]) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let specs = specs.iter().map(|s| parse_env_spec(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let requests =
        specs.iter().map(|(_, name, version)| pb::GetSecretRequest { name: name.clone(), version: *version }).collect();
    let results =
        rpc!(c, Route::Read, secrets.batch_get_secrets, pb::BatchGetSecretsRequest { requests }).await?.results;
    if results.len() != specs.len() {
        return Err(Failure::status(
            Code::Internal,
            format!("asked for {} secrets, the server answered {}", specs.len(), results.len()),
        ));
    }
    let mut values: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = Vec::with_capacity(specs.len());
    for ((var, name, _), result) in specs.iter().zip(results) {
        match result.result {
            Some(pb::batch_get_result::Result::Secret(mut s)) => {
                let value = zeroize::Zeroizing::new(std::mem::take(&mut s.value));
                if value.contains(&0) {
                    return Err(Failure::Local(anyhow!(
                        "secret {name} holds a NUL byte and cannot be passed in the environment ({var})"
                    )));
                }
                values.push((var.clone(), value));
            }
            Some(pb::batch_get_result::Result::Error(e)) => {
                return Err(Failure::status(Code::from_i32(e.code), format!("{name}: {}", e.message)))
            }
            None => return Err(Failure::status(Code::Internal, format!("{name}: the server sent no result"))),
        }
    }
    let (program, args) = command.split_first().ok_or_else(|| anyhow!("run: no command after --"))?;
    let mut cmd = std::process::Command::new(program);
    // The program gets the secrets it was given, not vaultctl's own credentials.
    cmd.args(args).env_remove("VAULT_TOKEN").env_remove("VAULT_TOKEN_FILE");
    for (var, value) in &values {
        cmd.env(var, std::ffi::OsStr::from_bytes(value));
    }
    // Returns only if the exec failed.
    let err = cmd.exec();
    drop(values);
    Err(Failure::Local(anyhow!("run {program}: {err}")))
}
