//! Anthropic Message Batches (`POST /v1/messages/batches`): `{requests: [{custom_id, params}]}`,
//! each `params` a Messages request.

use serde_json::Value;

use super::{error_within, within, BatchItem, Contents};
use crate::wire::extract::{as_object, expected, field, index, missing};
use crate::wire::{anthropic, parse_strict, WireError};

pub(super) fn read(body: &[u8]) -> Result<Contents, WireError> {
    let v = parse_strict(body)?;
    let obj = as_object(&v, "")?;
    // Refused rather than skipped: a member this code does not know could be one the upstream
    // reads as more requests.
    if let Some(k) = obj.keys().find(|k| *k != "requests") {
        return Err(WireError::at(
            k,
            "not a member of a message batch guardgate reads",
        ));
    }
    let requests = match obj.get("requests") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(WireError::at("requests", "empty")),
        Some(v) => return Err(expected("requests", "an array", v)),
        None => return Err(missing("requests")),
    };
    let mut items = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let path = index("requests", i);
        let entry = as_object(r, &path)?;
        if let Some(k) = entry
            .keys()
            .find(|k| !matches!(k.as_str(), "custom_id" | "params"))
        {
            return Err(WireError::at(
                &field(&path, k),
                "not a member of a batch request guardgate reads",
            ));
        }
        let custom_id = match entry.get("custom_id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(expected(&field(&path, "custom_id"), "a string", v)),
            None => return Err(missing(&field(&path, "custom_id"))),
        };
        let params_path = field(&path, "params");
        let params = match entry.get("params") {
            Some(p) => as_object(p, &params_path)?,
            None => return Err(missing(&params_path)),
        };
        let request = anthropic::API
            .0
            .parse_request(params)
            .map_err(|e| error_within(&params_path, e))?;
        items.push(BatchItem {
            custom_id,
            request: within(&params_path, request),
        });
    }
    Ok(Contents::Requests(items))
}

#[cfg(test)]
mod tests {
    use super::read;
    use crate::wire::batch::Contents;
    use serde_json::json;

    #[test]
    fn each_request_is_read_as_a_messages_request() {
        let body = json!({"requests": [
            {"custom_id": "a", "params": {"model": "m", "max_tokens": 8, "system": "be kind",
                "messages": [{"role": "user", "content": "hello"}]}},
            {"custom_id": "b", "params": {"model": "m", "max_tokens": 8,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "there"}]}]}}
        ]});
        let Contents::Requests(items) = read(body.to_string().as_bytes()).unwrap() else {
            panic!("requests")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].custom_id, "b");
        let texts: Vec<(&str, &str)> = items
            .iter()
            .flat_map(|i| &i.request.segments)
            .map(|s| (s.location.as_str(), s.text.as_str()))
            .collect();
        assert!(
            texts.contains(&("requests[0].params.system", "be kind")),
            "{texts:?}"
        );
        assert!(texts.contains(&("requests[1].params.messages[0].content[0].text", "there")));
    }

    #[test]
    fn what_it_does_not_know_is_refused_with_its_path() {
        for (body, param) in [
            (json!({"requests": []}), "requests"),
            (json!({"requests": [], "extra": 1}), "extra"),
            (
                json!({"requests": [{"custom_id": "a"}]}),
                "requests[0].params",
            ),
            (
                json!({"requests": [{"custom_id": "a", "params": {}, "x": 1}]}),
                "requests[0].x",
            ),
            (
                json!({"requests": [{"custom_id": "a", "params": {"model": "m", "max_tokens": 8, "messages": 3}}]}),
                "requests[0].params.messages",
            ),
        ] {
            let e = read(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e}");
        }
    }
}
