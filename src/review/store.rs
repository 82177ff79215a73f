//! The review store: decisions with their captured text, labels, and the policy texts they were
//! judged against. One schema and one set of queries for both databases; `sqlite` and `postgres`
//! only run SQL (the [`Db`] trait). Queries are written with `$n` parameters, PostgreSQL's
//! spelling, which the SQLite side turns into `?n`.
//!
//! The queue is paged by key (`id < cursor`, newest first) over indexes that start with the
//! filtered columns and end with `id` (one per filter, and for a policy with its verdict or
//! effect, the combinations a reviewer uses most), so a page costs the same on the millionth
//! record as on the first.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Mutex;

use super::capture::Segment;

pub use super::db::{Db, Dialect, Result, StoreError, Value};

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    pub fn open(&self) -> Result<Box<dyn Db>> {
        let mut db: Box<dyn Db> = match self {
            Location::Sqlite(p) => Box::new(super::sqlite::Sqlite::open(p)?),
            Location::Postgres(url) => Box::new(super::postgres::Postgres::connect(url)?),
        };
        migrate(db.as_mut())?;
        Ok(db)
    }

    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(p) => format!("sqlite:{}", p.display()),
            // Never the URL: it may carry a password.
            Location::Postgres(_) => "postgresql".into(),
        }
    }
}

const SCHEMA_VERSION: i64 = 1;

fn schema(d: Dialect) -> String {
    let id = match d {
        Dialect::Sqlite => "id INTEGER PRIMARY KEY",
        Dialect::Postgres => "id BIGSERIAL PRIMARY KEY",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
  {id},
  ts_ms BIGINT NOT NULL,
  request_id TEXT NOT NULL,
  route TEXT NOT NULL,
  api TEXT NOT NULL,
  direction TEXT NOT NULL,
  policy_id TEXT NOT NULL,
  policy_version TEXT NOT NULL,
  policy_hash TEXT NOT NULL,
  verdict TEXT NOT NULL,
  effect TEXT NOT NULL,
  action TEXT NOT NULL,
  code TEXT,
  rule_id TEXT,
  severity TEXT,
  backend TEXT,
  confidence DOUBLE PRECISION,
  rationale TEXT,
  error TEXT,
  location TEXT,
  model TEXT,
  prompt_tokens BIGINT,
  completion_tokens BIGINT,
  latency_us BIGINT NOT NULL,
  candidate_version TEXT,
  candidate_verdict TEXT,
  candidate_code TEXT,
  disagree BIGINT,
  capture_key TEXT,
  preview TEXT,
  label TEXT,
  label_note TEXT,
  labelled_at BIGINT
);
CREATE INDEX IF NOT EXISTS decisions_policy ON decisions (policy_id, id);
CREATE INDEX IF NOT EXISTS decisions_version ON decisions (policy_id, policy_version, id);
CREATE INDEX IF NOT EXISTS decisions_policy_verdict ON decisions (policy_id, verdict, id);
CREATE INDEX IF NOT EXISTS decisions_policy_effect ON decisions (policy_id, effect, id);
CREATE INDEX IF NOT EXISTS decisions_verdict ON decisions (verdict, id);
CREATE INDEX IF NOT EXISTS decisions_effect ON decisions (effect, id);
CREATE INDEX IF NOT EXISTS decisions_code ON decisions (code, id);
CREATE INDEX IF NOT EXISTS decisions_backend ON decisions (backend, id);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts_ms);
CREATE INDEX IF NOT EXISTS decisions_request ON decisions (request_id);
CREATE INDEX IF NOT EXISTS decisions_unreviewed ON decisions (id) WHERE label IS NULL;
CREATE INDEX IF NOT EXISTS decisions_labelled ON decisions (policy_id, id) WHERE label IS NOT NULL;
CREATE INDEX IF NOT EXISTS decisions_label ON decisions (label, id) WHERE label IS NOT NULL;
CREATE INDEX IF NOT EXISTS decisions_disagree ON decisions (id) WHERE disagree = 1;
CREATE TABLE IF NOT EXISTS captures (
  key TEXT PRIMARY KEY,
  ts_ms BIGINT NOT NULL,
  segments TEXT NOT NULL,
  chars BIGINT NOT NULL,
  truncated BIGINT NOT NULL,
  masked BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS captures_ts ON captures (ts_ms);
CREATE TABLE IF NOT EXISTS policy_texts (
  hash TEXT PRIMARY KEY,
  policy_id TEXT NOT NULL,
  version TEXT NOT NULL,
  path TEXT NOT NULL,
  text TEXT NOT NULL,
  exact BIGINT NOT NULL,
  ts_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS facets (
  kind TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (kind, value)
);"
    )
}

