//! One body read by the gateway's strict parser and by sonic-rs, an independent parser that
//! keeps repeated keys: whenever the gateway accepts a body, sonic-rs must read the same object,
//! key for key and string for string, with no repeated key and no two keys that fold to one. A
//! body the two read differently is a bypass: the gateway would judge one reading and forward
//! bytes the upstream reads another way.

use serde_json::Value;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::wire::json::fold_key;
use crate::wire::parse_strict;

/// Checks one body; `Err` describes a difference.
pub fn same_reading(body: &[u8]) -> Result<(), String> {
    let other = sonic_rs::from_slice::<sonic_rs::Value>(body);
    match parse_strict(body) {
        Ok(ours) => {
            let theirs = other.map_err(|e| format!("only the gateway accepts it: {e}"))?;
            same(&ours, &theirs, "")
        }
        Err(_) => Ok(()),
    }
}

fn same(ours: &Value, theirs: &sonic_rs::Value, path: &str) -> Result<(), String> {
    let differ = || Err(format!("{path}: {ours} / {theirs}"));
    match ours {
        Value::Null if theirs.is_null() => Ok(()),
        Value::Bool(b) if theirs.as_bool() == Some(*b) => Ok(()),
        Value::String(s) if theirs.as_str() == Some(s.as_str()) => Ok(()),
        Value::Number(n) => {
            let equal = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => theirs.as_i64() == Some(i),
                (_, Some(u), _) => theirs.as_u64() == Some(u),
                // serde_json without `float_roundtrip` may read a long decimal a unit in the
                // last place off, and reads `-0` as -0.0 where sonic-rs reads the integer 0;
                // numbers are never judged, and the body goes upstream as it came.
                (_, _, Some(f)) => theirs
                    .as_f64()
                    .is_some_and(|g| f == g || f.to_bits().abs_diff(g.to_bits()) <= 2),
                _ => false,
            };
            if equal {
                Ok(())
            } else {
                differ()
            }
        }
        Value::Array(items) => {
            let Some(theirs) = theirs.as_array() else {
                return differ();
            };
            if items.len() != theirs.len() {
                return differ();
            }
            for (i, (a, b)) in items.iter().zip(theirs.iter()).enumerate() {
                same(a, b, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Value::Object(obj) => {
            let Some(theirs) = theirs.as_object() else {
                return differ();
            };
            // Every key the other parser sees, repeated ones included, in order.
            let keys: Vec<(&str, &sonic_rs::Value)> = theirs.iter().collect();
            if keys.len() != obj.len() {
                return Err(format!(
                    "{path}: {} keys here, {} there (a repeated key was accepted)",
                    obj.len(),
                    keys.len()
                ));
            }
            let mut folds: Vec<String> = keys.iter().map(|(k, _)| fold_key(k).into()).collect();
            folds.sort();
            if folds.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{path}: keys that fold to one were accepted"));
            }
            for ((k, a), (k2, b)) in obj.iter().zip(keys) {
                if k != k2 {
                    return Err(format!("{path}: key {k:?} read as {k2:?}"));
                }
                same(a, b, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        _ => differ(),
    }
}
