//! Policy profiles: named sets of policy bindings, chosen per request by ordered matchers (the
//! client's API key by its SHA-256, a trusted header, the request's `model`, the route), with one
//! default profile and an `unknown_profile` rule for a request no matcher places.
//!
//! The profiles file is read and bound by the same snapshot build as the policies
//! (`registry::build_snapshot`), so one `Snapshot` holds the policies and the profiles of one
//! generation, and a file that does not load keeps the live snapshot like a bad policy does.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bind::{bind_selections, Capability, RouteBinding};
use super::binding::FailMode;
use super::file::Policy;
use crate::config::RoutePolicy;

/// What happens to a request that no matcher places, or whose trusted header names a profile
/// that does not exist.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownProfile {
    /// It gets the default profile.
    Default,
    /// It is refused with a 403 in the API's error shape.
    Refuse,
}

impl UnknownProfile {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownProfile::Default => "default",
            UnknownProfile::Refuse => "refuse",
        }
    }
}

/// The profiles file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    pub unknown_profile: UnknownProfile,
    /// Headers the operator vouches for (set by an auth proxy in front of the gateway, which
    /// drops any the client sent); only these may select a profile.
    #[serde(default)]
    pub trusted_headers: Vec<String>,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default, rename = "match")]
    pub matchers: Vec<MatchConfig>,
    /// SHA-256 of the file's bytes.
    #[serde(skip)]
    pub content_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub name: String,
    #[serde(default)]
    pub default: bool,
    /// Overrides the route's fail mode for requests of this profile.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// Bound like a route's `policies`.
    #[serde(default)]
    pub policies: Vec<RoutePolicy>,
    /// What a blocked client of this profile reads when the policy that fired sets no refusal
    /// (before the route's).
    #[serde(default)]
    pub refusal: Option<crate::policy::refusal::Refusal>,
    /// Like a route's `model_call`, for this profile's policies.
    #[serde(default)]
    pub model_call: crate::config::ModelCall,
}

/// One `[[match]]` entry: exactly one selector, and the profile it selects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Absent only for a header matcher without `value`, whose header names the profile.
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub api_key_sha256: Option<Vec<String>>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
}

/// A profile with its policies bound.
#[derive(Debug)]
pub struct Profile {
    pub name: Arc<str>,
    pub default: bool,
    pub fail_mode: Option<FailMode>,
    pub refusal: Option<Arc<crate::policy::refusal::Refusal>>,
    pub binding: RouteBinding,
}

#[derive(Debug)]
pub enum Selector {
    /// SHA-256 digests of the API keys.
    Keys(HashSet<[u8; 32]>),
    /// A trusted header (lower case); with a value, that value selects the matcher's profile;
    /// without, the header's value is the profile's name.
    Header {
        name: String,
        value: Option<String>,
    },
    /// The request's `model`: exact, or a prefix when written with a trailing `*`.
    Model {
        pattern: String,
        prefix: bool,
    },
    Route(String),
}

#[derive(Debug)]
pub struct Matcher {
    pub selector: Selector,
    /// Index into `Profiles::list`; `None` for a header that names the profile itself.
    pub profile: Option<usize>,
}

/// The bound profiles of one snapshot.
#[derive(Debug)]
pub struct Profiles {
    pub path: PathBuf,
    /// SHA-256 of the file: a reload with the same bytes changes nothing.
    pub content_hash: String,
    pub unknown: UnknownProfile,
    pub trusted_headers: Vec<String>,
    pub list: Vec<Profile>,
    pub default: usize,
    pub matchers: Vec<Matcher>,
    /// Whether some matcher reads the API key (only then is the presented key hashed).
    pub uses_keys: bool,
    /// Whether some matcher reads the request's `model` (only then must the body be parsed
    /// before the bindings are known).
    pub uses_model: bool,
    /// The file as parsed, kept to bind it again when the reload gate swaps a policy version.
    pub source: Arc<ProfilesFile>,
}

/// What a request shows the matchers.
pub struct Facts<'a> {
    pub route: &'a str,
    pub model: Option<&'a str>,
    /// SHA-256 of the presented API key, when some matcher reads keys and a key was sent.
    pub key_sha256: Option<[u8; 32]>,
    /// A trusted header's value by its lower-case name (first value; none if not UTF-8).
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
}

/// Why a request's profile could not be determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Matchers exist and none matched.
    NoMatch,
    /// A trusted header named a profile that does not exist.
    NoSuchProfile,
}

