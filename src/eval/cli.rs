//! The `policy lint`, `policy test`, `eval` and `classify` subcommands (argument structs and
//! their bodies; `main.rs` only dispatches). Exit status: 0 ok; 1 lint errors (or warnings with
//! `--strict`), thresholds not met, or (classify) a violation; 2 bad usage or unreadable input.

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::calibrate::{self, Calibration};
use super::cases::{cases_path_for, find_cases_for, load_cases, Case};
use super::dataset;
use super::report::{self, PolicyReport, Report};
use super::runner::{build_cascade, run_policy, run_policy_joint, RunOptions};
use crate::policy::lint::{lint_paths, policy_files};
use crate::policy::{parse_policy, Policy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check policy files (structure, codes, output format, length, wording, rules).
    Lint(LintArgs),
    /// Run each policy's labelled cases through the classifier and report precision/recall.
    Test(TestArgs),
    /// Judge captured traffic with a candidate policy and report what would change.
    Replay(crate::review::cli::ReplayArgs),
    /// Choose each policy's violation_threshold for a backend on part of its case file, report
    /// the held-out rest (next to the rules alone), and with --write put the thresholds in the
    /// backend's `violation_thresholds`.
    Calibrate(CalibrateArgs),
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Policy files or directories (searched recursively for *.md, README.md skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args, Clone)]
pub struct BackendArgs {
    /// `rules` (deterministic rules only) or the name of a `[[backends]]` entry in --config,
    /// which runs after the rules.
    #[arg(long, default_value = "rules")]
    pub backend: String,
    /// Gateway config whose `[[backends]]` holds --backend.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Cases classified at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Per-case deadline in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Case file to use instead of `<stem>.cases.jsonl` (only with a single policy).
    #[arg(long)]
    pub cases: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Where report.json and report.html go.
    #[arg(long, default_value = "target/policy-report")]
    pub report_dir: PathBuf,
    /// An earlier report.json: print metric deltas and cases whose outcome flipped.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Failing cases printed per policy.
    #[arg(long, default_value_t = 25)]
    pub max_failures: usize,
    /// Judge every case against all the given policies in one model call (as a route with
    /// `model_call = "joint"`); a case is scored for the policy whose case file holds it, and
    /// the call's answers for the others are recorded in the report unscored.
    #[arg(long)]
    pub joint: bool,
    /// At most N cases per policy: half violating, half allowed, in file order.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Policy files or directories (each with its `<stem>.cases.jsonl`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Share of each label's cases held out to measure the chosen threshold on.
    #[arg(long, default_value_t = 0.5)]
    pub held_out: f64,
    /// Seed of the split (the same seed, the same split).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the thresholds into --config's `violation_thresholds` of --backend.
    #[arg(long)]
    pub write: bool,
    /// Where calibration.json (and report.json of every judged case) go.
    #[arg(long, default_value = "target/calibrate-report")]
    pub report_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Data set adapter: openai-moderation-2022.
    #[arg(long)]
    pub dataset: String,
    /// The data set file (gzip or plain JSONL).
    #[arg(long, default_value = dataset::OPENAI_MODERATION_2022_DEFAULT_PATH)]
    pub path: PathBuf,
    /// Directory holding the general pack's policies.
    #[arg(long, default_value = "policies/general")]
    pub policies: PathBuf,
    /// Use only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[arg(long, default_value = "target/eval-report")]
    pub report_dir: PathBuf,
    #[arg(long)]
    pub compare: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub max_failures: usize,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Policy file(s) to judge the text against.
    #[arg(long, required = true)]
    pub policy: Vec<PathBuf>,
    /// The text; without --text or --file it is read from stdin.
    #[arg(long, conflicts_with = "file")]
    pub text: Option<String>,
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn lint(a: &LintArgs) -> u8 {
    let s = match lint_paths(&a.paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    match a.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&s).expect("serialisable")
        ),
        Format::Text => {
            for d in &s.diagnostics {
                println!("{d}");
            }
            println!(
                "{} file(s): {} error(s), {} warning(s)",
                s.files, s.errors, s.warnings
            );
        }
    }
    if s.errors > 0 || (a.strict && s.warnings > 0) {
        1
    } else {
        0
    }
}

fn load_policies(paths: &[PathBuf]) -> Result<Vec<Policy>, String> {
    let mut out = Vec::new();
    for f in policy_files(paths)? {
        let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.push(parse_policy(&f, &bytes).map_err(|e| e.to_string())?);
    }
    // No policy judged nothing: `classify` would print nothing and exit 0, which reads as
    // "allowed".
    if out.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(format!("no policy file (*.md) in {}", names.join(", ")));
    }
    Ok(out)
}