/// Creates the tables on a new database; refuses one written by a newer schema.
fn migrate(db: &mut dyn Db) -> Result<()> {
    let ddl = schema(db.dialect());
    if db.dialect() == Dialect::Postgres {
        // Replicas starting together would race to create the same tables.
        db.batch("SELECT pg_advisory_lock(72657669657701)")?;
    }
    let r = db.batch(&ddl).and_then(|()| {
        let have = db.query(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            &[],
        )?;
        match have.first().and_then(|r| r[0].text()) {
            None => db
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO NOTHING",
                    &[Value::Text(SCHEMA_VERSION.to_string())],
                )
                .map(|_| ()),
            Some(v) if v.parse::<i64>().unwrap_or(i64::MAX) > SCHEMA_VERSION => Err(StoreError(
                format!("the database has schema version {v}, newer than this build's {SCHEMA_VERSION}"),
            )),
            Some(_) => Ok(()),
        }
    });
    if db.dialect() == Dialect::Postgres {
        db.batch("SELECT pg_advisory_unlock(72657669657701)")?;
    }
    r
}

/// A decision as the writer stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewDecision {
    pub ts_ms: i64,
    pub request_id: String,
    pub route: String,
    pub api: String,
    pub direction: String,
    pub policy_id: String,
    pub policy_version: String,
    pub policy_hash: String,
    pub verdict: String,
    pub effect: String,
    pub action: String,
    pub code: Option<String>,
    pub rule_id: Option<String>,
    pub severity: Option<String>,
    pub backend: Option<String>,
    pub confidence: Option<f32>,
    pub rationale: Option<String>,
    pub error: Option<String>,
    pub location: Option<String>,
    pub model: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub latency_us: u64,
    pub candidate_version: Option<String>,
    pub candidate_verdict: Option<String>,
    pub candidate_code: Option<String>,
    pub disagree: Option<bool>,
    pub capture_key: Option<String>,
    pub preview: Option<String>,
}

/// Captured text as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCapture {
    pub key: String,
    pub ts_ms: i64,
    pub segments: Vec<Segment>,
    pub chars: usize,
    pub truncated: bool,
    pub masked: u32,
}

/// A policy file's text at one version (by content hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyText {
    pub hash: String,
    pub policy_id: String,
    pub version: String,
    pub path: String,
    pub text: String,
    /// False when the file had changed before it was read: `text` is then the policy body the
    /// classifier read, without its front matter.
    pub exact: bool,
    pub ts_ms: i64,
}

/// A reviewer's judgement of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Correct,
    FalsePositive,
    FalseNegative,
}

impl Label {
    pub const ALL: [Label; 3] = [Label::Correct, Label::FalsePositive, Label::FalseNegative];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Correct => "correct",
            Label::FalsePositive => "false_positive",
            Label::FalseNegative => "false_negative",
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        Label::ALL.into_iter().find(|l| l.as_str() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            Label::Correct => "correct",
            Label::FalsePositive => "false positive",
            Label::FalseNegative => "false negative",
        }
    }

    /// The truth this label states about a decision whose verdict was `verdict`: `Some(true)`
    /// for "this is a violation". `None` where the label cannot apply (a false positive of an
    /// allow, a false negative of a violation, anything about an error).
    pub fn truth(self, verdict: &str) -> Option<bool> {
        match (verdict, self) {
            ("violation", Label::Correct) => Some(true),
            ("violation", Label::FalsePositive) => Some(false),
            ("allow", Label::Correct) => Some(false),
            ("allow", Label::FalseNegative) => Some(true),
            _ => None,
        }
    }
}