impl Unknown {
    /// The reason a refused client reads: never the key or the header's value.
    pub fn reason(self) -> &'static str {
        match self {
            Unknown::NoMatch => "no policy profile applies to this request's credentials",
            Unknown::NoSuchProfile => "the request names a policy profile that does not exist",
        }
    }
}

/// Which profile a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// By a matcher, or the default when there are no matchers.
    Profile(usize),
    /// Not determined; `unknown_profile` decided: `Some(default)` or `None` (refuse).
    Unknown(Unknown, Option<usize>),
}

impl Profiles {
    /// The profile for a request, first matching matcher first.
    pub fn select(&self, facts: &Facts<'_>) -> Selected {
        if self.matchers.is_empty() {
            return Selected::Profile(self.default);
        }
        for m in &self.matchers {
            let hit = match &m.selector {
                Selector::Keys(set) => facts.key_sha256.is_some_and(|k| set.contains(&k)),
                Selector::Header { name, value } => match ((facts.header)(name), value) {
                    (None, _) => false,
                    (Some(got), Some(want)) => got == want,
                    (Some(got), None) => {
                        return match self.list.iter().position(|p| &*p.name == got) {
                            Some(i) => Selected::Profile(i),
                            None => self.unknown(Unknown::NoSuchProfile),
                        };
                    }
                },
                Selector::Model { pattern, prefix } => facts.model.is_some_and(|m| {
                    if *prefix {
                        m.starts_with(pattern.as_str())
                    } else {
                        m == pattern
                    }
                }),
                Selector::Route(r) => facts.route == r,
            };
            if hit {
                if let Some(i) = m.profile {
                    return Selected::Profile(i);
                }
            }
        }
        self.unknown(Unknown::NoMatch)
    }

    fn unknown(&self, why: Unknown) -> Selected {
        match self.unknown {
            UnknownProfile::Default => Selected::Unknown(why, Some(self.default)),
            UnknownProfile::Refuse => Selected::Unknown(why, None),
        }
    }
}

/// SHA-256 of an API key, as the `api_key_sha256` entries are written (lower-case hex).
pub fn key_sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// An error naming the file and the key (`match[2].header`), like config errors do.
fn err(path: &Path, key: impl std::fmt::Display, reason: impl std::fmt::Display) -> String {
    format!("{}: {key}: {reason}", path.display())
}

/// Reads and checks the profiles file; the policies are bound by [`bind`].
pub fn parse(path: &Path, text: &str) -> Result<ProfilesFile, Vec<String>> {
    let mut file: ProfilesFile = toml::from_str(text).map_err(|e| {
        let key = e
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            })
            .unwrap_or_else(|| "-".into());
        vec![err(path, key, e.message())]
    })?;
    file.content_hash = hex::encode(Sha256::digest(text.as_bytes()));
    Ok(file)
}

