//! Rule-pack YAML format (DESIGN §4): parsing with unknown keys rejected, semantic validation
//! (ids, detectors, regexes, keyword lists, `when`, egress `models`), and error locations
//! `file:line: rule pack.id: message` for both syntax and semantic errors.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{Action, Direction, Mode, PackError, RedactStyle, Severity, ROUTES};
use crate::scan::{self, PatternKind, PatternSpec};

/// Largest accepted pack file; packs are hand-written, anything bigger is a mistake.
pub(crate) const MAX_PACK_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    pack: String,
    #[serde(default)]
    version: Option<RawVersion>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    description: Option<String>,
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawVersion {
    Int(u64),
    Float(f64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    description: String,
    #[serde(default)]
    detector: Option<String>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    keywords: Option<Vec<String>>,
    #[serde(default)]
    models: Option<OneOrMany>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    direction: Option<OneOrMany>,
    #[serde(default)]
    when: Option<RawWhen>,
    action: Action,
    #[serde(default)]
    redact: Option<RedactStyle>,
    #[serde(default)]
    severity: Option<Severity>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    #[serde(default)]
    model: Option<OneOrMany>,
    #[serde(default)]
    route: Option<OneOrMany>,
    #[serde(default)]
    caller: Option<OneOrMany>,
}

/// A string or a list of strings (`direction: request` or `direction: [request, response]`).
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A validated pack.
#[derive(Clone, Debug)]
pub(crate) struct PackDef {
    pub name: String,
    pub version: String,
    pub mode: Mode,
    pub description: Option<String>,
    pub file: String,
    pub rules: Vec<RuleDef>,
}

/// What a rule matches on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RuleMatch {
    /// `detector:` as written, and the built-in detectors it expands to (families like `api_key`).
    Detector {
        name: String,
        expanded: Vec<String>,
    },
    Regex(String),
    Keywords(Vec<String>),
    /// Egress allow-list: model globs; a request whose model matches none gets the rule's action.
    Models(Vec<String>),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WhenDef {
    pub model: Option<Vec<String>>,
    pub route: Option<Vec<String>>,
    pub caller: Option<Vec<String>>,
}

/// A validated rule.
#[derive(Clone, Debug)]
pub(crate) struct RuleDef {
    pub id: String,
    pub full_id: String,
    pub description: String,
    pub matcher: RuleMatch,
    /// Label for findings of a regex/keywords rule (`label:`, default the rule id).
    pub label: String,
    pub directions: [bool; 2],
    pub when: Option<WhenDef>,
    pub action: Action,
    pub redact: RedactStyle,
    pub severity: Option<Severity>,
    pub message: Option<String>,
}

/// Line lookups in a pack source for errors that serde cannot locate (semantic errors).
struct LineIndex<'a> {
    lines: Vec<&'a str>,
    /// (start line index, end line index exclusive) of each item of the top-level `rules:` list.
    items: Vec<(usize, usize)>,
}

