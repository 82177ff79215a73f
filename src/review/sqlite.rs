//! The embedded store: one SQLite file, in WAL mode so the page's reads never wait for the
//! writer's transactions (and the writer waits at most `busy_timeout` for a label update).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use std::path::Path;

use super::db::{Db, Dialect, Result, StoreError, Value};

pub struct Sqlite {
    conn: Connection,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(format!("sqlite: {e}"))
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let conn =
            Connection::open(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        // NORMAL: a power loss may lose the last transactions, never corrupt the file; FULL would
        // fsync every batch, which is what a slow disk would turn into shed records.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(err)?;
        Ok(Sqlite { conn })
    }
}

/// `$n` (PostgreSQL's parameters, as the queries are written) to `?n`: the same numbering.
fn to_sqlite(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_str = !in_str;
                out.push(c);
            }
            '$' if !in_str && chars.peek().is_some_and(|d| d.is_ascii_digit()) => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn from_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Value::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

impl Db for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(err)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut st = self.conn.prepare_cached(&to_sqlite(sql)).map_err(err)?;
        st.execute(rusqlite::params_from_iter(params.iter()))
            .map(|n| n as u64)
            .map_err(err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let mut st = self.conn.prepare_cached(&to_sqlite(sql)).map_err(err)?;
        let n = st.column_count();
        let mut rows = st
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(err)? {
            out.push(
                (0..n)
                    .map(|i| r.get_ref(i).map(from_ref).unwrap_or(Value::Null))
                    .collect(),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::capture::Segment;
    use super::super::store::{
        Filter, Label, LabelFilter, Location, NewCapture, NewDecision, PolicyText, Store,
        WriteBatch,
    };
    use super::*;

    #[test]
    fn parameters_are_renumbered_outside_string_literals() {
        assert_eq!(
            to_sqlite("a = $1 AND b = '$2' AND c = $10"),
            "a = ?1 AND b = '$2' AND c = ?10"
        );
    }

    fn decision(i: i64, policy: &str, verdict: &str, key: Option<&str>) -> NewDecision {
        NewDecision {
            ts_ms: 1_000 + i,
            request_id: format!("r{i}"),
            route: "chat".into(),
            api: "openai-chat".into(),
            direction: "input".into(),
            policy_id: policy.into(),
            policy_version: "1".into(),
            policy_hash: "h1".into(),
            verdict: verdict.into(),
            effect: if verdict == "violation" {
                "blocked"
            } else {
                "allowed"
            }
            .into(),
            action: "block".into(),
            code: (verdict == "violation").then(|| "C1".to_string()),
            latency_us: 10,
            capture_key: key.map(str::to_string),
            preview: key.map(|k| format!("text of {k}")),
            ..Default::default()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(Location::Sqlite(d.path().join("sub/review.db"))).unwrap();
        (d, s)
    }

    #[test]
    fn writes_pages_labels_and_purges() {
        let (_d, s) = store();
        let mut w = WriteBatch::default();
        for i in 0..150 {
            let key = format!("k{i}");
            w.captures.push(NewCapture {
                key: key.clone(),
                ts_ms: 1_000 + i,
                segments: vec![Segment {
                    source: "user".into(),
                    location: "messages[0].content".into(),
                    text: format!("text {i}"),
                }],
                chars: 6,
                truncated: false,
                masked: 0,
            });
            let policy = if i % 3 == 0 { "a/x" } else { "b/y" };
            let verdict = if i % 2 == 0 { "violation" } else { "allow" };
            w.decisions.push(decision(i, policy, verdict, Some(&key)));
        }
        w.facets.push(("policy".into(), "a/x".into()));
        w.facets.push(("policy".into(), "b/y".into()));
        w.policies.push(PolicyText {
            hash: "h1".into(),
            policy_id: "a/x".into(),
            version: "1".into(),
            path: "p.md".into(),
            text: "+++\n+++\n# X".into(),
            exact: true,
            ts_ms: 1,
        });
        s.write(&w).unwrap();
        // The same policy text again is no error (another replica stored it first).
        s.write(&WriteBatch {
            policies: w.policies.clone(),
            ..Default::default()
        })
        .unwrap();

        let all = s.page(&Filter::default(), None, 50).unwrap();
        assert_eq!((all.rows.len(), all.total), (50, Some(150)));
        assert!(
            all.rows.windows(2).all(|p| p[0].id > p[1].id),
            "newest first"
        );
        let second = s.page(&Filter::default(), all.next, 50).unwrap();
        assert!(second.rows[0].id < all.rows[49].id);
        let third = s.page(&Filter::default(), second.next, 50).unwrap();
        assert_eq!((third.rows.len(), third.next), (50, None));

        let f = Filter {
            policy: Some("a/x".into()),
            verdict: Some("violation".into()),
            ..Default::default()
        };
        let p = s.page(&f, None, 100).unwrap();
        // i % 3 == 0 and i % 2 == 0: every sixth of 0..150.
        assert_eq!(p.total, Some(25));
        assert!(p
            .rows
            .iter()
            .all(|d| d.policy_id == "a/x" && d.verdict == "violation"));

        let id = p.rows[0].id;
        assert!(s
            .label(
                id,
                Some(Label::FalsePositive),
                Some("a recipe, not a threat"),
                5
            )
            .unwrap());
        assert!(!s.label(999_999, Some(Label::Correct), None, 5).unwrap());
        let unreviewed = Filter {
            label: LabelFilter::Unreviewed,
            ..f.clone()
        };
        assert_eq!(s.page(&unreviewed, None, 100).unwrap().total, Some(24));
        let d = s.detail(id).unwrap().unwrap();
        assert_eq!(d.decision.label, Some(Label::FalsePositive));
        assert_eq!(
            d.decision.label_note.as_deref(),
            Some("a recipe, not a threat")
        );
        assert_eq!(d.capture.as_ref().unwrap().segments.len(), 1);
        let labelled = s.labelled("a/x").unwrap();
        assert_eq!(labelled.len(), 1);
        assert_eq!(labelled[0].decision.id, id);

        let (older, newer) = s.neighbours(&f, id).unwrap();
        assert!(older.unwrap() < id);
        assert_eq!(newer, None);

        assert_eq!(s.facets().unwrap().of("policy"), ["a/x", "b/y"]);
        assert_eq!(s.policy_text("h1").unwrap().unwrap().text, "+++\n+++\n# X");
        assert_eq!(s.captured("b/y", 1_100, 1000).unwrap().len(), 34);

        // The purge takes the text and keeps the decisions and labels.
        assert_eq!(s.purge(1_200).unwrap(), 150);
        let d = s.detail(id).unwrap().unwrap();
        assert_eq!(d.capture, None);
        assert_eq!(d.decision.preview, None);
        assert_eq!(d.decision.label, Some(Label::FalsePositive));
        assert_eq!(
            s.page(&Filter::default(), None, 1).unwrap().total,
            Some(150)
        );
    }

    #[test]
    fn reopening_keeps_the_data_and_a_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("r.db");
        let s = Store::open(Location::Sqlite(path.clone())).unwrap();
        s.write(&WriteBatch {
            decisions: vec![decision(1, "p", "allow", None)],
            ..Default::default()
        })
        .unwrap();
        drop(s);
        let s = Store::open(Location::Sqlite(path.clone())).unwrap();
        assert_eq!(s.page(&Filter::default(), None, 10).unwrap().rows.len(), 1);
        drop(s);
        let c = Connection::open(&path).unwrap();
        c.execute(
            "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        drop(c);
        let e = Store::open(Location::Sqlite(path)).err().unwrap();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