/// Checks the file and binds each profile's policies; problems are pushed onto `errors`.
pub fn bind(
    path: &Path,
    file: Arc<ProfilesFile>,
    policies: &BTreeMap<String, Arc<Policy>>,
    candidates: &BTreeMap<String, Arc<Policy>>,
    routes: &[String],
    capability: &dyn Capability,
    errors: &mut Vec<String>,
) -> Option<Profiles> {
    let before = errors.len();
    let mut trusted = Vec::new();
    for (i, h) in file.trusted_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            errors.push(err(
                path,
                format!("trusted_headers[{i}]"),
                format!("{h:?} is not a header name"),
            ));
        }
        trusted.push(h.to_ascii_lowercase());
    }
    let mut list = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in file.profiles.iter().enumerate() {
        let key = format!("profile[{i}]");
        if p.name.trim().is_empty() {
            errors.push(err(path, format!("{key}.name"), "empty"));
        }
        if !names.insert(p.name.as_str()) {
            errors.push(err(
                path,
                format!("{key}.name"),
                format!("duplicate profile {:?}", p.name),
            ));
        }
        for (j, sel) in p.policies.iter().enumerate() {
            if let Err((k, reason)) = sel.validate() {
                errors.push(err(path, format!("{key}.policies[{j}].{k}"), reason));
            }
        }
        if let Some(r) = &p.refusal {
            if let Err((k, reason)) = r.validate() {
                errors.push(err(path, format!("{key}.refusal.{k}"), reason));
            }
        }
        let label = format!("{}: profile {:?}", path.display(), p.name);
        let binding = bind_selections(
            &label,
            &p.policies,
            Ok(()),
            policies,
            candidates,
            capability,
            errors,
        )
        .model_call(p.model_call);
        list.push(Profile {
            name: Arc::from(p.name.as_str()),
            default: p.default,
            fail_mode: p.fail_mode,
            refusal: p.refusal.clone().map(Arc::new),
            binding,
        });
    }
    let defaults: Vec<usize> = (0..list.len()).filter(|&i| list[i].default).collect();
    if defaults.len() != 1 {
        errors.push(err(
            path,
            "profile",
            format!(
                "exactly one profile must have default = true (found {})",
                defaults.len()
            ),
        ));
    }
    let index = |name: &str| list.iter().position(|p| &*p.name == name);
    let mut matchers = Vec::new();
    for (i, m) in file.matchers.iter().enumerate() {
        let key = format!("match[{i}]");
        let selectors = [
            m.api_key_sha256.is_some(),
            m.header.is_some(),
            m.model.is_some(),
            m.route.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            errors.push(err(
                path,
                &key,
                "name exactly one of api_key_sha256, header, model, route",
            ));
            continue;
        }
        if m.value.is_some() && m.header.is_none() {
            errors.push(err(
                path,
                format!("{key}.value"),
                "only a header matcher has a value",
            ));
            continue;
        }
        let names_itself = m.header.is_some() && m.value.is_none();
        let profile = match (&m.profile, names_itself) {
            (Some(_), true) => {
                errors.push(err(
                    path,
                    format!("{key}.profile"),
                    "a header matcher without `value` takes the profile's name from the header: \
                     give `value` or drop `profile`",
                ));
                continue;
            }
            (None, true) => None,
            (None, false) => {
                errors.push(err(path, format!("{key}.profile"), "required"));
                continue;
            }
            (Some(name), false) => match index(name) {
                Some(i) => Some(i),
                None => {
                    errors.push(err(
                        path,
                        format!("{key}.profile"),
                        format!("no profile named {name:?}"),
                    ));
                    continue;
                }
            },
        };
        let selector = if let Some(hashes) = &m.api_key_sha256 {
            let mut set = HashSet::new();
            for (j, h) in hashes.iter().enumerate() {
                let mut d = [0u8; 32];
                if h.len() != 64 || hex::decode_to_slice(h, &mut d).is_err() {
                    // The entry is not echoed: someone may have pasted the key itself.
                    errors.push(err(
                        path,
                        format!("{key}.api_key_sha256[{j}]"),
                        "expected 64 hex digits (the key's SHA-256; see `guardgate profiles hash-key`)",
                    ));
                    continue;
                }
                set.insert(d);
            }
            if hashes.is_empty() {
                errors.push(err(
                    path,
                    format!("{key}.api_key_sha256"),
                    "name at least one hash",
                ));
            }
            Selector::Keys(set)
        } else if let Some(h) = &m.header {
            let name = h.to_ascii_lowercase();
            if !trusted.contains(&name) {
                errors.push(err(
                    path,
                    format!("{key}.header"),
                    format!("{h:?} is not listed in trusted_headers"),
                ));
                continue;
            }
            Selector::Header {
                name,
                value: m.value.clone(),
            }
        } else if let Some(model) = &m.model {
            let (pattern, prefix) = match model.strip_suffix('*') {
                Some(p) => (p.to_string(), true),
                None => (model.clone(), false),
            };
            if pattern.is_empty() || pattern.contains('*') {
                errors.push(err(
                    path,
                    format!("{key}.model"),
                    "a model name, or a prefix with one trailing `*`",
                ));
                continue;
            }
            Selector::Model { pattern, prefix }
        } else {
            let r = m.route.clone().unwrap_or_default();
            if !routes.contains(&r) {
                errors.push(err(
                    path,
                    format!("{key}.route"),
                    format!("no route named {r:?}"),
                ));
                continue;
            }
            Selector::Route(r)
        };
        matchers.push(Matcher { selector, profile });
    }
    if errors.len() > before {
        return None;
    }
    let uses_keys = matchers
        .iter()
        .any(|m| matches!(m.selector, Selector::Keys(_)));
    let uses_model = matchers
        .iter()
        .any(|m| matches!(m.selector, Selector::Model { .. }));
    Some(Profiles {
        path: path.to_path_buf(),
        content_hash: file.content_hash.clone(),
        unknown: file.unknown_profile,
        trusted_headers: trusted,
        default: defaults[0],
        list,
        matchers,
        uses_keys,
        uses_model,
        source: file,
    })
}