/// `pack.id` of the block-style rule item around 1-based `line`, read from the text (a syntax
/// error parses nothing). The line may be the one that ended the item (bad indentation).
fn rule_id_at_line(src: &str, line: usize) -> Option<String> {
    let idx = LineIndex::new(src);
    let l = line.checked_sub(1)?;
    let &(s, e) = idx.items.iter().find(|&&(s, e)| s <= l && l <= e)?;
    let unquote = |v: &str| {
        v.split(" #")
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\''])
            .to_string()
    };
    let id = idx.lines[s..e.min(idx.lines.len())].iter().find_map(|t| {
        let t = t.trim_start();
        let t = t.strip_prefix('-').unwrap_or(t).trim_start();
        t.strip_prefix("id:").map(unquote).filter(|v| !v.is_empty())
    })?;
    let pack = idx
        .lines
        .iter()
        .find_map(|t| t.strip_prefix("pack:").map(unquote))
        .filter(|p| !p.is_empty());
    Some(match pack {
        Some(p) => format!("{p}.{id}"),
        None => id,
    })
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn significant(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// `- key: …` / `key: …` → true for `key`.
fn line_has_key(line: &str, key: &str) -> bool {
    let mut t = line.trim_start();
    if let Some(rest) = t.strip_prefix('-') {
        t = rest.trim_start();
    }
    let t = t.trim_start_matches(['"', '\'']);
    t.strip_prefix(key)
        .map(|r| {
            r.trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
        })
        .unwrap_or(false)
}

impl<'a> LineIndex<'a> {
    fn new(src: &'a str) -> Self {
        let lines: Vec<&str> = src.lines().collect();
        let mut items = Vec::new();
        if let Some(r) = lines.iter().position(|l| {
            // `rules:` opening a block list (optionally followed by a comment).
            l.strip_prefix("rules")
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .is_some_and(|rest| {
                    let rest = rest.trim();
                    rest.is_empty() || rest.starts_with('#')
                })
        }) {
            let mut item_indent = None;
            let mut starts = Vec::new();
            let mut end = lines.len();
            for (i, line) in lines.iter().enumerate().skip(r + 1) {
                if !significant(line) {
                    continue;
                }
                let ind = indent_of(line);
                let dash = line.trim_start().starts_with('-');
                match item_indent {
                    None if dash => {
                        item_indent = Some(ind);
                        starts.push(i);
                    }
                    None => {
                        end = i;
                        break;
                    }
                    Some(ii) if ind == ii && dash => starts.push(i),
                    Some(ii) if ind <= ii => {
                        end = i;
                        break;
                    }
                    Some(_) => {}
                }
            }
            for (k, s) in starts.iter().enumerate() {
                let e = starts.get(k + 1).copied().unwrap_or(end);
                items.push((*s, e));
            }
        }
        LineIndex { lines, items }
    }

    /// 1-based line of `key` within rule `i` (or of the rule's first line), falling back to the
    /// `id: <id>` line when the list layout could not be recognised (flow style).
    fn rule_line(&self, i: usize, n_rules: usize, id: &str, key: Option<&str>) -> Option<usize> {
        if self.items.len() == n_rules {
            let (s, e) = self.items.get(i).copied()?;
            if let Some(key) = key {
                let inline = |l: &str| {
                    [
                        format!("{{{key}:"),
                        format!("{{ {key}:"),
                        format!(", {key}:"),
                    ]
                    .iter()
                    .any(|k| l.contains(k.as_str()))
                };
                if let Some(l) = (s..e)
                    .find(|&l| line_has_key(self.lines[l], key))
                    .or_else(|| (s..e).find(|&l| inline(self.lines[l])))
                {
                    return Some(l + 1);
                }
            }
            return Some(s + 1);
        }
        self.lines
            .iter()
            .position(|l| line_mentions_id(l, id))
            .map(|l| l + 1)
    }

    /// 1-based line of a top-level key.
    fn top_line(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| indent_of(l) == 0 && line_has_key(l, key))
            .map(|l| l + 1)
    }
}

/// `id: x` anywhere in a line (block or flow style), not as part of another key or id.
fn line_mentions_id(line: &str, id: &str) -> bool {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(off) = line[from..].find("id:") {
        let at = from + off;
        from = at + 3;
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let rest = line[at + 3..].trim_start().trim_start_matches(['"', '\'']);
        if let Some(after) = rest.strip_prefix(id) {
            if after.is_empty() || after.starts_with([',', '}', ' ', '"', '\'', '#']) {
                return true;
            }
        }
    }
    false
}

fn valid_name(s: &str, allow_dot: bool) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (allow_dot && b == b'.')
        })
}

/// Strips serde_yaml's own `path: ` prefix and ` at line L column C` suffix (we print both better).
fn clean_serde_message(msg: &str, path: &str) -> String {
    let mut m = msg;
    if let Some((head, rest)) = m.split_once(": ") {
        if !head.is_empty()
            && !head.contains(' ')
            && path.starts_with(head)
            && head.starts_with("rules")
        {
            m = rest;
        }
    }
    if let Some(pos) = m.rfind(" at line ") {
        if m[pos + 9..].split_once(" column ").is_some_and(|(l, c)| {
            l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit())
        }) {
            m = &m[..pos];
        }
    }
    m.to_string()
}

/// Index of the rule a serde path points into: `rules[3].action` → 3.
fn rule_index_of_path(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("rules[")?;
    rest.split_once(']')?.0.parse().ok()
}

