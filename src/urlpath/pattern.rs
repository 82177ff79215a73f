//! Path patterns (`/openai/deployments/{deployment}/chat/completions`) and endpoints
//! (`GET /v1/models/{model}`): what routes and the allow list are written in. A `{name}` segment
//! stands for any one segment; other segments match ignoring ASCII case and the encodings
//! [`check`](super::check) accepts.

use std::fmt;

use super::rule::{check, comparable};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// In the compared form (see [`comparable`]).
    Literal(String),
    /// `{name}`: any one segment.
    Any,
}

#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

/// The segments of an absolute path; none for `/`.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').filter(move |_| !rest.is_empty())
}

impl Pattern {
    /// A pattern is a path that meets the one-meaning rule once each `{name}` (a whole segment;
    /// letters, digits and `_`) is read as a plain segment.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if !text.starts_with('/') {
            return Err("must start with '/'".into());
        }
        let mut plain = String::with_capacity(text.len());
        let mut parts = Vec::new();
        for seg in segments(text) {
            plain.push('/');
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "{seg:?}: a placeholder is {{name}}, of letters, digits and '_'"
                        ));
                    }
                    plain.push('x');
                    parts.push(Segment::Any);
                }
                None if seg.contains(['{', '}']) => {
                    return Err(format!(
                        "{seg:?}: a placeholder {{name}} must be a whole segment"
                    ))
                }
                None => {
                    plain.push_str(seg);
                    parts.push(Segment::Literal(String::new()));
                }
            }
        }
        if parts.is_empty() {
            plain.push('/');
        }
        check(&plain).map_err(|why| format!("not a path with one meaning: {why}"))?;
        // The literals in compared form, now that they are known to meet the rule.
        for (part, seg) in parts.iter_mut().zip(segments(text)) {
            if let Segment::Literal(l) = part {
                *l = comparable(seg).into_owned();
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            segments: parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compared form of the one path this pattern matches, when it has no placeholder.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => {
                    out.push('/');
                    out.push_str(l);
                }
                Segment::Any => return None,
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Some(out)
    }

    /// Whether `path`, an accepted path in compared form (see [`comparable`]), is one this
    /// pattern stands for.
    pub fn matches(&self, path: &str) -> bool {
        let mut it = segments(path);
        for s in &self.segments {
            match (s, it.next()) {
                (_, None) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(l), Some(seg)) if l == seg => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }

    /// Whether some path matches both patterns.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    _ => true,
                })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A method and a path pattern: `GET /v1/models/{model}`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: http::Method,
    pub pattern: Pattern,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let mut words = text.split_whitespace();
        let (Some(method), Some(path), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "{text:?}: expected a method and a path, e.g. \"GET /v1/models\""
            ));
        };
        if !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "{text:?}: the method is written in capitals, e.g. GET"
            ));
        }
        let method =
            http::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{text:?}: {e}"))?;
        let pattern = Pattern::parse(path).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Endpoint { method, pattern })
    }

    /// Whether a request of `method` on `path` (accepted, in compared form) is this endpoint.
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        self.method == method && self.pattern.matches(path)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::{Endpoint, Pattern};
    use crate::urlpath::comparable;

    fn matches(p: &Pattern, path: &str) -> bool {
        p.matches(&comparable(path))
    }

    #[test]
    fn placeholders_stand_for_one_segment_and_literals_ignore_case() {
        let p = Pattern::parse("/openai/deployments/{deployment}/chat/completions").unwrap();
        assert!(p.literal().is_none());
        assert!(matches(&p, "/openai/deployments/gpt-4o/chat/completions"));
        assert!(matches(&p, "/OpenAI/Deployments/GPT4/Chat/Completions"));
        assert!(!matches(&p, "/openai/deployments/chat/completions"));
        assert!(!matches(&p, "/openai/deployments/a/b/chat/completions"));
        assert!(!matches(&p, "/openai/deployments/a/chat/completions/x"));
        let lit = Pattern::parse("/V1/Chat/Completions").unwrap();
        assert_eq!(lit.literal().as_deref(), Some("/v1/chat/completions"));
        assert!(matches(&lit, "/v1/chat/completions"));
        let root = Pattern::parse("/").unwrap();
        assert_eq!(root.literal().as_deref(), Some("/"));
        assert!(matches(&root, "/"));
        assert!(!matches(&root, "/v1"));
        let colon = Pattern::parse("/v1/models/ft:x").unwrap();
        assert!(matches(&colon, "/v1/models/ft%3Ax"));
    }

    #[test]
    fn patterns_that_could_be_read_two_ways_are_refused() {
        for bad in [
            "v1/chat",
            "/v1/chat/",
            "/v1//chat",
            "/v1/../chat",
            "/v1/{}/chat",
            "/v1/{a-b}/chat",
            "/v1/x{a}/chat",
            "/v1/%2e/chat",
            "/v1/chat;x",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlapping_patterns_are_found() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("/a/{x}/c").overlaps(&p("/a/b/{y}")));
        assert!(p("/a/{x}").overlaps(&p("/A/{y}")));
        assert!(!p("/a/{x}").overlaps(&p("/a/{x}/c")));
        assert!(!p("/a/{x}/c").overlaps(&p("/a/{x}/d")));
    }

    #[test]
    fn endpoints_name_a_method_and_a_pattern() {
        let e = Endpoint::parse("GET /v1/models/{model}").unwrap();
        assert!(e.matches(&http::Method::GET, "/v1/models/gpt-4o"));
        assert!(!e.matches(&http::Method::POST, "/v1/models/gpt-4o"));
        assert_eq!(e.to_string(), "GET /v1/models/{model}");
        for bad in [
            "GET",
            "get /v1/models",
            "GET /v1/models extra",
            "GET v1/models",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