/// A stored decision (a queue row, or the head of the detail view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub id: i64,
    pub ts_ms: i64,
    pub request_id: String,
    pub route: String,
    pub api: String,
    pub direction: String,
    pub policy_id: String,
    pub policy_version: String,
    pub policy_hash: String,
    pub verdict: String,
    pub effect: String,
    pub action: String,
    pub code: Option<String>,
    pub rule_id: Option<String>,
    pub severity: Option<String>,
    pub backend: Option<String>,
    pub confidence: Option<f64>,
    pub rationale: Option<String>,
    pub error: Option<String>,
    pub location: Option<String>,
    pub model: Option<String>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub latency_us: i64,
    pub candidate_version: Option<String>,
    pub candidate_verdict: Option<String>,
    pub candidate_code: Option<String>,
    pub disagree: Option<bool>,
    pub capture_key: Option<String>,
    pub preview: Option<String>,
    pub label: Option<Label>,
    pub label_note: Option<String>,
    pub labelled_at: Option<i64>,
}

const DECISION_COLS: &str = "id, ts_ms, request_id, route, api, direction, policy_id, policy_version, policy_hash, verdict, effect, action, code, rule_id, severity, backend, confidence, rationale, error, location, model, prompt_tokens, completion_tokens, latency_us, candidate_version, candidate_verdict, candidate_code, disagree, capture_key, preview, label, label_note, labelled_at";

impl Decision {
    fn from_row(r: &[Value]) -> Decision {
        let t = |i: usize| r[i].text();
        let s = |i: usize| r[i].text().unwrap_or_default();
        let n = |i: usize| r[i].int();
        Decision {
            id: n(0).unwrap_or(0),
            ts_ms: n(1).unwrap_or(0),
            request_id: s(2),
            route: s(3),
            api: s(4),
            direction: s(5),
            policy_id: s(6),
            policy_version: s(7),
            policy_hash: s(8),
            verdict: s(9),
            effect: s(10),
            action: s(11),
            code: t(12),
            rule_id: t(13),
            severity: t(14),
            backend: t(15),
            confidence: r[16].real(),
            rationale: t(17),
            error: t(18),
            location: t(19),
            model: t(20),
            prompt_tokens: n(21),
            completion_tokens: n(22),
            latency_us: n(23).unwrap_or(0),
            candidate_version: t(24),
            candidate_verdict: t(25),
            candidate_code: t(26),
            disagree: n(27).map(|d| d != 0),
            capture_key: t(28),
            preview: t(29),
            label: t(30).as_deref().and_then(Label::parse),
            label_note: t(31),
            labelled_at: n(32),
        }
    }
}

/// Captured text as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Captured {
    pub segments: Vec<Segment>,
    pub chars: i64,
    pub truncated: bool,
    pub masked: i64,
}

/// A decision with its captured text (`None`: not captured, or purged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    pub decision: Decision,
    pub capture: Option<Captured>,
}

/// Which labels the queue shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelFilter {
    #[default]
    Any,
    Unreviewed,
    Reviewed,
    Is(Label),
}

/// The queue's filters; empty fields filter nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub policy: Option<String>,
    pub version: Option<String>,
    pub effect: Option<String>,
    pub verdict: Option<String>,
    pub code: Option<String>,
    pub backend: Option<String>,
    pub route: Option<String>,
    pub direction: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub disagree: bool,
    pub label: LabelFilter,
}