fn regex_message(msg: &str) -> String {
    // regex errors are multi-line ASCII art; the last "error: …" line is the useful part.
    let m = msg.rsplit("error: ").next().unwrap_or(msg);
    m.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Expands a `detector:` value: an exact built-in name, or a family prefix (`api_key`).
pub(crate) fn expand_detector(name: &str) -> Vec<String> {
    if scan::BUILTIN_DETECTORS.contains(&name) {
        return vec![name.to_string()];
    }
    let prefix = format!("{name}.");
    scan::BUILTIN_DETECTORS
        .iter()
        .filter(|d| d.starts_with(&prefix))
        .map(|d| d.to_string())
        .collect()
}

/// Parses and validates one pack source.
pub(crate) fn parse_pack(file: &str, src: &str) -> Result<PackDef, PackError> {
    let err = |line: Option<usize>, rule: Option<String>, message: String| PackError {
        file: file.to_string(),
        line,
        rule,
        message,
    };
    if src.len() > MAX_PACK_BYTES {
        return Err(err(
            None,
            None,
            format!("pack file larger than {MAX_PACK_BYTES} bytes"),
        ));
    }
    if !src.lines().any(significant) {
        return Err(err(
            Some(1),
            None,
            "empty rule pack (expected keys `pack` and `rules`)".into(),
        ));
    }
    let de = serde_yaml::Deserializer::from_str(src);
    let raw: RawPack = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.location().map(|l| l.line());
            let rule = rule_index_of_path(&path)
                .and_then(|i| rule_id_from_value(src, i))
                .or_else(|| line.and_then(|l| rule_id_at_line(src, l)));
            // Inside a named rule the rule id says where; elsewhere serde_yaml's own path
            // prefix (`mode: …`) stays.
            let message = if rule.is_some() {
                clean_serde_message(&inner.to_string(), &path)
            } else {
                clean_serde_message(&inner.to_string(), "")
            };
            return Err(err(line, rule, message));
        }
    };
    let idx = LineIndex::new(src);
    if !valid_name(&raw.pack, false) {
        return Err(err(
            idx.top_line("pack"),
            None,
            format!(
                "invalid pack name '{}' (use letters, digits, '-' and '_')",
                truncate(&raw.pack)
            ),
        ));
    }
    let version = match raw.version {
        None => "1".to_string(),
        Some(RawVersion::Int(v)) => v.to_string(),
        Some(RawVersion::Float(v)) => v.to_string(),
        Some(RawVersion::Str(s)) => s,
    };
    let n = raw.rules.len();
    let mut rules: Vec<RuleDef> = Vec::with_capacity(n);
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = |key: Option<&str>| idx.rule_line(i, n, &r.id, key);
        if !valid_name(&r.id, true) {
            return Err(err(
                at(Some("id")),
                None,
                format!(
                    "invalid rule id '{}' (use letters, digits, '.', '-' and '_')",
                    truncate(&r.id)
                ),
            ));
        }
        let full_id = format!("{}.{}", raw.pack, r.id);
        let rerr =
            |key: Option<&str>, message: String| err(at(key), Some(full_id.clone()), message);
        if let Some(first) = rules.iter().position(|p| p.id == r.id) {
            let first_line = idx.rule_line(first, n, &r.id, Some("id"));
            let where_ = first_line
                .map(|l| format!(" (first defined at line {l})"))
                .unwrap_or_default();
            return Err(rerr(Some("id"), format!("duplicate rule id{where_}")));
        }
        if r.description.trim().is_empty() {
            return Err(rerr(Some("description"), "description is empty".into()));
        }
        let given: Vec<&str> = [
            ("detector", r.detector.is_some()),
            ("regex", r.regex.is_some()),
            ("keywords", r.keywords.is_some()),
            ("models", r.models.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(k, _)| *k)
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() {
                "none".to_string()
            } else {
                given.join(", ")
            };
            return Err(rerr(
                None,
                format!("needs exactly one of detector, regex, keywords, models (found {found})"),
            ));
        }
        let matcher = if let Some(d) = r.detector {
            let expanded = expand_detector(&d);
            if expanded.is_empty() {
                return Err(rerr(
                    Some("detector"),
                    format!("unknown detector '{}'", truncate(&d)),
                ));
            }
            RuleMatch::Detector { name: d, expanded }
        } else if let Some(re) = r.regex {
            validate_regex(&full_id, &re).map_err(|m| rerr(Some("regex"), m))?;
            RuleMatch::Regex(re)
        } else if let Some(kw) = r.keywords {
            if kw.is_empty() {
                return Err(rerr(Some("keywords"), "keywords list is empty".into()));
            }
            if kw.iter().any(|k| k.trim().is_empty()) {
                return Err(rerr(
                    Some("keywords"),
                    "keywords contains an empty entry".into(),
                ));
            }
            RuleMatch::Keywords(kw)
        } else if let Some(OneOrMany(models)) = r.models {
            if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
                return Err(rerr(
                    Some("models"),
                    "models must be a non-empty list of non-empty model globs".into(),
                ));
            }
            if !matches!(r.action, Action::Block | Action::Flag) {
                return Err(rerr(
                    Some("action"),
                    format!(
                        "a models rule takes action block or flag (not {})",
                        r.action
                    ),
                ));
            }
            for (key, set) in [
                ("direction", r.direction.is_some()),
                ("redact", r.redact.is_some()),
                ("label", r.label.is_some()),
            ] {
                if set {
                    return Err(rerr(
                        Some(key),
                        format!("`{key}` does not apply to a models rule"),
                    ));
                }
            }
            RuleMatch::Models(models)
        } else {
            unreachable!("exactly one matcher key was checked above")
        };
        let label = match (&r.label, &matcher) {
            (Some(_), RuleMatch::Detector { .. }) => {
                return Err(rerr(
                    Some("label"),
                    "label is only for regex and keywords rules (built-in detectors keep their names)"
                        .into(),
                ));
            }
            (Some(l), _) => {
                if !valid_name(l, true) {
                    return Err(rerr(
                        Some("label"),
                        format!(
                            "invalid label '{}' (use letters, digits, '.', '-' and '_')",
                            truncate(l)
                        ),
                    ));
                }
                l.clone()
            }
            (None, _) => r.id.clone(),
        };
        let directions = match r.direction {
            None => [true, true],
            Some(OneOrMany(list)) => {
                if list.is_empty() {
                    return Err(rerr(Some("direction"), "direction list is empty".into()));
                }
                let mut d = [false, false];
                for s in &list {
                    match s.as_str() {
                        "request" => d[Direction::Request.idx()] = true,
                        "response" => d[Direction::Response.idx()] = true,
                        "both" => d = [true, true],
                        other => {
                            return Err(rerr(
                                Some("direction"),
                                format!(
                                    "unknown direction '{}' (expected request, response or both)",
                                    truncate(other)
                                ),
                            ))
                        }
                    }
                }
                d
            }
        };
        let when = match r.when {
            None => None,
            Some(w) => {
                let mut def = WhenDef::default();
                for (key, val, slot) in [
                    ("model", w.model, &mut def.model),
                    ("route", w.route, &mut def.route),
                    ("caller", w.caller, &mut def.caller),
                ] {
                    if let Some(OneOrMany(list)) = val {
                        if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
                            return Err(rerr(
                                Some(key),
                                format!("when.{key} must be a non-empty list of non-empty values"),
                            ));
                        }
                        if key == "route" {
                            if let Some(bad) = list.iter().find(|r| !ROUTES.contains(&r.as_str())) {
                                return Err(rerr(
                                    Some("route"),
                                    format!(
                                        "unknown route '{}' in when.route (expected one of {})",
                                        truncate(bad),
                                        ROUTES.join(", ")
                                    ),
                                ));
                            }
                        }
                        *slot = Some(list);
                    }
                }
                if def == WhenDef::default() {
                    return Err(rerr(
                        Some("when"),
                        "when needs at least one of model, route, caller".into(),
                    ));
                }
                Some(def)
            }
        };
        let redact = match (r.action, r.redact) {
            (Action::Redact, s) => s.unwrap_or_default(),
            (a, Some(_)) => {
                return Err(rerr(
                    Some("redact"),
                    format!("`redact` style given but action is {a} (only for action: redact)"),
                ));
            }
            (_, None) => RedactStyle::Mask,
        };
        rules.push(RuleDef {
            id: r.id,
            full_id,
            description: r.description,
            matcher,
            label,
            directions,
            when,
            action: r.action,
            redact,
            severity: r.severity,
            message: r.message,
        });
    }
    Ok(PackDef {
        name: raw.pack,
        version,
        mode: raw.mode.unwrap_or_default(),
        description: raw.description,
        file: file.to_string(),
        rules,
    })
}