fn progress(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:32}] {pos}/{len} {msg} (eta {eta})",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn finish(
    r: &Report,
    dir: &Path,
    compare: Option<&Path>,
    max_failures: usize,
) -> Result<(), String> {
    print!("{}", report::table(r));
    println!();
    for p in &r.policies {
        print!("{}", report::details(p, max_failures));
    }
    let (j, h) = super::html::write(r, dir)
        .map_err(|e| format!("{}: cannot write report: {e}", dir.display()))?;
    println!("\nreport: {} and {}", j.display(), h.display());
    if let Some(old) = compare {
        let old = Report::load(old)?;
        println!();
        print!("{}", report::compare(r, &old));
    }
    Ok(())
}

pub fn test(a: &TestArgs) -> u8 {
    let policies = match load_policies(&a.paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    if a.cases.is_some() && policies.len() != 1 {
        eprintln!(
            "guardgate: --cases needs exactly one policy (got {})",
            policies.len()
        );
        return 2;
    }
    let mut work: Vec<(Policy, PathBuf, Vec<Case>)> = Vec::new();
    for p in policies {
        let Some(cpath) = a.cases.clone().or_else(|| find_cases_for(&p.path)) else {
            eprintln!(
                "notice: {}: no case file {}, skipped",
                p.id,
                cases_path_for(&p.path).display()
            );
            continue;
        };
        match load_cases(&cpath) {
            // As the reload gate says: a case file without cases tests nothing.
            Ok(c) if c.is_empty() => {
                eprintln!("guardgate: {}: no cases", cpath.display());
                return 2;
            }
            Ok(c) => {
                let c = match a.limit {
                    Some(n) => super::runner::limit_cases(c, n),
                    None => c,
                };
                work.push((p, cpath, c))
            }
            Err(e) => {
                eprintln!("guardgate: {e}");
                return 2;
            }
        }
    }
    if work.is_empty() {
        eprintln!("guardgate: no policy with cases to test");
        return 2;
    }
    let (cascade, label) = match build_cascade(a.backend.config.as_deref(), &a.backend.backend) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("guardgate: {e:#}");
            return 2;
        }
    };
    let opts = RunOptions {
        concurrency: a.backend.concurrency,
        timeout: Duration::from_millis(a.backend.timeout_ms),
    };
    let total = work.iter().map(|w| w.2.len() as u64).sum();
    let mut rep = Report::new("policy-test", &label);
    let rt = runtime();
    let pb = progress(total);
    let all: Vec<&Policy> = work.iter().map(|w| &w.0).collect();
    if a.joint {
        rt.block_on(cascade.warm_joint(&all));
    }
    for (own, (p, cpath, cases)) in work.iter().enumerate() {
        pb.set_message(p.id.clone());
        let results = if a.joint {
            rt.block_on(run_policy_joint(
                &cascade,
                &all,
                own,
                cases,
                &opts,
                Some(&pb),
            ))
        } else {
            // One request with the policy first, so an in-process model caches the policy
            // prefix before the concurrent cases arrive (otherwise each of them would prefill it
            // cold).
            rt.block_on(cascade.warm(p));
            rt.block_on(run_policy(&cascade, p, cases, &opts, Some(&pb)))
        };
        rep.policies.push(PolicyReport::from_results(
            &p.id,
            Some(p),
            &cpath.display().to_string(),
            results,
        ));
    }
    pb.finish_and_clear();
    if let Err(e) = finish(&rep, &a.report_dir, a.compare.as_deref(), a.max_failures) {
        eprintln!("guardgate: {e}");
        return 2;
    }
    println!(
        "\ncost ({}):",
        if a.joint {
            format!("one call judges all {} policies", all.len())
        } else {
            "one call per policy".to_string()
        }
    );
    print!("{}", report::cost_table(&rep));
    let failed: Vec<&PolicyReport> = rep
        .policies
        .iter()
        .filter(|p| !p.threshold_failures.is_empty())
        .collect();
    if failed.is_empty() {
        0
    } else {
        for p in failed {
            eprintln!(
                "FAIL {}: thresholds not met: {}",
                p.id,
                p.threshold_failures.join("; ")
            );
        }
        1
    }
}

