//! OpenAI legacy Completions (`/v1/completions`): a prompt in, text choices out.

use serde_json::{json, Map, Value};

use super::choices::{ChoiceFormat, ChoicesStream};
use super::extract::{expected, index, model_field, opt_str, present, stream_flag, Extractor};
use super::fields::{self, Field::*, Fields};
use super::reply::{arr, s, seg};
use super::stream::{EventText, StreamState};
use super::{errors, Api, ErrorKind, ParsedRequest, Segment, Source, WireError, WireFormat};

pub(super) const API: Api = Api(&Completions);

struct Completions;

impl WireFormat for Completions {
    fn name(&self) -> &'static str {
        "openai-completions"
    }

    fn default_path(&self) -> &'static str {
        "/v1/completions"
    }

    fn parse_request(&self, body: &Map<String, Value>) -> Result<ParsedRequest, WireError> {
        parse_completions(body)
    }

    fn reply_member(&self) -> &'static str {
        "choices"
    }

    fn reply_text(&self, v: &Value, out: &mut Vec<Segment>) {
        for (i, c) in arr(v, "choices").iter().enumerate() {
            out.extend(seg(
                Source::Assistant,
                format!("choices[{i}].text"),
                s(c, "text"),
            ));
        }
    }

    fn block_reply(&self, v: &mut Value, message: &str) {
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices.iter_mut() {
                if !c.is_object() {
                    *c = json!({});
                }
                c["text"] = json!(message);
                c["finish_reason"] = json!("content_filter");
                // The tokens' log-probabilities spell out the withheld reply.
                c["logprobs"] = Value::Null;
            }
        }
    }

    fn error_body(&self, kind: &ErrorKind, message: &str) -> Value {
        errors::openai(kind, message)
    }

    /// `choices[i].text`.
    fn delta_texts<'a>(&self, event: &'a mut Value) -> Vec<(String, &'a mut String)> {
        super::choices::choice_texts(event, |c| c.get_mut("text"))
    }

    fn stream_state(&self) -> Box<dyn StreamState> {
        Box::<ChoicesStream<TextChunk>>::default()
    }

    fn continued_text(&self, request: &Map<String, Value>) -> Option<String> {
        continued_prompt(request)
    }
}

/// A `text_completion` chunk: text in each choice's `text`.
#[derive(Debug, Clone, Default)]
struct TextChunk;

impl ChoiceFormat for TextChunk {
    const CHUNK_OBJECT: &'static str = "text_completion";
    const CHOICE_FIELDS: &'static [&'static str] =
        &["text", "logprobs", "finish_reason", "stop_reason"];

    fn choice_deltas(i: u64, c: &Value, out: &mut EventText) {
        out.push(format!("choices[{i}].text"), s(c, "text"));
        // The chosen tokens spell the text out again, for clients that show them.
        let lp = c.get("logprobs").unwrap_or(&Value::Null);
        let tokens: String = arr(lp, "tokens").iter().filter_map(Value::as_str).collect();
        out.push(format!("choices[{i}].logprobs"), &tokens);
    }

    fn filtered_choice(i: u64, text: Option<&str>) -> Value {
        json!({"index": i, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": "content_filter"})
    }

    fn continues_request(key: &str) -> bool {
        key.starts_with("choices[") && key.ends_with("].text")
    }
}

/// The prompt, which the completion continues: the one string prompt (several prompts each get
/// their own choices, and which choice continues which is not worth the guess).
fn continued_prompt(request: &Map<String, Value>) -> Option<String> {
    let text = match request.get("prompt")? {
        Value::String(t) => t,
        Value::Array(p) if p.len() == 1 => p[0].as_str()?,
        _ => return None,
    };
    (!text.is_empty()).then(|| text.to_string())
}

const TOKEN_IDS: &str = "prompt as token ids cannot be classified; send text";

/// The request's top-level fields (the OpenAI SDKs' `CompletionCreateParams`, and vLLM's
/// extras), see [`Field`].
const FIELDS: Fields = &[
    ("prompt", Read),
    ("suffix", Read),
    ("model", Setting),
    ("stream", Setting),
    ("stream_options", Setting),
    ("best_of", Setting),
    // Repeats the prompt in the reply; the reply is judged as the client sees it.
    ("echo", Setting),
    ("frequency_penalty", Setting),
    ("presence_penalty", Setting),
    ("logit_bias", Setting),
    ("logprobs", Setting),
    ("max_tokens", Setting),
    ("n", Setting),
    ("seed", Setting),
    ("stop", Setting),
    ("temperature", Setting),
    ("top_p", Setting),
    ("user", Setting),
    // vLLM sampling and serving settings.
    ("top_k", Setting),
    ("min_p", Setting),
    ("repetition_penalty", Setting),
    ("bad_words", Setting),
    ("add_special_tokens", Setting),
    ("priority", Setting),
    ("request_id", Setting),
    ("cache_salt", Setting),
    // vLLM: the prompt as embedding tensors.
    ("prompt_embeds", Refused(fields::EMBEDDINGS)),
];

fn parse_completions(obj: &Map<String, Value>) -> Result<ParsedRequest, WireError> {
    let mut out = Extractor::default();
    fields::check_top_level(obj, FIELDS, &mut out)?;
    let model = model_field(obj, true)?;
    let stream = stream_flag(obj)?;

    // Token ids are opaque to a text classifier; passing them through
    // unclassified would be a trivial bypass.
    let token_ids = || WireError {
        message: TOKEN_IDS.to_string(),
        param: Some("prompt".to_string()),
    };
    match present(obj, "prompt") {
        None => {}
        Some(Value::String(s)) => out.text(Source::User, s, "prompt".to_string()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.text(Source::User, s, index("prompt", i)),
                    Value::Number(_) | Value::Array(_) => return Err(token_ids()),
                    v => return Err(expected(&index("prompt", i), "a string", v)),
                }
            }
        }
        Some(v) => return Err(expected("prompt", "a string or an array of strings", v)),
    }
    if let Some(suffix) = opt_str(obj, "suffix", "")? {
        out.text(Source::User, suffix, "suffix".to_string());
    }

    Ok(out.finish(model, stream))
}

