#!/usr/bin/env python3
"""The benchmark policies' 20 rules as the peers' own guardrails, for bench/proxy/run.sh.

    peer_rules.py portkey  POLICY_DIR MOCK_URL   -> the x-portkey-config header value (JSON)
    peer_rules.py litellm  POLICY_DIR            -> LiteLLM content-filter patterns (YAML lines)
    peer_rules.py patterns POLICY_DIR            -> one pattern a line (for reading)

Every rule becomes one regular expression with the same text: a `regex` rule as written, a
`keywords` rule as the alternation of its keywords, each keyword's words joined by what guardgate
lets stand between them (`[ _.-]+`) and bounded as guardgate bounds them (a word boundary or an
underscore). What does not carry over is said where the numbers are quoted: guardgate lower-cases
and folds the text first (`leet`, look-alike characters) and reads every message; the peers'
patterns run case-sensitive on what their guardrail reads.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

KW_EDGE = r"(?:\b|_)"
KW_GAP = r"[ _.\-]+"


def rules(policy_dir):
    out = []
    for path in sorted(Path(policy_dir).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        parts = text.split("+++")
        if len(parts) < 3:
            sys.exit(f"{path}: no +++ front matter")
        meta = tomllib.loads(parts[1])
        for rule in meta.get("rules", []):
            if "regex" in rule:
                pattern = rule["regex"]
            else:
                alts = []
                for kw in rule["keywords"]:
                    words = [w for w in re.split(r"[\s_\-]+", kw.lower()) if w]
                    alts.append(KW_GAP.join(re.escape(w) for w in words))
                pattern = KW_EDGE + "(?:" + "|".join(alts) + ")" + KW_EDGE
            out.append((f"{meta['id']}/{rule['id']}", pattern))
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    what, policy_dir = sys.argv[1], sys.argv[2]
    found = rules(policy_dir)
    if len(found) != 20:
        sys.exit(f"expected the 20 benchmark rules in {policy_dir}, found {len(found)}")
    if what == "portkey":
        mock = sys.argv[3]
        # One guardrail per rule; `not: true` makes a match the failing verdict, and `deny`
        # turns a failed input guardrail into a refusal (HTTP 446) instead of a logged result.
        guardrails = [
            {"deny": True, "default.regexMatch": {"rule": pattern, "not": True}}
            for _, pattern in found
        ]
        config = {
            "provider": "openai",
            "api_key": "sk-bench-not-a-real-key",
            "custom_host": mock,
            "input_guardrails": guardrails,
        }
        print(json.dumps(config, separators=(",", ":")))
    elif what == "litellm":
        for name, pattern in found:
            print("          - pattern_type: regex")
            print(f"            name: {json.dumps(name)}")
            print(f"            pattern: {json.dumps(pattern)}")
            print("            action: BLOCK")
    elif what == "patterns":
        for name, pattern in found:
            print(f"{name}\t{pattern}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