pub fn calibrate(a: &CalibrateArgs) -> u8 {
    if a.backend.backend == "rules" {
        eprintln!("guardgate: calibrate needs a model backend: --backend NAME --config FILE");
        return 2;
    }
    if !(a.held_out > 0.0 && a.held_out < 1.0) {
        eprintln!("guardgate: --held-out must be within (0, 1)");
        return 2;
    }
    let policies = match load_policies(&a.paths) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    let mut work: Vec<(Policy, PathBuf, Vec<Case>)> = Vec::new();
    for p in policies {
        let Some(cpath) = find_cases_for(&p.path) else {
            eprintln!("notice: {}: no case file, skipped", p.id);
            continue;
        };
        match load_cases(&cpath) {
            Ok(c) if !c.is_empty() => work.push((p, cpath, c)),
            Ok(_) => {
                eprintln!("guardgate: {}: no cases", cpath.display());
                return 2;
            }
            Err(e) => {
                eprintln!("guardgate: {e}");
                return 2;
            }
        }
    }
    if work.is_empty() {
        eprintln!("guardgate: no policy with cases to calibrate");
        return 2;
    }
    let (cascade, label) = match build_cascade(a.backend.config.as_deref(), &a.backend.backend) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("guardgate: {e:#}");
            return 2;
        }
    };
    let opts = RunOptions {
        concurrency: a.backend.concurrency,
        timeout: Duration::from_millis(a.backend.timeout_ms),
    };
    let total = work.iter().map(|w| w.2.len() as u64).sum();
    let mut rep = Report::new("policy-calibrate", &label);
    let mut cal = Calibration {
        backend: label.clone(),
        seed: a.seed,
        held_out_fraction: a.held_out,
        policies: Vec::new(),
    };
    let rt = runtime();
    let pb = progress(total);
    for (p, cpath, cases) in &work {
        pb.set_message(p.id.clone());
        rt.block_on(cascade.warm(p));
        let results = rt.block_on(run_policy(&cascade, p, cases, &opts, Some(&pb)));
        let cpath = cpath.display().to_string();
        cal.policies.push(calibrate::calibrate_policy(
            &p.id, &cpath, &results, a.seed, a.held_out,
        ));
        rep.policies
            .push(PolicyReport::from_results(&p.id, Some(p), &cpath, results));
    }
    pb.finish_and_clear();
    print!("{}", calibrate::table(&cal));
    let errors: u64 = rep.policies.iter().map(|p| p.errors).sum();
    if errors > 0 {
        println!("classifier errors: {errors} (scored against the classifier)");
    }
    let written = std::fs::create_dir_all(&a.report_dir)
        .and_then(|_| {
            std::fs::write(
                a.report_dir.join("calibration.json"),
                serde_json::to_vec_pretty(&cal).expect("serialisable"),
            )
        })
        .and_then(|_| super::html::write(&rep, &a.report_dir).map(|_| ()));
    if let Err(e) = written {
        eprintln!("guardgate: {}: cannot write: {e}", a.report_dir.display());
        return 2;
    }
    println!(
        "\nreport: {} (held-out numbers, split, thresholds) and report.json (every case)",
        a.report_dir.join("calibration.json").display()
    );
    if a.write {
        let Some(cfg) = a.backend.config.as_deref() else {
            eprintln!("guardgate: --write needs --config");
            return 2;
        };
        let new: std::collections::BTreeMap<String, f32> = cal
            .policies
            .iter()
            .filter_map(|p| p.threshold.map(|t| (p.id.clone(), t)))
            .collect();
        let res = std::fs::read_to_string(cfg)
            .map_err(|e| e.to_string())
            .and_then(|t| calibrate::set_violation_thresholds(&t, &a.backend.backend, &new))
            .and_then(|t| {
                // Checked before it replaces the file: a config that no longer loads would stop
                // the next start.
                let tmp = cfg.with_extension("toml.calibrated");
                std::fs::write(&tmp, &t).map_err(|e| e.to_string())?;
                let ok = crate::config::Config::load(&tmp).map(|_| ());
                let res = match ok {
                    Ok(()) => std::fs::rename(&tmp, cfg).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("the edited config does not load: {e}")),
                };
                let _ = std::fs::remove_file(&tmp);
                res
            });
        match res {
            Ok(()) => println!(
                "wrote {} threshold(s) into {} ([[backends]] {}: violation_thresholds)",
                new.len(),
                cfg.display(),
                a.backend.backend
            ),
            Err(e) => {
                eprintln!("guardgate: {}: {e}", cfg.display());
                return 2;
            }
        }
    }
    0
}

