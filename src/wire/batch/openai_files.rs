//! An OpenAI Files upload (`POST /v1/files`, `multipart/form-data` with `file` and `purpose`).
//! A batch input file (`purpose=batch`) is JSONL, one request a line:
//! `{"custom_id", "method": "POST", "url", "body"}`, each `body` a request of the API its `url`
//! names. A file for any other purpose is opaque.

use serde_json::Value;

use super::multipart;
use super::{error_within, within, BatchItem, Contents};
use crate::wire::extract::{as_object, expected, missing};
use crate::wire::{parse_strict, Api, WireError};

/// The form fields of an upload. Any other field is refused: the upstream might read it.
const FIELDS: [&str; 4] = [
    "file",
    "purpose",
    "expires_after[anchor]",
    "expires_after[seconds]",
];

/// The documented purposes, matched exactly: a spelling the upstream might still read as
/// `batch` ("Batch", "batch ") must not make a batch file opaque here.
const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

/// The line URLs guardgate can judge, and the API of each: OpenAI's, and Azure OpenAI's
/// spelling without `/v1`. Any other URL (`/v1/embeddings`, ...) is refused.
const URLS: [(&str, &str); 6] = [
    ("/v1/chat/completions", "openai-chat"),
    ("/chat/completions", "openai-chat"),
    ("/v1/completions", "openai-completions"),
    ("/completions", "openai-completions"),
    ("/v1/responses", "openai-responses"),
    ("/responses", "openai-responses"),
];

pub(super) fn read(content_type: &str, body: &[u8]) -> Result<Contents, WireError> {
    let parts = multipart::parse(content_type, body).map_err(WireError::new)?;
    let (mut purpose, mut file) = (None, None);
    for (i, p) in parts.iter().enumerate() {
        if !FIELDS.contains(&p.name.as_str()) {
            return Err(WireError::at(
                &p.name,
                "not a field of a file upload guardgate reads",
            ));
        }
        if parts[..i].iter().any(|q| q.name == p.name) {
            return Err(WireError::at(&p.name, "sent twice"));
        }
        match (p.name.as_str(), &p.filename) {
            ("file", Some(_)) => file = Some(p.body),
            ("file", None) => return Err(WireError::at("file", "not a file (no filename)")),
            (_, Some(_)) => return Err(WireError::at(&p.name, "a file where a value belongs")),
            ("purpose", None) => purpose = Some(p.body),
            _ => {}
        }
    }
    let purpose = purpose.ok_or_else(|| missing("purpose"))?;
    let purpose = PURPOSES
        .into_iter()
        .find(|p| p.as_bytes() == purpose)
        .ok_or_else(|| {
            WireError::at(
                "purpose",
                format!("expected one of {}", PURPOSES.join(", ")),
            )
        })?;
    let file = file.ok_or_else(|| missing("file"))?;
    if purpose != "batch" {
        return Ok(Contents::Opaque {
            purpose: purpose.to_string(),
        });
    }
    lines(file).map(Contents::Requests)
}

/// The requests of a batch input file.
fn lines(file: &[u8]) -> Result<Vec<BatchItem>, WireError> {
    let text = std::str::from_utf8(file).map_err(|e| {
        WireError::at(
            "file",
            format!(
                "the batch file is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    // One line ending after the last line; a blank line anywhere else is refused below.
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err(WireError::at("file", "the batch file has no requests"));
    }
    text.split('\n')
        .enumerate()
        .map(|(i, line)| {
            let at = format!("file.line[{}]", i + 1);
            request(line)
                .map_err(|e| error_within(&at, e))
                .map(|(custom_id, r)| BatchItem {
                    custom_id,
                    request: within(&at, r),
                })
        })
        .collect()
}

/// One line: its `custom_id` and its `body` read in the format its `url` names.
fn request(line: &str) -> Result<(String, crate::wire::ParsedRequest), WireError> {
    let v = parse_strict(line.as_bytes())?;
    let obj = as_object(&v, "")?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "custom_id" | "method" | "url" | "body"))
    {
        return Err(WireError::at(
            k,
            "not a member of a batch line guardgate reads",
        ));
    }
    let string = |key: &str| match obj.get(key) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(v) => Err(expected(key, "a string", v)),
        None => Err(missing(key)),
    };
    let custom_id = string("custom_id")?.to_string();
    if string("method")? != "POST" {
        return Err(WireError::at("method", "expected \"POST\""));
    }
    let url = string("url")?;
    let api = URLS
        .iter()
        .find(|(u, _)| *u == url)
        .and_then(|(_, name)| Api::from_name(name))
        .ok_or_else(|| {
            WireError::at(
                "url",
                format!(
                    "guardgate cannot judge requests to {url:?}; it judges {}",
                    URLS.map(|(u, _)| u).join(", ")
                ),
            )
        })?;
    let body = match obj.get("body") {
        Some(b) => as_object(b, "body")?,
        None => return Err(missing("body")),
    };
    let request = api
        .0
        .parse_request(body)
        .map_err(|e| error_within("body", e))?;
    Ok((custom_id, within("body", request)))
}