#[cfg(test)]
mod tests {
    use super::super::extract::seg;
    use super::*;

    fn completions(body: &str) -> Result<ParsedRequest, WireError> {
        API.parse_request(body.as_bytes())
    }

    #[test]
    fn completions_happy_path() {
        let req = completions(
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","suffix":"end","max_tokens":7,"temperature":0,"stream":false}"#,
        )
        .unwrap();
        assert_eq!(req.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert!(!req.stream);
        assert_eq!(
            req.segments,
            vec![
                seg(Source::User, "Say this is a test", "prompt"),
                seg(Source::User, "end", "suffix"),
            ]
        );

        let req = completions(r#"{"model":"m","prompt":["one","","two"],"stream":true}"#).unwrap();
        assert!(req.stream);
        assert_eq!(
            req.segments,
            vec![
                seg(Source::User, "one", "prompt[0]"),
                seg(Source::User, "two", "prompt[2]"),
            ]
        );
        let req = completions(r#"{"model":"m"}"#).unwrap();
        assert!(req.segments.is_empty());
    }

    #[test]
    fn completions_token_ids_refused() {
        for prompt in ["[1212, 318]", "[[1212, 318], [1]]", "[\"text\", 5]", "[[]]"] {
            let body = format!(r#"{{"model":"m","prompt":{prompt}}}"#);
            let e = completions(&body).unwrap_err();
            assert_eq!(
                e.message,
                "prompt as token ids cannot be classified; send text"
            );
            assert_eq!(e.param.as_deref(), Some("prompt"));
        }
    }

    #[test]
    fn completions_wrong_types() {
        let cases = [
            (r#"{"prompt":"x"}"#, "model: required field is missing"),
            (
                r#"{"model":"m","prompt":5}"#,
                "prompt: expected a string or an array of strings, got number",
            ),
            (
                r#"{"model":"m","prompt":["a",{"t":1}]}"#,
                "prompt[1]: expected a string, got object",
            ),
            (
                r#"{"model":"m","suffix":1}"#,
                "suffix: expected a string, got number",
            ),
            (
                r#"{"model":"m","stream":1}"#,
                "stream: expected a boolean, got number",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(completions(body).unwrap_err().message, want, "{body}");
        }
    }
}

#[cfg(test)]
mod field_tests {
    use super::super::fields::testing;
    use super::*;

    #[test]
    fn each_read_field_is_read() {
        testing::each_read_field_is_read(
            API,
            FIELDS,
            &[
                ("prompt", r#"{"model":"m","prompt":"zorble"}"#),
                ("suffix", r#"{"model":"m","prompt":"a","suffix":"zorble"}"#),
            ],
        );
    }

    #[test]
    fn settings_unknown_and_refused_fields() {
        let base = r#"{"model":"m","prompt":"hi"}"#;
        let typed = [("model", json!("m")), ("stream", json!(false))];
        testing::settings_are_not_read(API, FIELDS, base, &typed);
        testing::unknown_refused_and_case_variants(API, FIELDS, base);
    }
}