pub fn eval(a: &EvalArgs) -> u8 {
    if a.dataset != dataset::OPENAI_MODERATION_2022_NAME {
        eprintln!(
            "guardgate: unknown dataset {:?} (known: {})",
            a.dataset,
            dataset::OPENAI_MODERATION_2022_NAME
        );
        return 2;
    }
    if !a.path.exists() {
        eprintln!(
            "guardgate: {} not found: pass --path to the data set's samples-1680.jsonl.gz",
            a.path.display()
        );
        return 2;
    }
    let samples = match dataset::load_openai_moderation(&a.path, a.limit) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    let policies = match load_policies(std::slice::from_ref(&a.policies)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    let mut work = Vec::new();
    for (id, cats) in dataset::OPENAI_MODERATION_2022 {
        let Some(p) = policies.iter().find(|p| p.id == *id) else {
            eprintln!(
                "guardgate: policy {id} not found under {}",
                a.policies.display()
            );
            return 2;
        };
        work.push((p, *cats, dataset::cases_for(&samples, cats)));
    }
    let (cascade, label) = match build_cascade(a.backend.config.as_deref(), &a.backend.backend) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("guardgate: {e:#}");
            return 2;
        }
    };
    println!(
        "{}: {} samples from {}; mapping: {}",
        a.dataset,
        samples.len(),
        a.path.display(),
        dataset::OPENAI_MODERATION_2022
            .iter()
            .map(|(p, c)| format!("{} -> {p}", c.join("+")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let opts = RunOptions {
        concurrency: a.backend.concurrency,
        timeout: Duration::from_millis(a.backend.timeout_ms),
    };
    let total = work.iter().map(|w| w.2.len() as u64).sum();
    let mut rep = Report::new(&format!("eval:{}", a.dataset), &label);
    let rt = runtime();
    let pb = progress(total);
    for (p, cats, cases) in &work {
        pb.set_message(p.id.clone());
        // One request with the policy first, so an in-process model caches the policy prefix
        // before the concurrent cases arrive (otherwise each of them would prefill it cold).
        rt.block_on(cascade.warm(p));
        let results = rt.block_on(run_policy(&cascade, p, cases, &opts, Some(&pb)));
        rep.policies.push(PolicyReport::from_results(
            &p.id,
            Some(p),
            &format!("{}#{}", a.path.display(), cats.join("+")),
            results,
        ));
    }
    pb.finish_and_clear();
    rep.summary = dataset::combined_rows(&samples, &rep.policies);
    // Thresholds belong to the policies' own case files, not to an external data set.
    for p in &mut rep.policies {
        p.threshold_failures.clear();
    }
    match finish(&rep, &a.report_dir, a.compare.as_deref(), a.max_failures) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("guardgate: {e}");
            2
        }
    }
}

pub fn classify(a: &ClassifyArgs) -> u8 {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("guardgate: {}: {e}", f.display());
                return 2;
            }
        },
        (None, None) => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                eprintln!("guardgate: stdin: {e}");
                return 2;
            }
            s
        }
    };
    let policies = match load_policies(&a.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("guardgate: {e}");
            return 2;
        }
    };
    let (cascade, _) = match build_cascade(a.backend.config.as_deref(), &a.backend.backend) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("guardgate: {e:#}");
            return 2;
        }
    };
    let case = Case::text("input", text, false);
    let content = case.content();
    let rt = runtime();
    let mut any_violation = false;
    let mut any_error = false;
    let mut json = Vec::new();
    for p in &policies {
        let started = Instant::now();
        let deadline = Instant::now() + Duration::from_millis(a.backend.timeout_ms);
        let res = rt.block_on(cascade.classify(p, &content, deadline));
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match res {
            Ok(v) => {
                any_violation |= v.violation;
                if a.format == Format::Json {
                    json.push(serde_json::json!({"policy": p.id, "version": p.version, "verdict": v, "latency_ms": ms}));
                } else {
                    println!(
                        "{}: {}{} (backend {}{}, {ms:.2} ms)",
                        p.id,
                        if v.violation { "VIOLATION" } else { "allow" },
                        v.code
                            .as_deref()
                            .map(|c| format!(" {c}"))
                            .unwrap_or_default(),
                        v.backend,
                        v.rule_id
                            .as_deref()
                            .map(|r| format!(", rule {r}"))
                            .unwrap_or_default()
                    );
                    if let Some(c) = v.confidence {
                        println!("  confidence: {c:.3}");
                    }
                    if let Some(r) = &v.rationale {
                        println!("  rationale: {r}");
                    }
                }
            }
            Err(e) => {
                any_error = true;
                if a.format == Format::Json {
                    json.push(serde_json::json!({"policy": p.id, "error": e.to_string(), "latency_ms": ms}));
                } else {
                    println!("{}: ERROR {e}", p.id);
                }
            }
        }
    }
    if a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&json).expect("json"));
    }
    if any_error {
        2
    } else if any_violation {
        1
    } else {
        0
    }
}
