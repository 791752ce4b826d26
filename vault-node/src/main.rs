//! `vault-node`: one node of the vault cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use vault_node::config::RawConfig;
use vault_node::settings::SETTINGS;

/// mimalloc instead of glibc's malloc: allocation and freeing were a fifth of a leader's CPU
/// under write load (request and response buffers, futures, encoded entries), and glibc's
/// arenas also hold on to memory freed by other threads.
#[cfg(not(feature = "counting-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark builds (`--features counting-alloc`): the same allocator, counted for the
/// `vault_alloc_total` and `vault_alloc_bytes_total` metrics.
#[cfg(feature = "counting-alloc")]
#[global_allocator]
static ALLOC: vault_node::alloc_count::Counting<mimalloc::MiMalloc> =
    vault_node::alloc_count::Counting(mimalloc::MiMalloc);

/// `--version`: a build with the crash tests' fail points compiled in says so.
const VERSION: &str = if vault_raft::crash_points::COMPILED_IN {
    concat!(env!("CARGO_PKG_VERSION"), " +failpoints")
} else {
    env!("CARGO_PKG_VERSION")
};

/// Flags and environment variables, both made from the one list of settings: every setting is
/// `--<name>` and `VAULT_<NAME>` (and `<name>` in the `--config` file).
fn command() -> Command {
    let mut cmd = Command::new("vault-node")
        .version(VERSION)
        .about("One node of the Raft-replicated secrets vault.")
        .after_help("Each setting is a flag, an environment variable and a key of the --config file; flags win over the environment, the environment over the file.")
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file with settings (keys: the names below in lower case, without vault_)"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the settings in effect (secrets redacted) as a TOML file, check them, and exit"),
        );
    for s in SETTINGS {
        let help = match (s.secret, s.default) {
            (true, _) | (false, "") => s.help.to_string(),
            (false, d) => format!("{} [default: {d}]", s.help),
        };
        cmd =
            cmd.arg(Arg::new(s.env).long(s.flag()).env(s.env).value_name("VALUE").help(help).hide_env_values(s.secret));
    }
    cmd
}

/// Where a setting's value came from.
fn layered(matches: &ArgMatches) -> anyhow::Result<(RawConfig, BTreeMap<&'static str, &'static str>)> {
    let mut raw = RawConfig::default();
    let mut source = BTreeMap::new();
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        raw.merge_file(path)?;
        for s in SETTINGS {
            if raw.value(s.env).is_some() {
                source.insert(s.env, "file");
            }
        }
    }
    for s in SETTINGS {
        let from = match matches.value_source(s.env) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            _ => continue,
        };
        if let Some(v) = matches.get_one::<String>(s.env) {
            raw.set(s.env, v.clone());
            source.insert(s.env, from);
        }
    }
    Ok((raw, source))
}

/// The settings in effect as a TOML file, each with where it came from; secrets redacted.
fn print_config(raw: &RawConfig, source: &BTreeMap<&'static str, &'static str>) {
    println!("# vault-node {}: settings in effect (flag > environment > file > default)", env!("CARGO_PKG_VERSION"));
    for s in SETTINGS {
        let key = s.toml_key();
        match raw.value(s.env) {
            Some(_) if s.secret => println!("{key} = \"<redacted>\"  # {}", source.get(s.env).unwrap_or(&"set")),
            Some(v) => println!("{key} = {}  # {}", toml_string(v), source.get(s.env).unwrap_or(&"set")),
            None if s.default.is_empty() => println!("# {key}: not set"),
            None => println!("# {key}: default ({})", s.default),
        }
    }
}

/// `v` as a TOML string (quoted and escaped by the toml crate).
fn toml_string(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Environment variables that carry secrets besides the secret settings: an operator's CLI
/// token exported in the shell that started the node.
const OTHER_SECRETS: &[&str] = &["VAULT_TOKEN"];

fn main() -> std::process::ExitCode {
    let matches = command().get_matches();
    // The crash tests' fail points, from `FAILPOINTS`; armed until main returns.
    #[cfg(feature = "failpoints")]
    let _failpoints = vault_raft::crash_points::setup();
    // Read once; from here they live only in the validated config (zeroized key newtypes).
    // Before the runtime starts, while this is the only thread.
    vault_node::environ::scrub(
        SETTINGS.iter().filter(|s| s.secret).map(|s| s.env).chain(OTHER_SECRETS.iter().copied()),
    );
    let (raw, source) = match layered(&matches) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if matches.get_flag("print-config") {
        print_config(&raw, &source);
    }
    let config = match raw.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    if matches.get_flag("print-config") {
        return std::process::ExitCode::SUCCESS;
    }
    vault_node::logging::init(&config.log_filter, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vault_node::server::run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