impl Filter {
    /// `WHERE` conditions (joined with AND; "1=1" when none) and their parameters, numbered from
    /// `$1`.
    fn conditions(&self, params: &mut Vec<Value>) -> String {
        let mut conds: Vec<String> = Vec::new();
        let mut eq = |col: &str, v: &Option<String>, params: &mut Vec<Value>| {
            if let Some(v) = v {
                params.push(Value::Text(v.clone()));
                conds.push(format!("{col} = ${}", params.len()));
            }
        };
        eq("policy_id", &self.policy, params);
        eq("policy_version", &self.version, params);
        eq("effect", &self.effect, params);
        eq("verdict", &self.verdict, params);
        eq("code", &self.code, params);
        eq("backend", &self.backend, params);
        eq("route", &self.route, params);
        eq("direction", &self.direction, params);
        if let Some(s) = self.since_ms {
            params.push(Value::Int(s));
            conds.push(format!("ts_ms >= ${}", params.len()));
        }
        if let Some(u) = self.until_ms {
            params.push(Value::Int(u));
            conds.push(format!("ts_ms < ${}", params.len()));
        }
        if self.disagree {
            conds.push("disagree = 1".into());
        }
        match self.label {
            LabelFilter::Any => {}
            LabelFilter::Unreviewed => conds.push("label IS NULL".into()),
            LabelFilter::Reviewed => conds.push("label IS NOT NULL".into()),
            LabelFilter::Is(l) => {
                params.push(Value::Text(l.as_str().into()));
                conds.push(format!("label = ${}", params.len()));
            }
        }
        if conds.is_empty() {
            "1=1".into()
        } else {
            conds.join(" AND ")
        }
    }
}

/// One page of the queue, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub rows: Vec<Decision>,
    /// The cursor of the next (older) page, if there is one.
    pub next: Option<i64>,
    /// Matching decisions, counted up to [`COUNT_CAP`] (`None` past it).
    pub total: Option<u64>,
}

/// Beyond this many matches the queue says "more than" instead of counting them all.
pub const COUNT_CAP: u64 = 10_000;

/// The values each filter can take, for the filter bar's menus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facets {
    pub by_kind: std::collections::BTreeMap<String, Vec<String>>,
}

impl Facets {
    pub fn of(&self, kind: &str) -> &[String] {
        self.by_kind.get(kind).map_or(&[], Vec::as_slice)
    }
}

/// The kinds of facets the writer keeps.
pub const FACET_KINDS: [&str; 6] = ["policy", "version", "effect", "code", "backend", "route"];

/// A pool of one connection for reads and labels (the writer has its own), reopened when it
/// breaks.
pub struct Store {
    location: Location,
    reader: Mutex<Option<Box<dyn Db>>>,
}

