//! Tool definitions and output schemas as the model reads them.
//!
//! Providers render tool definitions and structured-output schemas into the prompt, and the chat
//! templates of compatible servers (vLLM, SGLang, llama.cpp) render them with `tojson`: every
//! string and every key a client chose reaches the model, not only descriptions. So a schema is
//! read whole but for JSON Schema's and the APIs' own vocabulary (keyword names, the seven type
//! names), which carries nothing a client wrote, and credentials (MCP headers and tokens), which
//! must not end up in audit records.

use serde_json::Value;

use super::extract::{collect_strings, field, index, Extractor};
use super::Source;

/// Every string of a tool definition or schema under `v` (names as their words), and every key
/// that is not vocabulary, at any depth.
pub(super) fn collect_descriptions(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::Object(obj) => {
            for (key, child) in obj {
                let k = key.as_str();
                if CREDENTIALS.contains(&k) {
                    continue;
                }
                let child_path = field(path, k);
                if !VOCABULARY.contains(&k) {
                    out.name(source, k, child_path.clone());
                }
                match (k, child) {
                    // A tool's or schema's name is read like its description: it can carry the
                    // instruction a bland description leaves out.
                    ("name", Value::String(s)) => out.name(source, s, child_path),
                    ("type", _) => type_names(child, &child_path, source, out),
                    // Maps of names to schemas: the names are words of the schema too.
                    (k, Value::Object(named)) if NAMED_SCHEMAS.contains(&k) => {
                        for (name, schema) in named {
                            let named_path = field(&child_path, name);
                            out.name(source, name, named_path.clone());
                            collect_descriptions(schema, &named_path, source, out);
                        }
                    }
                    // Data shown as it is, object keys included.
                    (k, _) if DATA.contains(&k) => collect_strings(child, &child_path, source, out),
                    _ => collect_descriptions(child, &child_path, source, out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_descriptions(child, &index(path, i), source, out);
            }
        }
        // Descriptions, titles, patterns, formats, `$ref`s, grammar definitions, `required`
        // names, user locations, vendor extensions and keywords newer than this list.
        Value::String(s) => out.text(source, s, path.to_string()),
        _ => {}
    }
}

/// A `type`: a JSON Schema type name or one of the APIs' tool and format kinds says nothing;
/// anything else (a word where a type belongs) is read.
fn type_names(v: &Value, path: &str, source: Source, out: &mut Extractor) {
    match v {
        Value::String(s) if is_vocabulary_type(s) => {}
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                type_names(item, &index(path, i), source, out);
            }
        }
        _ => collect_descriptions(v, path, source, out),
    }
}

/// JSON Schema's types and the kinds of tools and formats of the APIs, versioned kinds
/// (`web_search_20250305`, `web_search_2025_08_26`) by their unversioned name.
fn is_vocabulary_type(s: &str) -> bool {
    let unversioned = s
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '_')
        .trim_end_matches('_');
    let versioned = unversioned.len() + 8 <= s.len();
    TYPES.contains(&s) || (versioned && TYPES.contains(&unversioned))
}

const TYPES: &[&str] = &[
    // JSON Schema.
    "string",
    "number",
    "integer",
    "boolean",
    "object",
    "array",
    "null",
    // Tools, formats and their parts.
    "function",
    "custom",
    "namespace",
    "json_schema",
    "json_object",
    "text",
    "grammar",
    "approximate",
    "ephemeral",
    "url",
    "mcp",
    "web_search",
    "web_search_preview",
    "web_fetch",
    "file_search",
    "code_interpreter",
    "code_execution",
    "image_generation",
    "local_shell",
    "shell",
    "computer",
    "computer_use_preview",
    "apply_patch",
    "tool_search",
    "tool_search_tool_regex",
    "tool_search_tool_bm25",
    "bash",
    "text_editor",
    "memory",
    "auto",
    "allowlist",
    "disabled",
];

/// Keys whose value maps names of the client's choosing to schemas.
const NAMED_SCHEMAS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];

/// Keys whose value is data (of any shape) that the model is shown as it is.
const DATA: &[&str] = &[
    "enum",
    "const",
    "default",
    "examples",
    "example",
    "input_examples",
];

/// Keys holding credentials for the upstream to use, never shown to the model.
const CREDENTIALS: &[&str] = &["authorization", "authorization_token", "headers"];

