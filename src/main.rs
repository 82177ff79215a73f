//! The `guardgate` command line: wiring only; the logic lives in the library.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use guardgate::config::Config;

// glibc malloc showed up at ~8% of proxy CPU in profiles (docs/BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use guardgate::classify::backends::ModelLoad;
use guardgate::proxy::{server, Gateway};

#[derive(Parser)]
#[command(
    name = "guardgate",
    version,
    about = "Policy-following safety gateway for LLM APIs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        #[arg(
            short,
            long,
            default_value = "config/guardgate.toml",
            env = "GUARDGATE_CONFIG"
        )]
        config: PathBuf,
        /// Take over the listeners of a running gateway (graceful upgrade; send it SIGQUIT).
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Validate the config and the policies it selects, then exit.
    CheckConfig {
        #[arg(
            short,
            long,
            default_value = "config/guardgate.toml",
            env = "GUARDGATE_CONFIG"
        )]
        config: PathBuf,
    },
    /// Policy authoring tools: lint, test, calibrate and replay.
    Policy {
        #[command(subcommand)]
        cmd: guardgate::eval::cli::PolicyCmd,
    },
    /// Run the general pack against an external labelled data set.
    Eval(guardgate::eval::cli::EvalArgs),
    /// The review store: labelled decisions into case files.
    Review {
        #[command(subcommand)]
        cmd: guardgate::review::cli::ReviewCmd,
    },
    /// Judge one text against policies and print the verdict, code and rationale
    /// (exit 0 allowed, 1 violation, 2 error).
    Classify(guardgate::eval::cli::ClassifyArgs),
    /// Policy profiles: tools for the profiles file.
    Profiles {
        #[command(subcommand)]
        cmd: ProfilesCmd,
    },
}

#[derive(Subcommand)]
enum ProfilesCmd {
    /// Read an API key from stdin and print its SHA-256 (hex), for `api_key_sha256` in the
    /// profiles file. One trailing newline is ignored.
    HashKey,
}

/// `profiles hash-key`: the key is read from stdin so it stays out of shell history and `ps`.
fn hash_key() -> ExitCode {
    use std::io::Read;
    let mut key = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut key) {
        eprintln!("guardgate: cannot read the key from stdin: {e}");
        return ExitCode::from(2);
    }
    let key = key
        .strip_suffix('\n')
        .map(|k| k.strip_suffix('\r').unwrap_or(k))
        .unwrap_or(&key);
    if key.is_empty() {
        eprintln!("guardgate: no key on stdin");
        return ExitCode::from(2);
    }
    println!("{}", guardgate::policy::profile::key_sha256_hex(key));
    ExitCode::SUCCESS
}

fn init_tracing(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Logs go to stderr so that an audit sink on stdout stays clean JSONL.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn load(config: &std::path::Path, models: ModelLoad) -> Result<Gateway, String> {
    let cfg = Config::load(config).map_err(|e| format!("config error: {e}"))?;
    Gateway::build_with(cfg, Vec::new(), models).map_err(|e| format!("{e:#}"))
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    guardgate::allocator::tune();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Policy { cmd } => ExitCode::from(match cmd {
            guardgate::eval::cli::PolicyCmd::Lint(a) => guardgate::eval::cli::lint(&a),
            guardgate::eval::cli::PolicyCmd::Test(a) => guardgate::eval::cli::test(&a),
            guardgate::eval::cli::PolicyCmd::Calibrate(a) => guardgate::eval::cli::calibrate(&a),
            guardgate::eval::cli::PolicyCmd::Replay(a) => guardgate::review::cli::replay(&a),
        }),
        Cmd::Review { cmd } => ExitCode::from(match cmd {
            guardgate::review::cli::ReviewCmd::Export(a) => guardgate::review::cli::export(&a),
        }),
        Cmd::Eval(a) => ExitCode::from(guardgate::eval::cli::eval(&a)),
        Cmd::Classify(a) => ExitCode::from(guardgate::eval::cli::classify(&a)),
        Cmd::Profiles {
            cmd: ProfilesCmd::HashKey,
        } => hash_key(),
        Cmd::Serve { config, upgrade } => {
            let level = Config::load(&config)
                .map(|c| (c.logging.json, c.logging.level))
                .unwrap_or((false, "info".into()));
            init_tracing(level.0, &level.1);
            #[cfg(feature = "mimalloc")]
            tracing::info!(
                purge_delay_ms = guardgate::allocator::purge_delay_ms(),
                "allocator: mimalloc (purge_delay_ms -1 keeps freed memory for reuse)"
            );
            match load(&config, ModelLoad::Load) {
                Ok(gw) => {
                    if let Err(e) = server::run(gw, upgrade) {
                        eprintln!("guardgate: {e:#}");
                        return ExitCode::from(1);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("guardgate: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::CheckConfig { config } => match load(&config, ModelLoad::CheckOnly) {
            Ok(gw) => {
                let snap = gw.registry.snapshot();
                println!(
                    "ok: {} routes, {} upstreams, {} policies",
                    gw.routes.len(),
                    gw.config.upstreams.len(),
                    snap.policies.len()
                );
                for (route, b) in &snap.routes {
                    let ids: Vec<&str> = b.input.iter().map(|x| x.policy.id.as_str()).collect();
                    println!("  route {route}: input policies [{}]", ids.join(", "));
                }
                for p in snap.profiles.iter().flat_map(|p| p.list.iter()) {
                    let ids: Vec<&str> = p
                        .binding
                        .input
                        .iter()
                        .map(|x| x.policy.id.as_str())
                        .collect();
                    println!("  profile {}: input policies [{}]", p.name, ids.join(", "));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("guardgate: {e}");
                ExitCode::from(2)
            }
        },
    }
}