impl Store {
    /// Opens (and if new, creates) the store.
    pub fn open(location: Location) -> Result<Store> {
        let db = location.open()?;
        Ok(Store {
            location,
            reader: Mutex::new(Some(db)),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs `f` on the read connection. Blocking: async callers go through `spawn_blocking`.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| StoreError("reader lock poisoned".into()))?;
        if guard.as_ref().is_none_or(|db| db.is_broken()) {
            *guard = Some(self.location.open()?);
        }
        let db = guard.as_mut().expect("opened above");
        f(db.as_mut())
    }

    pub fn page(&self, f: &Filter, before: Option<i64>, limit: usize) -> Result<Page> {
        self.with(|db| page(db, f, before, limit))
    }

    pub fn detail(&self, id: i64) -> Result<Option<Detail>> {
        self.with(|db| detail(db, id))
    }

    /// The decision after `id` in the queue's order (older), and the one before it (newer).
    pub fn neighbours(&self, f: &Filter, id: i64) -> Result<(Option<i64>, Option<i64>)> {
        self.with(|db| {
            let mut p = Vec::new();
            let w = f.conditions(&mut p);
            p.push(Value::Int(id));
            let older = db.query(
                &format!(
                    "SELECT id FROM decisions WHERE {w} AND id < ${} ORDER BY id DESC LIMIT 1",
                    p.len()
                ),
                &p,
            )?;
            let newer = db.query(
                &format!(
                    "SELECT id FROM decisions WHERE {w} AND id > ${} ORDER BY id ASC LIMIT 1",
                    p.len()
                ),
                &p,
            )?;
            let first = |rows: Vec<Vec<Value>>| rows.first().and_then(|r| r[0].int());
            Ok((first(older), first(newer)))
        })
    }

    /// The other decisions made on the same request.
    pub fn same_request(&self, request_id: &str) -> Result<Vec<Decision>> {
        self.with(|db| {
            let rows = db.query(
                &format!("SELECT {DECISION_COLS} FROM decisions WHERE request_id = $1 ORDER BY id LIMIT 200"),
                &[Value::Text(request_id.into())],
            )?;
            Ok(rows.iter().map(|r| Decision::from_row(r)).collect())
        })
    }

    /// Sets (or with `None` clears) a decision's label. False when there is no such decision.
    pub fn label(
        &self,
        id: i64,
        label: Option<Label>,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        self.with(|db| {
            let n = db.execute(
                "UPDATE decisions SET label = $1, label_note = $2, labelled_at = $3 WHERE id = $4",
                &[
                    label.map(|l| l.as_str()).into(),
                    note.filter(|n| !n.trim().is_empty()).into(),
                    label.map(|_| now_ms).into(),
                    Value::Int(id),
                ],
            )?;
            Ok(n > 0)
        })
    }

    pub fn policy_text(&self, hash: &str) -> Result<Option<PolicyText>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT hash, policy_id, version, path, text, exact, ts_ms FROM policy_texts WHERE hash = $1",
                &[Value::Text(hash.into())],
            )?;
            Ok(rows.first().map(|r| PolicyText {
                hash: r[0].text().unwrap_or_default(),
                policy_id: r[1].text().unwrap_or_default(),
                version: r[2].text().unwrap_or_default(),
                path: r[3].text().unwrap_or_default(),
                text: r[4].text().unwrap_or_default(),
                exact: r[5].int() == Some(1),
                ts_ms: r[6].int().unwrap_or(0),
            }))
        })
    }

    pub fn facets(&self) -> Result<Facets> {
        self.with(|db| {
            let mut f = Facets::default();
            for r in db.query("SELECT kind, value FROM facets ORDER BY kind, value", &[])? {
                if let (Some(k), Some(v)) = (r[0].text(), r[1].text()) {
                    f.by_kind.entry(k).or_default().push(v);
                }
            }
            Ok(f)
        })
    }

    /// Labelled decisions of `policy` that still have their text, oldest first (export).
    pub fn labelled(&self, policy: &str) -> Result<Vec<Detail>> {
        self.with(|db| {
            with_text(
                db,
                "d.policy_id = $1 AND d.label IS NOT NULL ORDER BY d.id ASC",
                &[Value::Text(policy.into())],
            )
        })
    }

    /// Decisions of `policy` since `since_ms` that have their text, newest first, one per
    /// captured content, at most `limit` (replay).
    pub fn captured(&self, policy: &str, since_ms: i64, limit: usize) -> Result<Vec<Detail>> {
        self.with(|db| {
            with_text(
                db,
                &format!("d.policy_id = $1 AND d.ts_ms >= $2 ORDER BY d.id DESC LIMIT {limit}"),
                &[Value::Text(policy.into()), Value::Int(since_ms)],
            )
        })
    }

    /// Deletes captured text older than `before_ms` (the decisions and their labels stay, without
    /// text). Returns how many captures went.
    pub fn purge(&self, before_ms: i64) -> Result<u64> {
        self.with(|db| {
            db.batch("BEGIN")?;
            let r = (|| {
                let n = db.execute(
                    "DELETE FROM captures WHERE ts_ms < $1",
                    &[Value::Int(before_ms)],
                )?;
                db.execute(
                    "UPDATE decisions SET preview = NULL WHERE ts_ms < $1 AND preview IS NOT NULL",
                    &[Value::Int(before_ms)],
                )?;
                Ok(n)
            })();
            finish(db, r)
        })
    }

    /// Writes decisions, captures, facets and policy texts in one transaction (the writer's
    /// batch; tests and the benchmark call it directly).
    pub fn write(&self, w: &WriteBatch) -> Result<()> {
        self.with(|db| write(db, w))
    }
}

/// What the writer stores in one transaction.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub captures: Vec<NewCapture>,
    pub decisions: Vec<NewDecision>,
    /// (kind, value) pairs not known to be stored yet.
    pub facets: Vec<(String, String)>,
    pub policies: Vec<PolicyText>,
}

