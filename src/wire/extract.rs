//! The request side's shared reading: an `Extractor` that collects segments in document order,
//! typed field access whose errors name the JSON path, and the readers of parts every API has
//! (content fields, tool and schema definitions).

use serde_json::{Map, Value};

use super::inline_file::{self, Inline};
use super::json::is_case_variant;
pub(super) use super::schema::collect_descriptions;
use super::{ParsedRequest, Segment, Source, WireError};

/// Accumulates segments in document order.
#[derive(Default)]
pub(super) struct Extractor {
    pub(super) segments: Vec<Segment>,
    unclassified_parts: usize,
    spots: super::Spots,
}

impl Extractor {
    /// Empty strings carry nothing to classify, so they produce no segment.
    pub(super) fn text(&mut self, source: Source, text: &str, location: String) {
        if !text.is_empty() {
            self.segments.push(Segment {
                source,
                text: text.to_string(),
                location,
            });
        }
    }

    /// A name (of a tool, a schema, a property) as the words it is made of, see
    /// `identifier_words`.
    pub(super) fn name(&mut self, source: Source, name: &str, location: String) {
        self.spots.names.push(location.clone());
        self.text(source, &identifier_words(name), location)
    }

    /// A tool call's arguments given as a JSON object (Anthropic's `input`): judged with the
    /// call, noted here so that a rewrite reaches their strings.
    pub(super) fn argument_object(&mut self, location: String) {
        self.spots.arguments.push(location);
    }

    /// Tool-call arguments (or a custom tool's input) decoded, when they are JSON with escapes
    /// of their own (see `arguments`); the raw text is the caller's to judge.
    pub(super) fn arguments(&mut self, text: &str, location: String) {
        if !text.is_empty() {
            self.spots.arguments.push(location.clone());
        }
        if let Some(decoded) = super::arguments::decoded(text) {
            self.text(Source::ToolCall, &decoded, location);
        }
    }

    pub(super) fn unclassified(&mut self) {
        self.unclassified_parts += 1;
    }

    pub(super) fn finish(self, model: Option<String>, stream: bool) -> ParsedRequest {
        ParsedRequest {
            model,
            stream,
            segments: self.segments,
            unclassified_parts: self.unclassified_parts,
            spots: self.spots,
        }
    }
}

/// A camel-cased identifier with its words apart (`buildPipeBomb` -> `build Pipe Bomb`,
/// `HTTPServer` -> `HTTP Server`): normalisation lower-cases text, which would glue the words
/// together and hide them from keyword rules. Other names come back as they are; underscores and
/// hyphens already separate words for the rules.
pub(crate) fn identifier_words(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().skip(1).any(char::is_uppercase) {
        return name.into();
    }
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_numeric() || (prev.is_uppercase() && next_lower) {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out.into()
}

pub(super) use super::json::quoted;

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn expected(path: &str, what: &str, got: &Value) -> WireError {
    WireError::at(path, format!("expected {what}, got {}", type_name(got)))
}

pub(super) fn missing(path: &str) -> WireError {
    WireError::at(path, "required field is missing")
}

/// The JSON path of `key` under `path`: `path.key`, or `path["key"]` for a key that a dotted
/// path would not name on its own (empty, or with dots, brackets, quotes or spaces), so every
/// location names one place.
pub(super) fn field(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '$'));
    match (plain, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", Value::String(key.to_string())),
    }
}

pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(super) fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, WireError> {
    v.as_object().ok_or_else(|| expected(path, "an object", v))
}

/// Absent and `null` both mean "not given", matching how the APIs treat
/// optional fields.
pub(super) fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The field `key` of `obj`, as [`present`], refusing an object that also spells the field in
/// another case (`Text`, `ſource`): a case-insensitive upstream reads that spelling as the field
/// (Go's `encoding/json` does), so the value it uses could be one never judged here. Only
/// fields the parser looks up are checked, so user data (schema properties, tool arguments)
/// may use any keys.
pub(super) fn lookup<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Value>, WireError> {
    if let Some(variant) = obj.keys().find(|k| is_case_variant(k, key)) {
        return Err(case_variant(&field(path, variant), key));
    }
    Ok(present(obj, key))
}

/// The error for a key that a case-insensitive parser reads as the field `name`.
pub(super) fn case_variant(path: &str, name: &str) -> WireError {
    WireError::at(
        path,
        format!(
            "spells the field {} in another case; send it as {0}",
            quoted(name)
        ),
    )
}

pub(super) fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, WireError> {
    match lookup(obj, key, path)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(expected(&field(path, key), "a string", v)),
    }
}

pub(super) fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, WireError> {
    opt_str(obj, key, path)?.ok_or_else(|| missing(&field(path, key)))
}

pub(super) fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Vec<Value>>, WireError> {
    match lookup(obj, key, path)? {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(v) => Err(expected(&field(path, key), "an array", v)),
    }
}

pub(super) fn opt_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, WireError> {
    match lookup(obj, key, path)? {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(v) => Err(expected(&field(path, key), "an object", v)),
    }
}

