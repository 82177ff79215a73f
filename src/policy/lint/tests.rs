use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::*;
use crate::eval::cases::parse_cases;

/// A policy every rule passes: all sections, the format in Instructions, each code described,
/// each rule catching a violating example and no allowed one, 400-700 tokens.
const CLEAN: &str = r#"+++
id = "fx/gears"
title = "Gear tampering"
version = "1.0.0"

[[codes]]
code = "GT1.a"
title = "Praising gear tampering"
severity = "medium"

[[codes]]
code = "GT2.a"
title = "Instructions for tampering with gears"

[[rules]]
id = "gt-strip-the-gear"
code = "GT2.a"
keywords = ["strip the gear teeth", "grind the gear shaft"]
+++
# Gear tampering

## Instructions

Decide whether the content praises or enables tampering with gearboxes in shared machines.
Judge what the text does with the topic, not whether it names it: repair guides and accident
reports use the same words as a tampering plan.

OUTPUT FORMAT: reply with JSON only, `{"violation": 0|1, "policy_category": "<code or null>"}`:
1 with the most severe matching code, or 0 with null.

## Definitions

- **Gearbox**: the housing and gears that carry power from a motor to a machine.
- **Tampering**: deliberate damage to a gearbox meant to stop or wreck the machine.
- **Praise**: presenting tampering or the people who do it as admirable or worth copying.

## Allowed

- Repair guides, maintenance logs and accident reports about worn or broken gears.
- News and history of past tampering cases without steps to repeat them.
- Fiction that mentions tampering without a working method.

## Violations

- **GT1.a** praising people who tamper with gears, or presenting tampering as heroic.
- **GT2.a** steps, tools or timing that would help someone damage a gearbox on purpose.

## Ambiguity

A question about why gears wear out is 0 unless it asks how to cause the wear on purpose. Quoting
a tamperer in a news story is 0. When a text both praises and instructs, answer with GT2.a, the
higher tier. If the intent cannot be read from the text, answer 0 unless it contains a method.

## Examples

- "Why do the gear teeth wear down so fast in winter?" -> `{"violation": 0, "policy_category": null}`
- "Tell me how to strip the gear teeth on the night shift" -> `{"violation": 1, "policy_category": "GT2.a"}`
- "The people who wreck gearboxes are heroes, join them" -> `{"violation": 1, "policy_category": "GT1.a"}`
"#;

/// Lints `text` as `<name>` with an optional case file.
fn lint_as(name: &str, text: &str, cases: Option<&str>) -> Vec<Diagnostic> {
    let path = Path::new("/policies/fx").join(name);
    let cases = cases.map(|c| {
        let cpath = path.with_extension("cases.jsonl");
        let parsed = parse_cases(&cpath, c);
        (cpath, parsed)
    });
    lint_bytes(&path, text.as_bytes(), cases)
}

/// The file one table entry lints: a name, a policy text and an optional case file.
struct Bad {
    name: &'static str,
    text: String,
    cases: Option<&'static str>,
}

fn bad(text: String) -> Bad {
    Bad {
        name: "gears.md",
        text,
        cases: None,
    }
}

fn edit(from: &str, to: &str) -> String {
    assert!(CLEAN.contains(from), "the fixture lacks {from:?}");
    CLEAN.replacen(from, to, 1)
}

/// Before the closing `+++`: more front matter.
fn front(extra: &str) -> String {
    edit("+++\n# Gear", &format!("{extra}\n+++\n# Gear"))
}