/// Key names that are vocabulary: JSON Schema's keywords (draft 4 to 2020-12 and OpenAPI's
/// additions) and the tool-definition fields of the APIs. Their values are still read; a key not
/// listed here is read as a name, since a client chose it.
const VOCABULARY: &[&str] = &[
    // JSON Schema.
    "$schema",
    "$id",
    "id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$recursiveRef",
    "$recursiveAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "definitions",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "items",
    "prefixItems",
    "additionalItems",
    "contains",
    "unevaluatedItems",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "example",
    "format",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "nullable",
    "discriminator",
    "propertyName",
    "mapping",
    // Tool definitions and output formats (OpenAI chat and Responses, Anthropic).
    "function",
    "custom",
    "name",
    "namespace",
    "parameters",
    "strict",
    "input_schema",
    "input_examples",
    "output_schema",
    "cache_control",
    "ttl",
    "defer_loading",
    "allowed_callers",
    "eager_input_streaming",
    "grammar",
    "definition",
    "syntax",
    "json_schema",
    "schema",
    "tools",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "approximate",
    "city",
    "country",
    "region",
    "timezone",
    "search_context_size",
    "external_web_access",
    "filters",
    "server_label",
    "server_description",
    "server_url",
    "connector_id",
    "require_approval",
    "allowed_tools",
    "tool_names",
    "read_only",
    "always",
    "never",
    "container",
    "file_ids",
    "vector_store_ids",
    "max_num_results",
    "ranking_options",
    "environment",
    "display_width",
    "display_height",
    "display_width_px",
    "display_height_px",
    "display_number",
    "execution",
    "annotations",
    "max_characters",
    "citations",
    "enabled",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &Value) -> Vec<(String, String)> {
        let mut ex = Extractor::default();
        collect_descriptions(v, "tools[0]", Source::ToolDefinition, &mut ex);
        ex.segments
            .into_iter()
            .map(|s| (s.text, s.location))
            .collect()
    }

    #[test]
    fn nested_descriptions_collected_with_paths() {
        let got = read(&serde_json::json!({
            "description": "top",
            "parameters": {"properties": {
                "description": {"type": "string", "description": "inner"},
                "list": {"items": [{"description": "in array"}]}
            }}
        }));
        let want: Vec<(String, String)> = [
            ("top", "tools[0].description"),
            ("description", "tools[0].parameters.properties.description"),
            (
                "inner",
                "tools[0].parameters.properties.description.description",
            ),
            ("list", "tools[0].parameters.properties.list"),
            (
                "in array",
                "tools[0].parameters.properties.list.items[0].description",
            ),
        ]
        .iter()
        .map(|(t, l)| (t.to_string(), l.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    /// One case per place a schema can carry words: each fails if that place is no longer read.
    #[test]
    fn every_place_of_a_schema_is_read() {
        let cases = [
            ("$defs name", r#"{"$defs":{"zorble":{"type":"object"}}}"#),
            ("definitions name", r#"{"definitions":{"zorble":{}}}"#),
            ("$ref", r##"{"$ref":"#/$defs/zorble"}"##),
            ("format", r#"{"type":"string","format":"zorble"}"#),
            ("pattern", r#"{"pattern":"^zorble$"}"#),
            ("$comment", r#"{"$comment":"zorble"}"#),
            ("required", r#"{"required":["zorble"]}"#),
            ("unknown keyword value", r#"{"hint":"zorble"}"#),
            ("unknown keyword name", r#"{"zorble":true}"#),
            ("x- extension", r#"{"x-note":"zorble"}"#),
            ("type that is not a type", r#"{"type":"zorble"}"#),
            ("type that looks versioned", r#"{"type":"zorble_20250305"}"#),
            ("type array", r#"{"type":["string","zorble"]}"#),
            ("enum", r#"{"enum":["zorble"]}"#),
            ("const", r#"{"const":{"zorble":1}}"#),
            ("default", r#"{"default":"zorble"}"#),
            ("examples", r#"{"examples":[["zorble"]]}"#),
            (
                "dependentRequired",
                r#"{"dependentRequired":{"a":["zorble"]}}"#,
            ),
            (
                "patternProperties",
                r#"{"patternProperties":{"^zorble":{}}}"#,
            ),
            ("anyOf", r#"{"anyOf":[{"title":"zorble"}]}"#),
            (
                "discriminator",
                r#"{"discriminator":{"propertyName":"zorble"}}"#,
            ),
            (
                "grammar definition",
                r#"{"format":{"type":"grammar","grammar":{"syntax":"lark","definition":"start: \"zorble\""}}}"#,
            ),
            (
                "user location",
                r#"{"type":"web_search","user_location":{"type":"approximate","city":"zorble"}}"#,
            ),
            ("contentMediaType", r#"{"contentMediaType":"text/zorble"}"#),
        ];
        for (case, schema) in cases {
            let v: Value = serde_json::from_str(schema).unwrap();
            let got = read(&v);
            assert!(
                got.iter().any(|(t, _)| t.contains("zorble")),
                "{case}: {got:?}"
            );
        }
    }

    #[test]
    fn vocabulary_types_and_credentials_are_not_read() {
        let got = read(&serde_json::json!({
            "type": "object", "strict": true, "additionalProperties": false,
            "properties": {"n": {"type": ["integer", "null"], "minimum": 1}},
            "headers": {"Authorization": "Bearer sk-secret"}, "authorization": "sk-secret"
        }));
        assert_eq!(got, vec![("n".into(), "tools[0].properties.n".into())]);
    }
}
