//! Reading a model's answer: the final channel of a harmony completion (gpt-oss-safeguard) or a
//! plain chat answer, in the policy's output format (`0`/`1`, or JSON with `violation`,
//! `policy_category`, optional `rule_ids`, `confidence`, `rationale`).
//!
//! A parse never guesses: an answer that does not say 0 or 1 is an error, and the route's fail
//! mode decides what happens to the traffic.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `0` or `1`.
    Binary,
    /// `{"violation": 0|1, "policy_category": "X1.a"|null, ...}`
    #[default]
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    pub violation: bool,
    pub code: Option<String>,
    pub rule_ids: Vec<String>,
    pub confidence: Option<f32>,
    pub rationale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("the model gave no final answer (reasoning may have used the whole budget)")]
    Empty,
    #[error("the model's answer is not in the policy's output format: {0:?}")]
    Unparseable(String),
}

/// Splits a raw harmony completion into (analysis, final). Text without harmony markers is all
/// final. mistral.rs and vLLM usually split channels themselves (`reasoning_content`); this
/// handles servers and templates that return the raw tokens.
pub fn split_harmony(raw: &str) -> (Option<String>, String) {
    if !raw.contains("<|channel|>") {
        return (None, raw.to_string());
    }
    let mut analysis = String::new();
    let mut final_text = String::new();
    for part in raw.split("<|start|>") {
        let Some(rest) = part.split("<|channel|>").nth(1) else {
            continue;
        };
        let (channel, body) = rest.split_once("<|message|>").unwrap_or((rest, ""));
        let end = ["<|end|>", "<|return|>", "<|call|>"]
            .iter()
            .filter_map(|m| body.find(m))
            .min()
            .unwrap_or(body.len());
        let body = &body[..end];
        let channel = channel.split_whitespace().next().unwrap_or("");
        match channel {
            "analysis" => analysis.push_str(body),
            "final" => final_text.push_str(body),
            _ => {}
        }
    }
    let analysis = (!analysis.trim().is_empty()).then(|| analysis.trim().to_string());
    (analysis, final_text.trim().to_string())
}

pub(super) fn as_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "0" | "false" | "no" | "safe" => Some(false),
            "1" | "true" | "yes" | "violation" | "violating" | "unsafe" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn confidence(v: &Value) -> Option<f32> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| x.clamp(0.0, 1.0) as f32),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "high" => Some(0.9),
            "medium" => Some(0.6),
            "low" => Some(0.3),
            other => other.parse::<f32>().ok().map(|x| x.clamp(0.0, 1.0)),
        },
        _ => None,
    }
}

/// The first balanced `{...}` in `s` (models often wrap JSON in prose or code fences).
pub(super) fn first_object(s: &str) -> Option<&str> {
    let start = s.find('{')?;
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s[start..].char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// A model-given code as it may travel: it ends up in `x-guardgate-code(s)` headers and error
/// messages, and a model can be talked into any string (a control character made the header, and
/// so the whole reply, fail). Codes are short identifiers (`SH1.a`, `S3`): keep those characters.
pub(super) fn code_token(c: &str) -> String {
    c.chars()
        .filter(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':' | '/'))
        .take(64)
        .collect()
}

/// The code an answer's `policy_category` (or `category`) names, as a `code_token`; `None` when
/// it is absent, not a string, empty, "null" or "none".
pub(super) fn named_code(category: Option<&Value>) -> Option<String> {
    category
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|c| {
            !c.is_empty() && !c.eq_ignore_ascii_case("null") && !c.eq_ignore_ascii_case("none")
        })
        .map(code_token)
}