/// Reads, parses and binds the profiles file at `path`.
pub fn load(
    path: &Path,
    policies: &BTreeMap<String, Arc<Policy>>,
    candidates: &BTreeMap<String, Arc<Policy>>,
    routes: &[String],
    capability: &dyn Capability,
    errors: &mut Vec<String>,
) -> Option<Profiles> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(err(path, "-", format!("cannot read: {e}")));
            return None;
        }
    };
    match parse(path, &text) {
        Ok(file) => bind(
            path,
            Arc::new(file),
            policies,
            candidates,
            routes,
            capability,
            errors,
        ),
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::binding::Direction;

    struct AnyBackend;

    impl Capability for AnyBackend {
        fn unsupported(&self, _policy: &Policy) -> Option<String> {
            None
        }
    }

    fn policies() -> BTreeMap<String, Arc<Policy>> {
        let mut m = BTreeMap::new();
        for id in ["t/a", "t/b"] {
            let text = format!("+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1\"\ndirections = [\"input\", \"output\"]\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n[[rules]]\nid = \"r\"\ncode = \"X1\"\nkeywords = [\"zorble\"]\n+++\nbody\n");
            let p = crate::policy::parse_policy(Path::new("p.md"), text.as_bytes()).unwrap();
            m.insert(id.to_string(), Arc::new(p));
        }
        m
    }

    fn load_text(text: &str) -> Result<Profiles, Vec<String>> {
        let file = parse(Path::new("profiles.toml"), text)?;
        let mut errors = Vec::new();
        let routes = vec!["chat".to_string(), "messages".to_string()];
        let p = bind(
            Path::new("profiles.toml"),
            Arc::new(file),
            &policies(),
            &BTreeMap::new(),
            &routes,
            &AnyBackend,
            &mut errors,
        );
        p.ok_or(errors)
    }

    const BASE: &str = r#"
unknown_profile = "refuse"
trusted_headers = ["X-Tenant"]
[[profile]]
name = "standard"
default = true
policies = [{ select = "t/a" }]
[[profile]]
name = "strict"
fail_mode = "closed"
policies = [{ select = "t/*", directions = ["input", "output"] }]
"#;

    fn facts<'a>(
        route: &'a str,
        model: Option<&'a str>,
        key: Option<&str>,
        header: &'a dyn Fn(&str) -> Option<&'a str>,
    ) -> Facts<'a> {
        Facts {
            route,
            model,
            key_sha256: key.map(|k| Sha256::digest(k.as_bytes()).into()),
            header,
        }
    }

    #[test]
    fn matchers_in_order_and_the_unknown_rule() {
        let text = format!(
            "{BASE}\n[[match]]\napi_key_sha256 = [\"{}\"]\nprofile = \"strict\"\n[[match]]\nheader = \"x-tenant\"\nvalue = \"acme\"\nprofile = \"strict\"\n[[match]]\nmodel = \"gpt-4o*\"\nprofile = \"standard\"\n[[match]]\nroute = \"messages\"\nprofile = \"strict\"\n[[match]]\nheader = \"x-tenant\"\n",
            key_sha256_hex("sk-tenant")
        );
        let p = load_text(&text).unwrap();
        assert!(p.uses_keys && p.uses_model);
        assert_eq!(p.list[1].binding.for_direction(Direction::Output).len(), 2);
        let none = |_: &str| None;
        let acme = |h: &str| (h == "x-tenant").then_some("acme");
        let names = |h: &str| (h == "x-tenant").then_some("standard");
        let bogus = |h: &str| (h == "x-tenant").then_some("nope");
        assert_eq!(
            p.select(&facts("chat", None, Some("sk-tenant"), &none)),
            Selected::Profile(1)
        );
        assert_eq!(
            p.select(&facts("chat", None, Some("sk-other"), &none)),
            Selected::Unknown(Unknown::NoMatch, None)
        );
        assert_eq!(
            p.select(&facts("chat", None, None, &acme)),
            Selected::Profile(1)
        );
        assert_eq!(
            p.select(&facts("chat", Some("gpt-4o-mini"), None, &none)),
            Selected::Profile(0)
        );
        assert_eq!(
            p.select(&facts("chat", Some("gpt-3.5"), None, &none)),
            Selected::Unknown(Unknown::NoMatch, None)
        );
        assert_eq!(
            p.select(&facts("messages", None, None, &none)),
            Selected::Profile(1)
        );
        assert_eq!(
            p.select(&facts("chat", None, None, &names)),
            Selected::Profile(0)
        );
        assert_eq!(
            p.select(&facts("chat", None, None, &bogus)),
            Selected::Unknown(Unknown::NoSuchProfile, None)
        );
        let lenient = load_text(&text.replace("\"refuse\"", "\"default\"")).unwrap();
        assert_eq!(
            lenient.select(&facts("chat", None, None, &bogus)),
            Selected::Unknown(Unknown::NoSuchProfile, Some(0))
        );
    }

    #[test]
    fn no_matchers_means_the_default() {
        let p = load_text(BASE).unwrap();
        let none = |_: &str| None;
        assert!(!p.uses_keys && !p.uses_model);
        assert_eq!(
            p.select(&facts("chat", None, Some("k"), &none)),
            Selected::Profile(0)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                format!(
                    "{BASE}[[match]]\nheader = \"x-user\"\nvalue = \"a\"\nprofile = \"strict\"\n"
                ),
                "match[0].header",
            ),
            (
                format!("{BASE}[[match]]\nroute = \"chat\"\nmodel = \"m\"\nprofile = \"strict\"\n"),
                "match[0]:",
            ),
            (
                format!(
                    "{BASE}[[match]]\napi_key_sha256 = [\"sk-live-123\"]\nprofile = \"strict\"\n"
                ),
                "match[0].api_key_sha256[0]",
            ),
            (
                format!("{BASE}[[match]]\nroute = \"nope\"\nprofile = \"strict\"\n"),
                "match[0].route",
            ),
            (
                format!("{BASE}[[match]]\nroute = \"chat\"\nprofile = \"gone\"\n"),
                "match[0].profile",
            ),
            (
                format!("{BASE}[[match]]\nroute = \"chat\"\n"),
                "match[0].profile",
            ),
            (
                format!("{BASE}[[match]]\nmodel = \"a*b*\"\nprofile = \"strict\"\n"),
                "match[0].model",
            ),
            (BASE.replace("default = true", ""), "profile:"),
            (
                BASE.replace("\"strict\"", "\"standard\""),
                "profile[1].name",
            ),
            (
                BASE.replace("select = \"t/a\"", "select = \"t/a\", sample_rate = 2.0"),
                "profile[0].policies[0].sample_rate",
            ),
            (
                BASE.replace("select = \"t/a\"", "select = \"zz/*\""),
                "profile \"standard\"",
            ),
            (BASE.replace("unknown_profile = \"refuse\"", ""), "line"),
            (
                format!("{BASE}[[match]]\nroute = \"chat\"\nprofile = \"strict\"\nextra = 1\n"),
                "line",
            ),
        ];
        for (text, key) in cases {
            let errs = load_text(&text)
                .err()
                .unwrap_or_else(|| panic!("loads: {text}"));
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("profiles.toml: ") && e.contains(key)),
                "{key}: {errs:?}"
            );
            assert!(!errs.iter().any(|e| e.contains("sk-live-123")), "{errs:?}");
        }
    }

    /// The documented example binds against the repository's policies and the default config's
    /// routes.
    #[test]
    fn the_example_file_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = crate::config::Config::load(&root.join("config/guardgate.toml")).unwrap();
        let snap = crate::policy::registry::build_snapshot_with(
            &cfg.policy_dirs(),
            Some(&root.join("config/profiles.example.toml")),
            &cfg.routes,
            &AnyBackend,
            1,
        )
        .unwrap();
        let p = snap.profiles.expect("profiles");
        assert_eq!(p.list.len(), 3);
        assert_eq!(&*p.list[p.default].name, "standard");
        assert_eq!(p.matchers.len(), 5);
        let test_key: [u8; 32] = Sha256::digest(b"test").into();
        let none = |_: &str| None;
        let f = facts("openai-chat", None, None, &none);
        let f = Facts {
            key_sha256: Some(test_key),
            ..f
        };
        assert_eq!(p.select(&f), Selected::Profile(1));
    }

    #[test]
    fn key_hash_is_sha256_hex() {
        assert_eq!(
            key_sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
