//! Mapping file errors: every kind, with exact `file:line: key: message`; and garbage input.
use super::tests_eval::{host_workload, no_headers, pod_workload};
use super::*;

fn err(text: &str) -> String {
    match Mapping::parse("mapping.toml", text) {
        Ok(m) => panic!("parsed: {m:?}\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `[[rule]]` with the given match body lines, then a valid set.
fn rule_with_match(lines: &str) -> String {
    format!("[[rule]]\n[rule.match]\n{lines}\n[rule.set]\nteam = \"t\"\n")
}

#[test]
fn unknown_operator_names_line_and_nested_key() {
    let text = r#"# payments
[[rule]]
name = "first"
[rule.set]
team = "a"

[[rule]]
name = "second"
[rule.match]
namespace = "payments"
pod_labels = { matchExpressions = [
    { key = "tier",
      values = ["api"],
      operator = "Inn" },
] }
[rule.set]
team = "b"
"#;
    assert_eq!(
        err(text),
        "mapping.toml:14: rule[2].match.pod_labels.matchExpressions[0].operator: unknown operator \"Inn\", \
         expected one of In, NotIn, Exists, DoesNotExist"
    );
}

#[test]
fn missing_team() {
    let text =
        "[[rule]]\nname = \"a\"\nset.team = \"x\"\n\n[[rule]]\nmatch.comm = \"x\"\n\n\n[rule.set]\nproduct = \"p\"\n";
    assert_eq!(err(text), "mapping.toml:9: rule[2].set.team: missing (every rule needs set.team)");
    let text = "\n[[rule]]\nname = \"a\"\n[rule.match]\ncomm = \"x\"\n";
    assert_eq!(err(text), "mapping.toml:2: rule[1].set.team: missing (every rule needs set.team)");
    let text = "rule = [ { set = { product = \"p\" } } ]\n";
    assert_eq!(err(text), "mapping.toml:1: rule[1].set.team: missing (every rule needs set.team)");
}

#[test]
fn template_errors() {
    let text = "[[rule]]\nset.team = \"a\"\n[[rule]]\nset.team = \"b\"\n[[rule]]\n[rule.set]\nteam = \"c\"\napp = \"{labelz.x}\"\n";
    let e = err(text);
    assert!(
        e.starts_with(
            "mapping.toml:8: rule[3].set.app: unknown template variable \"{labelz.x}\", expected one of {namespace},"
        ),
        "{e}"
    );
    assert_eq!(
        err("[[rule]]\nset.team = \"{labels.team\"\n"),
        "mapping.toml:2: rule[1].set.team: unclosed \"{\" in template \"{labels.team\" (write \"{{\" for a literal brace)"
    );
    assert_eq!(
        err("[[rule]]\nset = { team = \"{annotations.}\" }\n"),
        "mapping.toml:2: rule[1].set.team: template variable \"{annotations.}\" needs a name after \"annotations.\""
    );
    assert_eq!(err("[[rule]]\nset.team = \"  \"\n"), "mapping.toml:2: rule[1].set.team: must not be empty");
    assert_eq!(
        err("[[rule]]\nset.team = \"{header.x y}\"\n"),
        "mapping.toml:2: rule[1].set.team: template variable \"{header.x y}\": invalid header name \"x y\": ' ' is not allowed in a header name"
    );
    assert_eq!(
        err("[unattributed]\nteam = \"{namespace}\"\n"),
        "mapping.toml:2: unattributed.team: templates are not allowed in [unattributed]: use plain text"
    );
}

#[test]
fn selector_value_rules() {
    let e =
        err(&rule_with_match(r#"pod_labels = { matchExpressions = [ { key = "a", operator = "In", values = [] } ] }"#));
    assert_eq!(e, "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].values: operator In needs a non-empty list of values");
    let e = err(&rule_with_match("pod_annotations = { matchExpressions = [\n  { key = \"a\", operator = \"Exists\" },\n  { key = \"b\", operator = \"NotIn\" },\n] }"));
    assert_eq!(e, "mapping.toml:5: rule[1].match.pod_annotations.matchExpressions[1].values: operator NotIn needs a non-empty list of values");
    let e = err(&rule_with_match(
        r#"pod_labels = { matchExpressions = [ { key = "a", operator = "Exists", values = ["x"] } ] }"#,
    ));
    assert_eq!(
        e,
        "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].values: operator Exists takes no values"
    );
    let e = err(&rule_with_match(
        r#"pod_labels = { matchExpressions = [ { key = "a", operator = "DoesNotExist", values = ["x"] } ] }"#,
    ));
    assert_eq!(
        e,
        "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].values: operator DoesNotExist takes no values"
    );
    let e = err(&rule_with_match(r#"pod_labels = { matchExpressions = [ { operator = "Exists" } ] }"#));
    assert_eq!(e, "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].key: missing");
    let e = err(&rule_with_match(r#"pod_labels = { matchExpressions = [ { key = "a" } ] }"#));
    assert_eq!(e, "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].operator: missing");
    let e = err(&rule_with_match(
        r#"pod_labels = { matchExpressions = [ { key = "a", operator = "in", values = ["x"] } ] }"#,
    ));
    assert!(e.ends_with("operator: unknown operator \"in\", expected one of In, NotIn, Exists, DoesNotExist"), "{e}");
    let e = err(&rule_with_match(r#"pod_labels = { matchLabels = { "app.kubernetes.io/name" = 1 } }"#));
    assert_eq!(e, "mapping.toml:3: rule[1].match.pod_labels.matchLabels.\"app.kubernetes.io/name\": expected a string, found integer");
    let e = err(&rule_with_match(r#"pod_labels = { matchExpressions = { key = "a" } }"#));
    assert_eq!(e, "mapping.toml:3: rule[1].match.pod_labels.matchExpressions: expected a list of tables, found table");
    let e = err(&rule_with_match(
        r#"pod_labels = { matchExpressions = [ { key = "a", operator = "In", values = "x" } ] }"#,
    ));
    assert_eq!(
        e,
        "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].values: expected a list of strings, found string"
    );
}

#[test]
fn invalid_globs() {
    let e = err(&rule_with_match(r#"namespace = ["ok", "team-[ab]"]"#));
    assert_eq!(
        e,
        "mapping.toml:3: rule[1].match.namespace[1]: invalid glob \"team-[ab]\": '[' is not supported (no character \
         classes or {a,b} alternation; write \"\\[\" to match it literally)"
    );
    let e = err(&rule_with_match("\n\ncgroup_path = '/kubepods\\'"));
    assert_eq!(
        e,
        "mapping.toml:5: rule[1].match.cgroup_path: invalid glob \"/kubepods\\\\\": trailing \"\\\" escapes nothing"
    );
    let e = err(&rule_with_match(r#"headers = { "x-team" = "{a,b}" }"#));
    assert!(e.starts_with("mapping.toml:3: rule[1].match.headers.x-team: invalid glob \"{a,b}\""), "{e}");
}

#[test]
fn wrong_types() {
    let cases: &[(&str, &str)] = &[
        ("namespace = 1", "rule[1].match.namespace: expected a string or a list of strings, found integer"),
        ("namespace = [\"a\", 2]", "rule[1].match.namespace[1]: expected a string, found integer"),
        ("namespace = []", "rule[1].match.namespace: empty list: give at least one pattern (or remove the key)"),
        ("exe = true", "rule[1].match.exe: expected a string or a list of strings, found boolean"),
        ("uid = \"1000\"", "rule[1].match.uid: expected an integer or a list of integers, found string"),
        ("uid = [1, \"2\"]", "rule[1].match.uid[1]: expected an integer, found string"),
        ("uid = -1", "rule[1].match.uid: uid -1 is out of range (0 to 4294967295)"),
        ("uid = 4294967296", "rule[1].match.uid: uid 4294967296 is out of range (0 to 4294967295)"),
        ("uid = []", "rule[1].match.uid: empty list: give at least one uid (or remove the key)"),
        ("uid = 1.5", "rule[1].match.uid: expected an integer or a list of integers, found float"),
        ("headers = \"x-team\"", "rule[1].match.headers: expected a table, found string"),
        (
            "headers = { \"x team\" = \"a\" }",
            "rule[1].match.headers.\"x team\": invalid header name \"x team\": ' ' is not allowed in a header name",
        ),
        (
            "headers = { \"x-a\" = \"1\", \"X-A\" = \"2\" }",
            "rule[1].match.headers.X-A: header \"x-a\" is listed twice (names are case-insensitive)",
        ),
        (
            "headers = { \"x-a\" = 1 }",
            "rule[1].match.headers.x-a: expected a string or a list of strings, found integer",
        ),
        ("pod_labels = \"team=a\"", "rule[1].match.pod_labels: expected a table, found string"),
        (
            "pod_labels = { matchLabels = [\"a\"] }",
            "rule[1].match.pod_labels.matchLabels: expected a table, found array",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(err(&rule_with_match(body)), format!("mapping.toml:3: {want}"), "{body}");
    }
    assert_eq!(
        err("[[rule]]\nmatch = \"all\"\nset.team = \"a\"\n"),
        "mapping.toml:2: rule[1].match: expected a table, found string"
    );
    assert_eq!(err("[[rule]]\nset = \"a\"\n"), "mapping.toml:2: rule[1].set: expected a table, found string");
    assert_eq!(err("[[rule]]\nset.team = 7\n"), "mapping.toml:2: rule[1].set.team: expected a string, found integer");
    assert_eq!(
        err("[[rule]]\nname = 7\nset.team = \"a\"\n"),
        "mapping.toml:2: rule[1].name: expected a string, found integer"
    );
    assert_eq!(
        err("[rule]\nset.team = \"a\"\n"),
        "mapping.toml:1: rule: expected an array of tables ([[rule]]), found table"
    );
    assert_eq!(err("rule = [1]\n"), "mapping.toml:1: rule[1]: expected a table, found integer");
    assert_eq!(err("unattributed = \"x\"\n"), "mapping.toml:1: unattributed: expected a table, found string");
    assert_eq!(
        err("[unattributed]\nteam = 1\n"),
        "mapping.toml:2: unattributed.team: expected a string, found integer"
    );
    assert_eq!(err("[unattributed]\nteam = \"\\n\"\n"), "mapping.toml:2: unattributed.team: must not be empty");
}

#[test]
fn unknown_keys_everywhere() {
    let all = "namespace, workload, workload_kind, pod_labels, pod_annotations, container_image, container_name, \
               systemd_unit, cgroup_path, exe, exe_name, comm, user, uid, headers";
    assert_eq!(
        err("[[rule]]\n[rule.match]\ncomm = \"x\"\nlabels = { team = \"a\" }\n[rule.set]\nteam = \"t\"\n"),
        format!("mapping.toml:4: rule[1].match.labels: unknown key \"labels\", expected one of {all}")
    );
    assert_eq!(
        err("[[rules]]\nset.team = \"a\"\n"),
        "mapping.toml:1: rules: unknown key \"rules\", expected one of unattributed, rule"
    );
    assert_eq!(
        err("[[rule]]\nset.team = \"a\"\ndescription = \"x\"\n"),
        "mapping.toml:3: rule[1].description: unknown key \"description\", expected one of name, match, set"
    );
    assert_eq!(
        err("[[rule]]\nset.team = \"a\"\nset.owner = \"x\"\n"),
        "mapping.toml:3: rule[1].set.owner: unknown key \"owner\", expected one of team, cost_center, product, tenant, app"
    );
    assert_eq!(
        err("[unattributed]\nteam = \"a\"\nrule = \"x\"\n"),
        "mapping.toml:3: unattributed.rule: unknown key \"rule\", expected one of team, cost_center, product, tenant, app"
    );
    assert_eq!(
        err(&rule_with_match("pod_labels = { match_labels = { a = \"b\" } }")),
        "mapping.toml:3: rule[1].match.pod_labels.match_labels: unknown key \"match_labels\", expected one of matchLabels, matchExpressions"
    );
    assert_eq!(
        err(&rule_with_match("pod_labels = { matchExpressions = [ { key = \"a\", operator = \"Exists\", value = [] } ] }")),
        "mapping.toml:3: rule[1].match.pod_labels.matchExpressions[0].value: unknown key \"value\", expected one of key, operator, values"
    );
    // The first unknown key in the file is reported, whatever the alphabet says.
    assert!(err("[[rule]]\nzzz = 1\naaa = 2\nset.team = \"a\"\n").starts_with("mapping.toml:2: rule[1].zzz:"));
}

#[test]
fn rule_names() {
    assert_eq!(
        err("[[rule]]\nname = \"a\"\nset.team = \"x\"\n[[rule]]\nname = \"a\"\nset.team = \"y\"\n"),
        "mapping.toml:5: rule[2].name: duplicate rule name \"a\" (rule[1] has it)"
    );
    assert_eq!(
        err("[[rule]]\nname = \"rule-2\"\nset.team = \"x\"\n\n[[rule]]\nset.team = \"y\"\n"),
        "mapping.toml:5: rule[2].name: duplicate rule name \"rule-2\" (rule[1] has it)"
    );
    assert_eq!(err("[[rule]]\nname = \"\"\nset.team = \"x\"\n"), "mapping.toml:2: rule[1].name: must not be empty");
    assert_eq!(
        err("[[rule]]\nname = \"a\\u0007\"\nset.team = \"x\"\n"),
        "mapping.toml:2: rule[1].name: must not contain control characters"
    );
    let long = "n".repeat(129);
    assert_eq!(
        err(&format!("[[rule]]\nname = \"{long}\"\nset.team = \"x\"\n")),
        "mapping.toml:2: rule[1].name: longer than 128 characters"
    );
}

#[test]
fn syntax_errors_name_line_and_nearest_key() {
    let e = err("[[rule]]\nname = \"a\"\nset.team = \"x\"\n[[rule]]\n[rule.match]\ncomm = \"x\n");
    assert!(e.starts_with("mapping.toml:6: rule[2].match.comm: "), "{e}");
    let e = err("[[rule]]\nname = \"a\"\nname = \"b\"\n");
    assert_eq!(e, "mapping.toml:3: rule[1].name: duplicate key");
    let e = err("[unattributed\n");
    assert!(e.starts_with("mapping.toml:1: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn load_reads_files_and_reports_read_errors() {
    let dir = std::env::temp_dir().join(format!("tokentap-attr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("mapping.toml");
    std::fs::write(&good, "[[rule]]\nset.team = \"x\"\n").unwrap();
    assert_eq!(Mapping::load(&good).unwrap().rule_count(), 1);
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "\n[[rule]]\n").unwrap();
    let e = Mapping::load(&bad).unwrap_err();
    assert_eq!(
        e,
        MappingError::Invalid {
            file: bad.display().to_string(),
            line: 2,
            key: "rule[1].set.team".into(),
            message: "missing (every rule needs set.team)".into()
        }
    );
    let missing = dir.join("nope.toml");
    let e = Mapping::load(&missing).unwrap_err();
    assert!(matches!(&e, MappingError::Read { file, .. } if *file == missing.display().to_string()), "{e}");
    assert!(e.to_string().starts_with(&format!("{}: cannot read: ", missing.display())));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// xorshift64*: deterministic, dependency-free randomness for the garbage tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "[[rule]]\n",
    "[rule.match]\n",
    "[rule.set]\n",
    "[unattributed]\n",
    "[rule]\n",
    "name = ",
    "team = ",
    "app = ",
    "namespace = ",
    "uid = ",
    "headers = ",
    "pod_labels = ",
    "cgroup_path = ",
    "exe = ",
    "match.comm = ",
    "set.team = ",
    "matchLabels = ",
    "matchExpressions = ",
    "key = ",
    "operator = ",
    "values = ",
    "\"In\"",
    "\"NotIn\"",
    "\"Exists\"",
    "\"team-*\"",
    "\"**\"",
    "\"{labels.team}\"",
    "\"{header.x-team}\"",
    "\"{annotations.a.b/c}\"",
    "\"{\"",
    "\"}\"",
    "\"{{}}\"",
    "\"\\\\\"",
    "\"[\"",
    "1",
    "-1",
    "99999999999",
    "0x10",
    "1.5",
    "true",
    "1979-05-27",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "\"",
    "'",
    "\n",
    " ",
    "#",
    "é",
    "\u{0}",
    "\u{202e}",
    "\"x-team\"",
    "\"X-Team\"",
    "\"\"",
    "[]",
    "{}",
];

fn random_doc(rng: &mut Rng) -> String {
    let n = 1 + rng.below(60);
    (0..n).map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())]).collect()
}

const MATCH_LINES: &[&str] = &[
    "namespace = \"payments\"",
    "namespace = [\"a*\", \"pay?ents\"]",
    "workload = \"checkout-*\"",
    "workload_kind = \"Deployment\"",
    "pod_labels = { matchLabels = { team = \"payments\" } }",
    "pod_labels = {}",
    "pod_labels = { matchExpressions = [ { key = \"tier\", operator = \"NotIn\", values = [\"db\"] } ] }",
    "pod_annotations = { matchExpressions = [ { key = \"a/b.c\", operator = \"DoesNotExist\" } ] }",
    "container_image = \"registry.example.com/**\"",
    "container_name = \"api\"",
    "systemd_unit = \"*.service\"",
    "cgroup_path = \"/kubepods.slice/**\"",
    "exe = \"/usr/bin/*\"",
    "exe_name = [\"curl\", \"python*\"]",
    "comm = \"curl\"",
    "user = \"svc-*\"",
    "uid = [0, 1000]",
    "uid = 1000",
    "headers = { \"x-team\" = \"*\" }",
    "headers = { X-Tenant = [\"a\", \"b*\"] }",
    "namespace = 3",
    "uid = -5",
    "comm = \"[x]\"",
    "pod_labels = { matchExpressions = [ { key = \"a\", operator = \"In\" } ] }",
    "bogus = 1",
];
const SET_LINES: &[&str] = &[
    "team = \"{labels.team}\"",
    "team = \"{namespace}-{comm}\"",
    "team = \"{header.x-team}\"",
    "team = \"fixed\"",
    "team = \"{uid}/{user}/{unit}/{exe_name}/{container}/{image}/{pod}/{workload}/{workload_kind}\"",
    "cost_center = \"{annotations.billing.example.com/cost-center}\"",
    "tenant = \"{header.X-Tenant}\"",
    "product = \"p\"",
    "app = \"{{{workload}}}\"",
    "app = \"{nope}\"",
    "team = \"\"",
];

/// Well-formed TOML with random rules: mostly valid, sometimes not.
fn structured_doc(rng: &mut Rng) -> String {
    let mut doc = String::new();
    if rng.below(4) == 0 {
        doc.push_str("[unattributed]\nteam = \"nobody\"\n");
    }
    for i in 0..rng.below(6) {
        doc.push_str("[[rule]]\n");
        if rng.below(2) == 0 {
            doc.push_str(&format!("name = \"r{}\"\n", i + rng.below(2)));
        }
        if rng.below(3) > 0 {
            doc.push_str("[rule.match]\n");
            let mut used = Vec::new();
            for _ in 0..rng.below(4) {
                let line = MATCH_LINES[rng.below(MATCH_LINES.len())];
                let key = line.split(' ').next().unwrap();
                if !used.contains(&key) {
                    used.push(key);
                    doc.push_str(line);
                    doc.push('\n');
                }
            }
        }
        doc.push_str("[rule.set]\n");
        let mut used = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let line = SET_LINES[rng.below(SET_LINES.len())];
            let key = line.split(' ').next().unwrap();
            if !used.contains(&key) {
                used.push(key);
                doc.push_str(line);
                doc.push('\n');
            }
        }
    }
    doc
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => chars.insert(at, ['"', '[', ']', '{', '}', '=', '\n', '*', '\\', 'x'][rng.below(10)]),
            2 => {
                let end = (at + rng.below(40)).min(chars.len());
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.below(chars.len() + 1);
                chars.splice(to..to, copy);
            }
            _ => {
                let end = (at + rng.below(20)).min(chars.len());
                chars.drain(at..end);
            }
        }
    }
    chars.into_iter().collect()
}

fn exercise(text: &str, rng: &mut Rng) -> bool {
    match Mapping::parse("g.toml", text) {
        Ok(m) => {
            let value = FRAGMENTS[rng.below(FRAGMENTS.len())].to_string();
            let h = move |_: &str| Some(value.clone());
            for w in [pod_workload(), host_workload(), Default::default()] {
                let a = m.attribute(&w, &h);
                assert!(!a.team.is_empty() && a.team.chars().count() <= 128);
                let (b, lines) = m.explain(&w, &h);
                assert_eq!(a, b);
                assert_eq!(lines.len(), m.rule_count());
                m.attribute(&w, &no_headers);
            }
            true
        }
        Err(MappingError::Invalid { line, key, message, .. }) => {
            assert!(line >= 1 && line <= text.split('\n').count(), "line {line} for {text:?}");
            assert!(!key.is_empty() && !message.is_empty(), "{key:?} {message:?} for {text:?}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ok = 0;
    for _ in 0..5_000 {
        let doc = random_doc(&mut rng);
        exercise(&doc, &mut rng);
    }
    for _ in 0..5_000 {
        let doc = structured_doc(&mut rng);
        ok += exercise(&doc, &mut rng) as usize;
    }
    let example = include_str!("../../../deploy/examples/mapping.toml");
    let mut ok_mutants = 0;
    for _ in 0..3_000 {
        let doc = mutate(&mut rng, example);
        ok_mutants += exercise(&doc, &mut rng) as usize;
    }
    // Some inputs must get through to evaluation for the test to mean anything.
    assert!(ok > 0 && ok_mutants > 0, "ok {ok}, ok mutants {ok_mutants}");
}