#[cfg(test)]
mod tests {
    use super::read;
    use crate::wire::batch::Contents;
    use serde_json::json;

    const CT: &str = "multipart/form-data; boundary=b0undary";

    fn upload(purpose: &str, file: &str) -> Vec<u8> {
        format!(
            "--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{file}\r\n--b0undary--\r\n"
        )
        .into_bytes()
    }

    fn line(url: &str, body: serde_json::Value) -> String {
        json!({"custom_id": "r1", "method": "POST", "url": url, "body": body}).to_string()
    }

    #[test]
    fn each_line_is_read_in_the_format_its_url_names() {
        let file = [
            line(
                "/v1/chat/completions",
                json!({"model": "m", "messages": [{"role": "user", "content": "one"}]}),
            ),
            line("/v1/responses", json!({"model": "m", "input": "two"})),
            line("/completions", json!({"model": "m", "prompt": "three"})),
        ]
        .join("\n")
            + "\n";
        let Contents::Requests(items) = read(CT, &upload("batch", &file)).unwrap() else {
            panic!("requests")
        };
        let texts: Vec<(&str, &str)> = items
            .iter()
            .flat_map(|i| &i.request.segments)
            .map(|s| (s.location.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("file.line[1].body.messages[0].content", "one"),
                ("file.line[2].body.input", "two"),
                ("file.line[3].body.prompt", "three"),
            ]
        );
    }

    #[test]
    fn other_purposes_are_opaque_and_unknown_ones_refused() {
        assert_eq!(
            read(CT, &upload("user_data", "%PDF-1.7")).unwrap(),
            Contents::Opaque {
                purpose: "user_data".into()
            }
        );
        for p in ["Batch", "batch ", "", "batches"] {
            assert!(read(CT, &upload(p, "{}")).is_err(), "{p:?}");
        }
    }

    #[test]
    fn lines_it_cannot_judge_are_refused_with_their_number() {
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let good = line("/v1/chat/completions", chat.clone());
        for (file, param) in [
            (String::new(), "file"),
            ("\n".to_string(), "file"),
            (format!("{good}\n\n{good}"), "file.line[2]"),
            (
                format!("{good}\n{}", line("/v1/embeddings", json!({"input": "x"}))),
                "file.line[2].url",
            ),
            (line("/v1/chat/completions/", chat.clone()), "file.line[1].url"),
            (line("/V1/chat/completions", chat.clone()), "file.line[1].url"),
            (
                json!({"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": chat})
                    .to_string(),
                "file.line[1].method",
            ),
            (
                json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat, "extra": 1})
                    .to_string(),
                "file.line[1].extra",
            ),
            (
                line("/v1/chat/completions", json!({"model": "m", "messages": "x"})),
                "file.line[1].body.messages",
            ),
            (format!("{good}\n{{\"custom_id\":1"), "file.line[2]"),
        ] {
            let e = read(CT, &upload("batch", &file)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{file:?}: {e}");
        }
        let dup = "--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n--b0undary--\r\n";
        assert_eq!(
            read(CT, dup.as_bytes()).unwrap_err().param.as_deref(),
            Some("purpose")
        );
    }
}