/// Rule name -> a file that must trigger it.
fn bad_policies() -> Vec<(&'static str, Bad)> {
    vec![
        ("front-matter", bad(edit("version = \"1.0.0\"", "version = 1"))),
        (
            "thresholds",
            bad(front("[thresholds]\nmin_recall = 90")),
        ),
        (
            "refusal",
            bad(front("[refusal]\nmessage = \"Blocked by GT2.a.\"\nlanguage = \"en\"")),
        ),
        (
            "id-path",
            Bad {
                name: "cogs.md",
                ..bad(CLEAN.to_string())
            },
        ),
        (
            "duplicate-code",
            bad(front("[[codes]]\ncode = \"GT1.a\"\ntitle = \"Something else\"")),
        ),
        (
            "conflicting-rules",
            bad(front(
                "[[rules]]\nid = \"gt-copy\"\ncode = \"GT1.a\"\nkeywords = [\"grind the gear shaft\", \"strip the gear teeth\"]",
            )),
        ),
        ("missing-section", bad(edit("## Ambiguity", "## Edge cases"))),
        (
            "section-order",
            bad(edit("## Instructions", "## Scope\n\nGearboxes only.\n\n## Instructions")),
        ),
        (
            "output-format",
            bad(edit("OUTPUT FORMAT: reply with JSON only, `{\"violation\": 0|1, \"policy_category\": \"<code or null>\"}`:", "Reply in the usual format:")),
        ),
        (
            "unknown-code",
            bad(edit("\"policy_category\": \"GT1.a\"", "\"policy_category\": \"GT9.z\"")),
        ),
        (
            "undescribed-code",
            bad(front("[[codes]]\ncode = \"GT3.a\"\ntitle = \"Selling tampering kits\"")),
        ),
        (
            "length",
            bad(format!("{CLEAN}\n{}", "Filler sentence for the policy. ".repeat(60))),
        ),
        (
            "vague-wording",
            bad(edit("- Fiction that mentions", "- Fiction that usually mentions")),
        ),
        (
            "examples",
            bad(edit(
                "\"violation\": 1, \"policy_category\": \"GT1.a\"",
                "\"policy_category\": \"GT1.a\"",
            )),
        ),
        (
            "cases",
            Bad {
                cases: Some("{not json}\n"),
                ..bad(CLEAN.to_string())
            },
        ),
        (
            "rule-never-fires",
            bad(front(
                "[[rules]]\nid = \"gt-never\"\ncode = \"GT2.a\"\nkeywords = [\"loosen the flywheel\"]",
            )),
        ),
        (
            "rule-fires-on-allowed",
            bad(edit(
                "Why do the gear teeth wear down so fast in winter?",
                "Our manual says never grind the gear shaft",
            )),
        ),
    ]
}

#[test]
fn the_fixture_is_clean() {
    let d = lint_as("gears.md", CLEAN, None);
    assert!(d.is_empty(), "{d:#?}");
}

#[test]
fn rule_names_are_unique() {
    let mut seen = HashSet::new();
    for r in RULES {
        assert!(seen.insert(r.name()), "two rules are called {}", r.name());
    }
}

/// Every rule in the table fires on its crafted file, on its own (no other rule is run), and
/// the table of crafted files names exactly the rules there are.
#[test]
fn each_rule_fires_on_its_bad_policy() {
    let cases = bad_policies();
    let mut named: Vec<&str> = cases.iter().map(|(n, _)| *n).collect();
    let mut rules: Vec<&str> = RULES.iter().map(|r| r.name()).collect();
    named.sort_unstable();
    rules.sort_unstable();
    assert_eq!(
        named, rules,
        "each rule needs exactly one crafted bad policy"
    );
    for (name, b) in cases {
        let rule = RULES.iter().find(|r| r.name() == name).unwrap();
        let path = Path::new("/policies/fx").join(b.name);
        let case_file = b.cases.map(|c| CaseFile {
            path: path.with_extension("cases.jsonl"),
            cases: parse_cases(&path, c),
        });
        let doc = PolicyDoc::read(&path, b.text.as_bytes(), case_file)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let found = run(&[*rule], &doc);
        assert!(!found.is_empty(), "{name} did not fire");
        assert!(found.iter().all(|d| d.rule == name), "{found:#?}");
        // And through the whole table, as `policy lint` runs it.
        let all = lint_as(b.name, &b.text, b.cases);
        assert!(all.iter().any(|d| d.rule == name), "{name}: {all:#?}");
    }
}

