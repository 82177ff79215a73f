//! `guardgate review export` and `guardgate policy replay`: the review store from the command
//! line, found through the gateway's config (`[audit]`), as `serve` finds it.

use clap::{Args, Subcommand, ValueEnum};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::store::Store;
use crate::classify::backends::{self, BuildContext, ModelLoad};
use crate::config::Config;
use crate::eval::cases::{cases_path_for, load_cases};
use crate::policy::{parse_policy, Policy};

#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// Write labelled decisions of a policy as lines of its case file (deduplicated).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The policy id whose labelled decisions become cases.
    #[arg(long)]
    pub policy: String,
    /// The gateway config whose `[audit]` names the review store and whose policy directories
    /// hold the policy.
    #[arg(
        short,
        long,
        default_value = "config/guardgate.toml",
        env = "GUARDGATE_CONFIG"
    )]
    pub config: PathBuf,
    /// Append to this file instead of the policy's own `<name>.cases.jsonl`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the new lines instead of appending them.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate policy file.
    pub candidate: PathBuf,
    /// How far back to replay captured traffic (`24h`, `7d`, ...).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// The gateway config: its review store and its `[[backends]]`, the cascade the gateway runs.
    #[arg(
        short,
        long,
        default_value = "config/guardgate.toml",
        env = "GUARDGATE_CONFIG"
    )]
    pub config: PathBuf,
    /// Most recent captured decisions replayed at most.
    #[arg(long, default_value_t = super::replay::DEFAULT_LIMIT)]
    pub limit: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Decisions judged at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Per-decision deadline in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
    /// Flips printed (text format).
    #[arg(long, default_value_t = 25)]
    pub max_flips: usize,
}

fn open_store(config: &Path) -> Result<(Config, Store), String> {
    let cfg = Config::load(config).map_err(|e| format!("config error: {e}"))?;
    let loc = super::location(&cfg.audit, &cfg.base_dir)?;
    if let super::store::Location::Sqlite(p) = &loc {
        if !p.exists() {
            return Err(format!(
                "{}: no review store (is [audit] capture on in {}?)",
                p.display(),
                config.display()
            ));
        }
    }
    let store = Store::open(loc).map_err(|e| e.to_string())?;
    Ok((cfg, store))
}

/// The live policy file with `id` under the config's policy directories.
fn find_policy(cfg: &Config, id: &str) -> Result<Policy, String> {
    for f in crate::policy::discover::policy_files(&cfg.policy_dirs())? {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        if let Ok(p) = parse_policy(&f, &bytes) {
            if p.id == id && !p.candidate {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no policy {id:?} under the config's policy directories"
    ))
}

pub fn export(a: &ExportArgs) -> u8 {
    match try_export(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("guardgate: {e}");
            2
        }
    }
}

fn try_export(a: &ExportArgs) -> Result<(), String> {
    let (cfg, store) = open_store(&a.config)?;
    let path = match &a.out {
        Some(p) => p.clone(),
        None => cases_path_for(&find_policy(&cfg, &a.policy)?.path),
    };
    let existing = if path.exists() {
        load_cases(&path)?
    } else {
        Vec::new()
    };
    let rows = store.labelled(&a.policy).map_err(|e| e.to_string())?;
    let out = super::export::lines(&rows, &existing);
    let mut text = String::new();
    for c in &out.cases {
        text.push_str(&serde_json::to_string(c).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    if a.print {
        print!("{text}");
    } else if !out.cases.is_empty() {
        let old = std::fs::read(&path).unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // A file without a final newline would glue the first new case onto its last line.
        if old.last().is_some_and(|b| *b != b'\n') {
            text.insert(0, '\n');
        }
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "{} labelled decision(s) of {}: {} new case(s){}, {} already in {}, {} duplicate(s), {} conflicting label(s) (latest kept), {} without a truth or text",
        rows.len(),
        a.policy,
        out.cases.len(),
        if a.print { " printed" } else { " appended" },
        out.already_there,
        path.display(),
        out.duplicates,
        out.conflicts,
        out.skipped
    );
    Ok(())
}

pub fn replay(a: &ReplayArgs) -> u8 {
    match try_replay(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("guardgate: {e}");
            2
        }
    }
}

fn try_replay(a: &ReplayArgs) -> Result<(), String> {
    let window =
        humantime::parse_duration(&a.since).map_err(|e| format!("--since {:?}: {e}", a.since))?;
    let bytes =
        std::fs::read(&a.candidate).map_err(|e| format!("{}: {e}", a.candidate.display()))?;
    let candidate = parse_policy(&a.candidate, &bytes).map_err(|e| e.to_string())?;
    let (cfg, store) = open_store(&a.config)?;
    let since_ms = super::now_ms() - window.as_millis() as i64;
    let rows = store
        .captured(&candidate.id, since_ms, a.limit)
        .map_err(|e| e.to_string())?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let cx = BuildContext {
        base_dir: &cfg.base_dir,
        metrics: &metrics,
        load: ModelLoad::Load,
    };
    let cascade =
        backends::build_cascade(&cfg.backends.iter().collect::<Vec<_>>(), &cx, Vec::new())
            .map_err(|e| format!("{e:#}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let opts = super::replay::Options {
        concurrency: a.concurrency,
        timeout: Duration::from_millis(a.timeout_ms),
    };
    eprintln!(
        "replaying {} {} over {} captured decision(s) since {}",
        candidate.id,
        candidate.version,
        rows.len(),
        a.since
    );
    let report = rt.block_on(async {
        cascade.warm(&candidate).await;
        super::replay::run(&cascade, &candidate, rows, &opts, None).await
    });
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
        Format::Text => print!("{}", super::replay::render_text(&report, a.max_flips)),
    }
    Ok(())
}