pub(super) fn stream_flag(obj: &Map<String, Value>) -> Result<bool, WireError> {
    match present(obj, "stream") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(expected("stream", "a boolean", v)),
    }
}

pub(super) fn model_field(
    obj: &Map<String, Value>,
    required: bool,
) -> Result<Option<String>, WireError> {
    let model = opt_str(obj, "model", "")?;
    if required && model.is_none() {
        return Err(missing("model"));
    }
    Ok(model.map(str::to_string))
}

/// The `content` field of a message, item or block, as every API spells it: a plain string, or
/// an array of typed parts that `part` reads. Absent or null is an error when `required`, and
/// otherwise nothing to read.
pub(super) fn content_field(
    obj: &Map<String, Value>,
    path: &str,
    required: bool,
    parts: &str,
    source: Source,
    out: &mut Extractor,
    part: fn(&Value, &str, Source, &mut Extractor) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let content_path = field(path, "content");
    match lookup(obj, "content", path)? {
        None if required => Err(missing(&content_path)),
        None => Ok(()),
        Some(Value::String(s)) => {
            out.text(source, s, content_path);
            Ok(())
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                part(item, &index(&content_path, i), source, out)?;
            }
            Ok(())
        }
        Some(v) => Err(expected(
            &content_path,
            &format!("a string or an array of {parts}"),
            v,
        )),
    }
}

/// Every string under `v`, object keys included: schema data values and examples are shown to
/// the model as they are.
pub(super) fn collect_strings(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::String(s) => out.text(source, s, path.to_string()),
        Value::Object(obj) => {
            for (key, child) in obj {
                let child_path = field(path, key);
                out.text(source, key, child_path.clone());
                collect_strings(child, &child_path, source, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_strings(child, &index(path, i), source, out);
            }
        }
        _ => {}
    }
}

/// Every string value under `v` (object keys are not read): a name as its words, the value of
/// a `type` or `mode` not at all (the API's vocabulary).
pub(super) fn values(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::String(s) => out.text(source, s, path.to_string()),
        Value::Object(obj) => {
            for (key, child) in obj {
                let child_path = field(path, key);
                match (key.as_str(), child) {
                    ("type" | "mode", _) => {}
                    ("name", Value::String(s)) => out.name(source, s, child_path),
                    _ => values(child, &child_path, source, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                values(child, &index(path, i), source, out);
            }
        }
        _ => {}
    }
}

/// A `tool_choice` (or legacy `function_call`): the named tools and servers of a forced or
/// allowed choice; the plain modes are vocabulary.
pub(super) fn tool_choice(v: &Value, path: &str, out: &mut Extractor) {
    match v {
        Value::String(s) if ["auto", "none", "required", "any"].contains(&s.as_str()) => {}
        _ => values(v, path, Source::ToolDefinition, out),
    }
}

/// A file part whose data (`data_key`) is inline: its file name is shown to the model, and its
/// data judged as text when its media type (of the data URL, else of the name) is text (see
/// `inline_file`); a file by id or URL, or of other media, is a part no classifier read.
pub(super) fn inline_file(
    file: &Map<String, Value>,
    path: &str,
    data_key: &str,
    source: Source,
    out: &mut Extractor,
) -> Result<(), WireError> {
    let filename = opt_str(file, "filename", path)?;
    if let Some(name) = filename {
        out.text(source, name, field(path, "filename"));
    }
    let data_path = field(path, data_key);
    match opt_str(file, data_key, path)? {
        Some(data) => match inline_file::read(data, None, filename) {
            Inline::Text(text) => out.text(source, &text, data_path),
            Inline::NotText => out.unclassified(),
            Inline::Undecodable => return Err(undecodable(&data_path)),
        },
        None => out.unclassified(),
    }
    Ok(())
}

/// The error for a text file whose encoding cannot be undone.
pub(super) fn undecodable(path: &str) -> WireError {
    WireError::at(
        path,
        "a text file that is not valid base64 cannot be classified; send it as text",
    )
}

/// Tool definitions: an array of objects whose descriptions (at any depth)
/// are classified.
pub(super) fn tool_definitions(
    obj: &Map<String, Value>,
    key: &str,
    out: &mut Extractor,
) -> Result<(), WireError> {
    if let Some(tools) = opt_array(obj, key, "")? {
        for (i, tool) in tools.iter().enumerate() {
            let path = index(key, i);
            as_object(tool, &path)?;
            collect_descriptions(tool, &path, Source::ToolDefinition, out);
        }
    }
    Ok(())
}

/// A segment as the extractors' tests expect it.
#[cfg(test)]
pub(super) fn seg(source: Source, text: &str, location: &str) -> Segment {
    Segment {
        source,
        text: text.to_string(),
        location: location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_names_come_apart() {
        for (name, want) in [
            ("buildPipeBomb", "build Pipe Bomb"),
            ("HTTPServer", "HTTP Server"),
            ("getV2Data", "get V2 Data"),
            ("ÜberGroß", "Über Groß"),
            ("get_weather", "get_weather"),
            ("Weather", "Weather"),
            ("ABC", "ABC"),
            ("", ""),
        ] {
            assert_eq!(identifier_words(name), want, "{name}");
        }
    }
}