#[test]
fn unreadable_files_are_front_matter_errors() {
    for (bytes, want) in [
        (&b"+++\nid = \"\xff\"\n+++\n"[..], "not UTF-8"),
        (&b"# no front matter\n"[..], "missing TOML front matter"),
    ] {
        let d = lint_bytes(Path::new("x.md"), bytes, None);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            (d[0].rule, d[0].level, d[0].line),
            ("front-matter", Level::Error, 1)
        );
        assert!(d[0].message.starts_with(want), "{}", d[0].message);
    }
    let d = lint_file(Path::new("/nonexistent/x.md"));
    assert!(d[0].message.starts_with("cannot read"), "{d:#?}");
}

// ---------------------------------------------------------------- lint and serve see one set

/// Always says yes: the test is about which files load, not what they need.
struct AnyBackend;

impl crate::policy::registry::Capability for AnyBackend {
    fn unsupported(&self, _: &crate::policy::Policy) -> Option<String> {
        None
    }
}

/// A loadable policy whose id is `id` (lint finds plenty wrong with it: every file it lints
/// shows up in its diagnostics).
fn tiny(id: &str) -> String {
    format!("+++\nid = \"{id}\"\ntitle = \"t\"\nversion = \"1\"\n+++\n# T\n")
}

/// The files `policy lint <dir>` checks, in the order it checks them, as it names them.
fn linted(dir: &Path) -> Vec<String> {
    let dir = dir.to_path_buf();
    // On a thread, so that a walk that never ends fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(lint_paths(&[dir])));
    let s = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("lint did not finish: a symlink loop?")
        .expect("lint");
    let mut files: Vec<String> = Vec::new();
    for d in &s.diagnostics {
        if files.last() != Some(&d.path) {
            files.push(d.path.clone());
        }
    }
    assert_eq!(files.len(), s.files, "every linted file has a finding");
    files
}

/// The files the registry loads from `dir`, in path order, as lint names them.
fn served(dir: &Path) -> Vec<String> {
    let snap = crate::policy::registry::build_snapshot(&[dir.to_path_buf()], &[], &AnyBackend, 1)
        .unwrap_or_else(|e| panic!("{e:#?}"));
    let mut files: Vec<PathBuf> = snap.policies.values().map(|p| p.path.clone()).collect();
    files.sort();
    files.iter().map(|p| p.display().to_string()).collect()
}

#[cfg(unix)]
#[test]
fn lint_checks_exactly_the_files_serve_loads() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("general/self-harm.md", &tiny("general/self-harm"));
    write("general/self-harm.cases.jsonl", "{not a policy}\n");
    write("general/README.md", "# The general pack\n");
    write("general/readme.md", "# Also not a policy\n");
    write("general/notes.txt", "not a policy\n");
    write(
        "general/NOTES.MD",
        "not a policy either: the suffix is lower case\n",
    );
    write("general/.draft.md", "hidden: an editor's swap or a draft\n");
    write(".hidden/skipped.md", "hidden directory\n");
    write("teen/deep/nested/age.md", &tiny("teen/age"));
    // A directory named like a policy is still a directory.
    write("odd.md/inner.md", &tiny("odd/inner"));
    // A file name that is not UTF-8.
    std::fs::write(
        dir.join("general")
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9.md")),
        tiny("general/cafe"),
    )
    .unwrap();
    // Two links back up the tree (a loop), a link to a sibling pack (one directory reached
    // twice), and a dangling link (a ConfigMap mid-swap).
    symlink(dir, dir.join("general/up")).unwrap();
    symlink(dir, dir.join("teen/deep/again")).unwrap();
    symlink(dir.join("teen"), dir.join("general/teen-link")).unwrap();
    symlink(dir.join("gone.md"), dir.join("general/dangling.md")).unwrap();
    // A ConfigMap volume: the real files under `..data`, reached through a visible link.
    write("..data/cm/mounted.md", &tiny("cm/mounted"));
    symlink(dir.join("..data/cm"), dir.join("cm")).unwrap();

    let lint = linted(dir);
    let serve = served(dir);
    assert_eq!(lint, serve);
    let prefix = format!("{}/", dir.display());
    let names: Vec<&str> = serve
        .iter()
        .map(|p| p.strip_prefix(&prefix).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cm/mounted.md",
            "general/caf\u{FFFD}.md",
            "general/self-harm.md",
            "general/teen-link/deep/nested/age.md",
            "odd.md/inner.md",
        ]
    );
}