/// Parses the final answer in `format`; `analysis` (the reasoning channel) becomes the rationale,
/// and an answer's own `rationale` field only where there is none: a harmony model's final JSON
/// may summarise, and reviewers audit the reasoning itself.
pub fn parse_answer(
    final_text: &str,
    analysis: Option<&str>,
    format: OutputFormat,
) -> Result<ModelAnswer, VerdictError> {
    let text = final_text.trim();
    if text.is_empty() {
        return Err(VerdictError::Empty);
    }
    let rationale = analysis
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    // A JSON answer is accepted whatever the declared format: models trained on JSON outputs
    // sometimes ignore a binary instruction, and the JSON still says 0 or 1 unambiguously.
    if let Some(obj) = first_object(text) {
        if let Ok(v) = serde_json::from_str::<Value>(obj) {
            if let Some(flag) = v.get("violation").and_then(as_flag) {
                let code = named_code(v.get("policy_category").or_else(|| v.get("category")))
                    .filter(|c| !c.is_empty());
                let rule_ids = v
                    .get("rule_ids")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let own = v
                    .get("rationale")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                return Ok(ModelAnswer {
                    violation: flag,
                    code: if flag { code } else { None },
                    rule_ids,
                    confidence: v.get("confidence").and_then(confidence),
                    rationale: rationale.or(own),
                });
            }
        }
        if format == OutputFormat::Json {
            return Err(VerdictError::Unparseable(truncate(text)));
        }
    }
    // Binary: the answer must start with 0 or 1 (after quotes, backticks or "Answer:").
    let stripped = text
        .trim_start_matches(|c: char| c == '`' || c == '"' || c == '\'' || c.is_whitespace())
        .trim_start_matches("Answer:")
        .trim_start_matches("answer:")
        .trim_start();
    let flag = match stripped.chars().next() {
        Some('0') => false,
        Some('1') => true,
        _ => return Err(VerdictError::Unparseable(truncate(text))),
    };
    // "10" or "0.7" is not a binary answer.
    if stripped
        .chars()
        .nth(1)
        .is_some_and(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(VerdictError::Unparseable(truncate(text)));
    }
    Ok(ModelAnswer {
        violation: flag,
        code: None,
        rule_ids: Vec::new(),
        confidence: None,
        rationale,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_answers() {
        assert!(
            parse_answer("1", None, OutputFormat::Binary)
                .unwrap()
                .violation
        );
        assert!(
            !parse_answer(" `0`\n", None, OutputFormat::Binary)
                .unwrap()
                .violation
        );
        assert!(
            parse_answer("Answer: 1", None, OutputFormat::Binary)
                .unwrap()
                .violation
        );
        assert!(parse_answer("10", None, OutputFormat::Binary).is_err());
        assert!(parse_answer("The content", None, OutputFormat::Binary).is_err());
        assert_eq!(
            parse_answer("  ", None, OutputFormat::Binary),
            Err(VerdictError::Empty)
        );
    }

    #[test]
    fn codes_are_kept_to_identifier_characters() {
        // They become header values: a control character used to fail the whole reply.
        let a = parse_answer(
            "{\"violation\": 1, \"policy_category\": \"S1\\nS2\\r\\u0000 x\"}",
            None,
            OutputFormat::Json,
        )
        .unwrap();
        assert_eq!(a.code.as_deref(), Some("S1S2x"));
        let a = parse_answer(
            "{\"violation\": 1, \"policy_category\": \"\\n\"}",
            None,
            OutputFormat::Json,
        )
        .unwrap();
        assert_eq!(a.code, None);
        assert!(a.violation);
    }

    #[test]
    fn json_answers() {
        let a = parse_answer(
            "```json\n{\"violation\": 1, \"policy_category\": \"SH3.a\", \"confidence\": \"high\", \"rule_ids\": [\"SH3.a\"]}\n```",
            Some("The user asks for a method."),
            OutputFormat::Json,
        )
        .unwrap();
        assert!(a.violation);
        assert_eq!(a.code.as_deref(), Some("SH3.a"));
        assert_eq!(a.confidence, Some(0.9));
        assert_eq!(a.rationale.as_deref(), Some("The user asks for a method."));
        let a = parse_answer(
            "{\"violation\":\"0\",\"policy_category\":\"null\"}",
            None,
            OutputFormat::Json,
        )
        .unwrap();
        assert!(!a.violation && a.code.is_none());
        assert!(parse_answer("{\"violation\": 2}", None, OutputFormat::Json).is_err());
        assert!(parse_answer("{\"verdict\": 1}", None, OutputFormat::Json).is_err());
        // A JSON answer to a binary policy still counts.
        assert!(
            parse_answer("{\"violation\":1}", None, OutputFormat::Binary)
                .unwrap()
                .violation
        );
    }

    #[test]
    fn harmony_channels() {
        let raw = "<|channel|>analysis<|message|>Think about it.<|end|><|start|>assistant<|channel|>final<|message|>{\"violation\":1,\"policy_category\":\"X1\"}<|return|>";
        let (analysis, fin) = split_harmony(raw);
        assert_eq!(analysis.as_deref(), Some("Think about it."));
        let a = parse_answer(&fin, analysis.as_deref(), OutputFormat::Json).unwrap();
        assert_eq!(a.code.as_deref(), Some("X1"));
        assert_eq!(a.rationale.as_deref(), Some("Think about it."));
        // Reasoning that used the whole budget: no final channel.
        let (analysis, fin) =
            split_harmony("<|channel|>analysis<|message|>Long thought that never ends");
        assert!(analysis.is_some());
        assert_eq!(
            parse_answer(&fin, None, OutputFormat::Json),
            Err(VerdictError::Empty)
        );
        assert_eq!(split_harmony("plain 0").1, "plain 0");
    }
}