/// Checks a custom regex with the scanner's own compiler (same syntax and limits as at run time)
/// and rejects regexes that match the empty string (they would "match" between every character).
fn validate_regex(label: &str, re: &str) -> Result<(), String> {
    if re.is_empty() {
        return Err("regex is empty".into());
    }
    if regex::Regex::new(re).is_ok_and(|r| r.is_match("")) {
        return Err("regex matches the empty string".into());
    }
    let spec = PatternSpec {
        label: label.to_string(),
        kind: PatternKind::Regex(re.to_string()),
    };
    if let Err(e) = scan::Matcher::new(std::slice::from_ref(&spec)) {
        let msg = match e {
            scan::ScanError::BadRegex { message, .. } => message,
            other => other.to_string(),
        };
        return Err(format!("bad regex: {}", regex_message(&msg)));
    }
    Ok(())
}

/// `rules[i].id` read leniently (used only to name the rule in a syntax error).
fn rule_id_from_value(src: &str, i: usize) -> Option<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(src).ok()?;
    let pack = v.get("pack").and_then(|p| p.as_str());
    let id = v.get("rules")?.get(i)?.get("id")?.as_str()?;
    Some(match pack {
        Some(p) => format!("{p}.{id}"),
        None => id.to_string(),
    })
}

/// Keeps user-provided names in messages short.
fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(src: &str) -> String {
        parse_pack("rules/t.yaml", src).unwrap_err().to_string()
    }

    const HEAD: &str = "pack: t\nversion: 2\nrules:\n";

    #[test]
    fn parses_full_rule() {
        let p = parse_pack(
            "rules/t.yaml",
            "pack: t\nversion: 3\nmode: shadow\ndescription: d\nrules:\n  - id: a\n    description: x\n    detector: api_key\n    direction: [request]\n    when: { model: [\"gpt-4*\"], route: [chat, responses], caller: \"team-*\" }\n    action: redact\n    redact: hash\n    severity: high\n",
        )
        .unwrap();
        assert_eq!(p.name, "t");
        assert_eq!(p.version, "3");
        assert_eq!(p.mode, Mode::Shadow);
        let r = &p.rules[0];
        assert_eq!(r.full_id, "t.a");
        assert_eq!(r.directions, [true, false]);
        assert_eq!(r.redact, RedactStyle::Hash);
        match &r.matcher {
            RuleMatch::Detector { expanded, .. } => {
                assert!(expanded.len() >= 2);
                assert!(expanded.iter().all(|d| d.starts_with("api_key.")));
            }
            m => panic!("{m:?}"),
        }
        let w = r.when.as_ref().unwrap();
        assert_eq!(w.caller.as_deref(), Some(&["team-*".to_string()][..]));
        assert_eq!(w.route.as_ref().unwrap().len(), 2);
    }

    /// Every validation error class, with its exact message, file:line and rule id.
    #[test]
    fn validation_errors_exact() {
        let cases: &[(&str, &str)] = &[
            (
                "  - id: email\n    description: d\n    detector: emial\n    action: redact\n",
                "rules/t.yaml:6: rule t.email: unknown detector 'emial'",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    action: flag\n  - id: a\n    description: d\n    detector: phone\n    action: flag\n",
                "rules/t.yaml:8: rule t.a: duplicate rule id (first defined at line 4)",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    detectr: phone\n    action: flag\n",
                "rules/t.yaml:7: rule t.a: unknown field `detectr`, expected one of `id`, `description`, `detector`, `regex`, `keywords`, `models`, `label`, `direction`, `when`, `action`, `redact`, `severity`, `message`",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    action: blok\n",
                "rules/t.yaml:7: rule t.a: unknown variant `blok`, expected one of `allow`, `flag`, `redact`, `block`",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n",
                "rules/t.yaml:4: rule t.a: missing field `action`",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    regex: x\n    action: flag\n",
                "rules/t.yaml:4: rule t.a: needs exactly one of detector, regex, keywords, models (found detector, regex)",
            ),
            (
                "  - id: a\n    description: d\n    action: flag\n",
                "rules/t.yaml:4: rule t.a: needs exactly one of detector, regex, keywords, models (found none)",
            ),
            (
                "  - id: a\n    description: d\n    keywords: []\n    action: flag\n",
                "rules/t.yaml:6: rule t.a: keywords list is empty",
            ),
            (
                "  - id: a\n    description: d\n    regex: ''\n    action: flag\n",
                "rules/t.yaml:6: rule t.a: regex is empty",
            ),
            (
                "  - id: a\n    description: d\n    regex: 'a*'\n    action: flag\n",
                "rules/t.yaml:6: rule t.a: regex matches the empty string",
            ),
            (
                "  - id: a\n    description: d\n    direction: [requests]\n    detector: email\n    action: flag\n",
                "rules/t.yaml:6: rule t.a: unknown direction 'requests' (expected request, response or both)",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    when: { route: [chatt] }\n    action: flag\n",
                "rules/t.yaml:7: rule t.a: unknown route 'chatt' in when.route (expected one of chat, completions, responses, embeddings, messages, models, other)",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    when: { modle: [x] }\n    action: flag\n",
                "rules/t.yaml:7: rule t.a: unknown field `modle`, expected one of `model`, `route`, `caller`",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    action: block\n    redact: mask\n",
                "rules/t.yaml:8: rule t.a: `redact` style given but action is block (only for action: redact)",
            ),
            (
                "  - id: a\n    description: d\n    models: ['*']\n    action: redact\n",
                "rules/t.yaml:7: rule t.a: a models rule takes action block or flag (not redact)",
            ),
            (
                "  - id: a\n    description: d\n    models: ['*']\n    direction: request\n    action: block\n",
                "rules/t.yaml:7: rule t.a: `direction` does not apply to a models rule",
            ),
            (
                "  - id: a\n    description: d\n    detector: email\n    label: mail\n    action: flag\n",
                "rules/t.yaml:7: rule t.a: label is only for regex and keywords rules (built-in detectors keep their names)",
            ),
            (
                "  - id: 'a b'\n    description: d\n    detector: email\n    action: flag\n",
                "rules/t.yaml:4: invalid rule id 'a b' (use letters, digits, '.', '-' and '_')",
            ),
            (
                "  - id: a\n    description: ' '\n    detector: email\n    action: flag\n",
                "rules/t.yaml:5: rule t.a: description is empty",
            ),
            (
                "  - id: a\n    detector: email\n    action: flag\n",
                "rules/t.yaml:4: rule t.a: missing field `description`",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(&e(&format!("{HEAD}{body}")), want, "for:\n{body}");
        }
    }

    #[test]
    fn bad_regex_located() {
        let msg = e(&format!(
            "{HEAD}  - id: ok\n    description: d\n    regex: 'x+'\n    action: flag\n  - id: emp\n    description: d\n    regex: '(unclosed'\n    action: flag\n"
        ));
        assert!(
            msg.starts_with("rules/t.yaml:10: rule t.emp: bad regex: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn file_level_errors() {
        assert_eq!(
            e(""),
            "rules/t.yaml:1: empty rule pack (expected keys `pack` and `rules`)"
        );
        assert_eq!(
            e("pack: t\nrulez: []\n"),
            "rules/t.yaml:2: unknown field `rulez`, expected one of `pack`, `version`, `mode`, `description`, `rules`"
        );
        assert_eq!(
            e("pack: 'a.b'\nrules: []\n"),
            "rules/t.yaml:1: invalid pack name 'a.b' (use letters, digits, '-' and '_')"
        );
        assert_eq!(
            e("pack: t\nmode: shade\nrules: []\n"),
            "rules/t.yaml:2: mode: unknown variant `shade`, expected `enforce` or `shadow`"
        );
        let syntax = e("pack: t\nrules:\n  - id: a\n   description: [\n");
        assert!(syntax.starts_with("rules/t.yaml:"), "{syntax}");
    }

    #[test]
    fn lines_with_comments_and_blank_lines() {
        let msg = e("# header\npack: t\n\nrules:   # all rules\n  # first\n  - id: a\n    description: d\n    detector: email\n    action: flag\n\n  # second\n  - description: d\n    id: b\n    detector: nope\n    action: flag\n");
        assert_eq!(msg, "rules/t.yaml:14: rule t.b: unknown detector 'nope'");
    }

    #[test]
    fn flow_style_rules_fall_back_to_id_line() {
        let msg =
            e("pack: t\nrules: [ { id: a, description: d, detector: nope, action: flag } ]\n");
        assert_eq!(msg, "rules/t.yaml:2: rule t.a: unknown detector 'nope'");
    }

    #[test]
    fn defaults() {
        let p = parse_pack(
            "f",
            "pack: t\nrules:\n- id: a\n  description: d\n  regex: '\\d+'\n  label: emp_id\n  action: redact\n",
        )
        .unwrap();
        assert_eq!(p.version, "1");
        assert_eq!(p.mode, Mode::Enforce);
        let r = &p.rules[0];
        assert_eq!(r.directions, [true, true]);
        assert_eq!(r.redact, RedactStyle::Mask);
        assert_eq!(r.label, "emp_id");
        // Items at indentation 0 are located too.
        let msg = e("pack: t\nrules:\n- id: a\n  description: d\n  detector: x\n  action: flag\n");
        assert_eq!(msg, "rules/t.yaml:5: rule t.a: unknown detector 'x'");
    }
}