/// A redact policy is checked by its own table: its body is no prompt (no sections, codes or
/// examples to find), and a policy that replaces nothing is an error.
#[test]
fn redact_policies_get_their_own_checks() {
    let ok = "+++\nid = \"fx/redact\"\ntitle = \"t\"\nversion = \"1\"\naction = \"redact\"\n[redact]\nrestore = true\n[[rules]]\nid = \"order-id\"\nregex = 'ord-\\d+'\n+++\n# Redact\nShort.\n";
    let d = lint_as("redact.md", ok, None);
    assert!(d.is_empty(), "{d:#?}");
    let nothing = ok
        .replace("[redact]\n", "[redact]\ndetect = []\n")
        .replace("[[rules]]\nid = \"order-id\"\nregex = 'ord-\\d+'\n", "");
    let d = lint_as("redact.md", &nothing, None);
    assert!(
        d.iter()
            .any(|x| x.rule == "redact" && x.level == Level::Error),
        "{d:#?}"
    );
    let coded = ok.replace("regex = ", "code = \"X\"\nregex = ");
    let d = lint_as("redact.md", &coded, None);
    assert!(
        d.iter()
            .any(|x| x.rule == "redact" && x.level == Level::Warning),
        "{d:#?}"
    );
    let output = ok.replace(
        "action = \"redact\"\n",
        "action = \"redact\"\ndirections = [\"output\"]\n",
    );
    let d = lint_as("redact.md", &output, None);
    assert!(
        d.iter()
            .any(|x| x.rule == "front-matter" && x.message.contains("input only")),
        "{d:#?}"
    );
}

#[test]
fn refusal_findings_point_at_their_key() {
    let at = |extra: &str| -> Vec<(usize, Level, &'static str)> {
        lint_as("gears.md", &front(extra), None)
            .into_iter()
            .map(|d| (d.line, d.level, d.rule))
            .collect()
    };
    // `extra` starts on the fixture's closing `+++` line.
    let first = CLEAN.lines().skip(1).position(|l| l == "+++").unwrap() + 2;
    assert_eq!(
        at("[refusal]\nmessage = \"Nope.\"\nlanguage = \"en\""),
        vec![]
    );
    assert_eq!(
        at("[refusal]\nmessage = \"Nope.\"\nlanguage = \"english\""),
        vec![(first + 2, Level::Error, "refusal")]
    );
    assert_eq!(
        at("[refusal]\nmessage = \"Nope.\"\nlanguage = \"en\"\n[refusal.messages]\nfr = \"Non.\"\n\"de-CH\" = \" \""),
        vec![(first + 5, Level::Error, "refusal")]
    );
    assert_eq!(
        at("[refusal]\nmessage = \"Nope.\"\nlanguage = \"en\"\n[refusal.messages]\nde = \"Verboten: fx/gears\""),
        vec![(first + 4, Level::Warning, "refusal")]
    );
    // An unknown key is the loader's TOML error, at its line.
    assert_eq!(
        at("[refusal]\nmessage = \"Nope.\"\nlanguage = \"en\"\ntext = \"x\""),
        vec![(first + 3, Level::Error, "front-matter")]
    );
}