fn finish<T>(db: &mut dyn Db, r: Result<T>) -> Result<T> {
    match r {
        Ok(v) => {
            db.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = db.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Rows per multi-row INSERT: fewer round trips to PostgreSQL, well under either database's
/// parameter limit (29 columns x 64).
const ROWS_PER_INSERT: usize = 64;

pub fn write(db: &mut dyn Db, w: &WriteBatch) -> Result<()> {
    db.batch("BEGIN")?;
    let r = (|| {
        for chunk in w.captures.chunks(ROWS_PER_INSERT) {
            let mut p = Vec::with_capacity(chunk.len() * 6);
            for c in chunk {
                p.push(Value::Text(c.key.clone()));
                p.push(Value::Int(c.ts_ms));
                p.push(Value::Text(
                    serde_json::to_string(&c.segments).map_err(|e| StoreError(e.to_string()))?,
                ));
                p.push(Value::Int(c.chars as i64));
                p.push(Value::Int(c.truncated as i64));
                p.push(Value::Int(c.masked as i64));
            }
            db.execute(
                &format!(
                    "INSERT INTO captures (key, ts_ms, segments, chars, truncated, masked) VALUES {} ON CONFLICT (key) DO NOTHING",
                    placeholders(chunk.len(), 6)
                ),
                &p,
            )?;
        }
        for chunk in w.decisions.chunks(ROWS_PER_INSERT) {
            let mut p = Vec::with_capacity(chunk.len() * 29);
            for d in chunk {
                p.extend(decision_values(d));
            }
            db.execute(
                &format!(
                    "INSERT INTO decisions (ts_ms, request_id, route, api, direction, policy_id, policy_version, policy_hash, verdict, effect, action, code, rule_id, severity, backend, confidence, rationale, error, location, model, prompt_tokens, completion_tokens, latency_us, candidate_version, candidate_verdict, candidate_code, disagree, capture_key, preview) VALUES {}",
                    placeholders(chunk.len(), 29)
                ),
                &p,
            )?;
        }
        for (kind, value) in &w.facets {
            db.execute(
                "INSERT INTO facets (kind, value) VALUES ($1, $2) ON CONFLICT (kind, value) DO NOTHING",
                &[Value::Text(kind.clone()), Value::Text(value.clone())],
            )?;
        }
        for t in &w.policies {
            db.execute(
                "INSERT INTO policy_texts (hash, policy_id, version, path, text, exact, ts_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING",
                &[
                    Value::Text(t.hash.clone()),
                    Value::Text(t.policy_id.clone()),
                    Value::Text(t.version.clone()),
                    Value::Text(t.path.clone()),
                    Value::Text(t.text.clone()),
                    Value::Int(t.exact as i64),
                    Value::Int(t.ts_ms),
                ],
            )?;
        }
        Ok(())
    })();
    finish(db, r)
}

fn decision_values(d: &NewDecision) -> [Value; 29] {
    let t = |s: &Option<String>| Value::from(s.clone());
    let n = |v: Option<u32>| v.map_or(Value::Null, |v| Value::Int(v as i64));
    [
        Value::Int(d.ts_ms),
        d.request_id.as_str().into(),
        d.route.as_str().into(),
        d.api.as_str().into(),
        d.direction.as_str().into(),
        d.policy_id.as_str().into(),
        d.policy_version.as_str().into(),
        d.policy_hash.as_str().into(),
        d.verdict.as_str().into(),
        d.effect.as_str().into(),
        d.action.as_str().into(),
        t(&d.code),
        t(&d.rule_id),
        t(&d.severity),
        t(&d.backend),
        d.confidence.map_or(Value::Null, |c| Value::Real(c as f64)),
        t(&d.rationale),
        t(&d.error),
        t(&d.location),
        t(&d.model),
        n(d.prompt_tokens),
        n(d.completion_tokens),
        Value::Int(d.latency_us as i64),
        t(&d.candidate_version),
        t(&d.candidate_verdict),
        t(&d.candidate_code),
        d.disagree.map_or(Value::Null, |b| Value::Int(b as i64)),
        t(&d.capture_key),
        t(&d.preview),
    ]
}

/// `($1, $2), ($3, $4)` for 2 rows of 2 columns.
fn placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

fn page(db: &mut dyn Db, f: &Filter, before: Option<i64>, limit: usize) -> Result<Page> {
    let mut p = Vec::new();
    let w = f.conditions(&mut p);
    let total = {
        let rows = db.query(
            &format!(
                "SELECT count(*) FROM (SELECT 1 FROM decisions WHERE {w} LIMIT {}) t",
                COUNT_CAP + 1
            ),
            &p,
        )?;
        let n = rows.first().and_then(|r| r[0].int()).unwrap_or(0) as u64;
        (n <= COUNT_CAP).then_some(n)
    };
    let mut cond = w;
    if let Some(b) = before {
        p.push(Value::Int(b));
        cond = format!("{cond} AND id < ${}", p.len());
    }
    let rows = db.query(
        &format!(
            "SELECT {DECISION_COLS} FROM decisions WHERE {cond} ORDER BY id DESC LIMIT {}",
            limit + 1
        ),
        &p,
    )?;
    let mut rows: Vec<Decision> = rows.iter().map(|r| Decision::from_row(r)).collect();
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Page { rows, next, total })
}

fn captured(db: &mut dyn Db, key: &str) -> Result<Option<Captured>> {
    let rows = db.query(
        "SELECT segments, chars, truncated, masked FROM captures WHERE key = $1",
        &[Value::Text(key.into())],
    )?;
    Ok(rows.first().map(|r| Captured {
        segments: r[0]
            .text()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        chars: r[1].int().unwrap_or(0),
        truncated: r[2].int() == Some(1),
        masked: r[3].int().unwrap_or(0),
    }))
}

fn detail(db: &mut dyn Db, id: i64) -> Result<Option<Detail>> {
    let rows = db.query(
        &format!("SELECT {DECISION_COLS} FROM decisions WHERE id = $1"),
        &[Value::Int(id)],
    )?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let decision = Decision::from_row(r);
    let capture = match &decision.capture_key {
        Some(k) => captured(db, k)?,
        None => None,
    };
    Ok(Some(Detail { decision, capture }))
}

/// Decisions joined with their captured text, where `tail` continues the `WHERE` clause.
fn with_text(db: &mut dyn Db, tail: &str, params: &[Value]) -> Result<Vec<Detail>> {
    let cols: String = DECISION_COLS
        .split(", ")
        .map(|c| format!("d.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = db.query(
        &format!(
            "SELECT {cols}, c.segments, c.chars, c.truncated, c.masked FROM decisions d JOIN captures c ON c.key = d.capture_key WHERE {tail}"
        ),
        params,
    )?;
    let n = DECISION_COLS.split(", ").count();
    Ok(rows
        .iter()
        .map(|r| Detail {
            decision: Decision::from_row(&r[..n]),
            capture: Some(Captured {
                segments: r[n]
                    .text()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default(),
                chars: r[n + 1].int().unwrap_or(0),
                truncated: r[n + 2].int() == Some(1),
                masked: r[n + 3].int().unwrap_or(0),
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3), "($1, $2, $3)");
    }

    #[test]
    fn filters_become_numbered_conditions() {
        let f = Filter {
            policy: Some("p".into()),
            code: Some("C1".into()),
            since_ms: Some(5),
            disagree: true,
            label: LabelFilter::Is(Label::FalsePositive),
            ..Default::default()
        };
        let mut p = Vec::new();
        let w = f.conditions(&mut p);
        assert_eq!(
            w,
            "policy_id = $1 AND code = $2 AND ts_ms >= $3 AND disagree = 1 AND label = $4"
        );
        assert_eq!(
            p,
            vec![
                Value::from("p"),
                Value::from("C1"),
                Value::Int(5),
                Value::from("false_positive")
            ]
        );
        assert_eq!(Filter::default().conditions(&mut Vec::new()), "1=1");
    }

    #[test]
    fn labels_state_a_truth_only_where_they_apply() {
        assert_eq!(Label::Correct.truth("violation"), Some(true));
        assert_eq!(Label::FalsePositive.truth("violation"), Some(false));
        assert_eq!(Label::Correct.truth("allow"), Some(false));
        assert_eq!(Label::FalseNegative.truth("allow"), Some(true));
        assert_eq!(Label::FalsePositive.truth("allow"), None);
        assert_eq!(Label::FalseNegative.truth("violation"), None);
        assert_eq!(Label::Correct.truth("error"), None);
    }
}
