//! The shared store for several replicas: the same schema on PostgreSQL, so every replica's
//! decisions land in one review queue. The synchronous client runs on the writer thread and on
//! blocking threads, never on the proxy's reactors. Connections are plain TCP (or a Unix socket):
//! put TLS in front with a local pooler or sidecar where the database is remote.

use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use std::collections::HashMap;

use super::db::{Db, Dialect, Result, StoreError, Value};

pub struct Postgres {
    client: Client,
    /// Prepared once per connection: the queries are a fixed set (and the inserts' row counts).
    statements: HashMap<String, Statement>,
}

fn err(e: postgres::Error) -> StoreError {
    StoreError(format!("postgresql: {e}"))
}

impl Postgres {
    pub fn connect(url: &str) -> Result<Postgres> {
        let client = Client::connect(url, NoTls).map_err(err)?;
        Ok(Postgres {
            client,
            statements: HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(err)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A value goes in as whatever type the server inferred for its parameter.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), _) => i.to_string().to_sql(ty, out),
            (Value::Real(r), &Type::FLOAT4) => (*r as f32).to_sql(ty, out),
            (Value::Real(r), _) => r.to_sql(ty, out),
            (Value::Text(s), _) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn column(row: &postgres::Row, i: usize) -> Value {
    let ty = row.columns()[i].type_();
    let v = match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .ok()
            .flatten()
            .map(|v| Value::Int(v as i64)),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .ok()
            .flatten()
            .map(|v| Value::Int(v as i64)),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .ok()
            .flatten()
            .map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .ok()
            .flatten()
            .map(|v| Value::Real(v as f64)),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .ok()
            .flatten()
            .map(|b| Value::Int(b as i64)),
        _ => row
            .try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .map(Value::Text),
    };
    v.unwrap_or(Value::Null)
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Db for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(err)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let st = self.statement(sql)?;
        self.client.execute(&st, &refs(params)).map_err(err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let st = self.statement(sql)?;
        let rows = self.client.query(&st, &refs(params)).map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| (0..r.len()).map(|i| column(r, i)).collect())
            .collect())
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}
