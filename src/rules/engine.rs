//! Compilation of validated packs into one immutable [`RuleSet`]: unique patterns across all rules
//! go into ONE `scan::Matcher`; each pattern maps to the rules using it, and scope-independent
//! resolutions (precedence, allow exemptions, shadow) are precomputed so evaluation per finding is O(1).

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::pack::{parse_pack, PackDef, RuleDef, RuleMatch, WhenDef, MAX_PACK_BYTES};
use super::{
    Action, Direction, Mode, PackError, RedactStyle, RulesError, RulesOptions, Scope, Severity,
};
use crate::scan::{Matcher, PatternKind, PatternSpec, ScanError};

/// A `*`/`?` glob. Model globs compare ASCII case-insensitively (model ids are case-insensitive at
/// most providers); caller globs are case-sensitive.
#[derive(Clone, Debug)]
pub(crate) struct Glob {
    pat: Box<[u8]>,
    ci: bool,
}

impl Glob {
    pub(crate) fn new(p: &str, ci: bool) -> Glob {
        let pat = if ci {
            p.to_ascii_lowercase().into_bytes()
        } else {
            p.as_bytes().to_vec()
        };
        Glob {
            pat: pat.into_boxed_slice(),
            ci,
        }
    }

    /// Iterative wildcard match with single-star backtracking: O(len(p) * len(s)) worst case.
    pub(crate) fn matches(&self, s: &str) -> bool {
        let (p, s) = (&self.pat[..], s.as_bytes());
        let eq = |a: u8, b: u8| {
            if self.ci {
                a == b.to_ascii_lowercase()
            } else {
                a == b
            }
        };
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if pi < p.len() && (p[pi] == b'?' || eq(p[pi], s[si])) {
                pi += 1;
                si += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[derive(Clone, Debug)]
pub(crate) struct When {
    model: Option<Vec<Glob>>,
    route: Option<Vec<String>>,
    caller: Option<Vec<Glob>>,
}

impl When {
    fn compile(w: &WhenDef) -> When {
        When {
            model: w
                .model
                .as_ref()
                .map(|v| v.iter().map(|g| Glob::new(g, true)).collect()),
            route: w.route.clone(),
            caller: w
                .caller
                .as_ref()
                .map(|v| v.iter().map(|g| Glob::new(g, false)).collect()),
        }
    }

    /// Every present field must match (AND); within a field any entry may match (OR). A field
    /// that the request lacks (no model / anonymous caller) does not match.
    pub(crate) fn matches(&self, scope: &Scope) -> bool {
        let globs = |g: &Option<Vec<Glob>>, v: &Option<String>| match (g, v) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(g), Some(v)) => g.iter().any(|g| g.matches(v)),
        };
        globs(&self.model, &scope.model)
            && globs(&self.caller, &scope.caller)
            && self.route.as_ref().is_none_or(|r| r.contains(&scope.route))
    }
}

pub(crate) struct PackMeta {
    pub name: String,
    pub version: String,
    pub mode: Mode,
    pub file: String,
    pub description: Option<String>,
}

pub(crate) struct Rule {
    pub pack: usize,
    pub def: RuleDef,
    pub when: Option<When>,
    pub models: Vec<Glob>,
}

pub(crate) struct PatternMeta {
    /// Findings label (detector name, or the custom rule's label).
    pub label: String,
    /// Placeholder/hash token: `EMAIL`, `API_KEY_OPENAI`.
    pub token: String,
    /// Mask text: `[REDACTED:EMAIL]`.
    pub mask: String,
}

/// The outcome for findings of one pattern in one direction for one request scope.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Strongest enforced action (applied).
    pub enf: Action,
    /// Strongest action including shadowed ones (recorded).
    pub would: Action,
    /// Redact style of the winning enforced redact rule (Mask for block: defense in depth).
    pub style: RedactStyle,
    /// Winning enforced rule (first in load order among the strongest), if any.
    pub winner: Option<usize>,
    /// Rules credited with an enforced hit.
    pub enf_hits: Box<[usize]>,
    /// Rules credited with a shadow hit.
    pub shadow_hits: Box<[usize]>,
}

pub(crate) enum Slot {
    /// No rule in this direction uses `when`: the resolution is the same for every request
    /// (`None`: no rule applies).
    Static(Option<Resolved>),
    /// Depends on the request scope; resolved lazily once per request by the evaluator.
    Dynamic,
}

pub(crate) struct Core {
    pub packs: Vec<PackMeta>,
    pub rules: Vec<Rule>,
    pub patterns: Vec<PatternMeta>,
    pub pattern_rules: Vec<Vec<usize>>,
    pub model_rules: Vec<usize>,
    pub matcher: Option<Matcher>,
    pub max_span: usize,
    pub hash_key: Vec<u8>,
    /// Some rule applies in this direction (otherwise scanning is skipped).
    pub dir_active: [bool; 2],
}

impl Core {
    pub(crate) fn rule_shadow(&self, rule: usize, global_shadow: bool) -> bool {
        global_shadow || self.packs[self.rules[rule].pack].mode == Mode::Shadow
    }

    /// Precedence for findings of `pattern` in `dir` (see [`RuleSet`] docs). `scope` None is only
    /// valid when no candidate rule has a `when` clause.
    pub(crate) fn resolve(
        &self,
        pattern: usize,
        dir: Direction,
        scope: Option<&Scope>,
        global_shadow: bool,
    ) -> Option<Resolved> {
        let mut enf: Vec<usize> = Vec::new();
        let mut shadow: Vec<usize> = Vec::new();
        for &ri in &self.pattern_rules[pattern] {
            let r = &self.rules[ri];
            if !r.def.directions[dir.idx()] {
                continue;
            }
            if let Some(w) = &r.when {
                match scope {
                    Some(s) if w.matches(s) => {}
                    _ => continue,
                }
            }
            if self.rule_shadow(ri, global_shadow) {
                shadow.push(ri);
            } else {
                enf.push(ri);
            }
        }
        if enf.is_empty() && shadow.is_empty() {
            return None;
        }
        let is_exemption = |ri: &usize| {
            let r = &self.rules[*ri];
            r.def.action == Action::Allow && r.when.is_some()
        };
        if enf.iter().any(is_exemption) {
            enf.retain(is_exemption);
            shadow.clear();
        }
        let enf_action = enf
            .iter()
            .map(|&r| self.rules[r].def.action)
            .max()
            .unwrap_or(Action::Allow);
        let winner = enf
            .iter()
            .copied()
            .find(|&r| self.rules[r].def.action == enf_action);
        let style = match (enf_action, winner) {
            (Action::Redact, Some(w)) => self.rules[w].def.redact,
            _ => RedactStyle::Mask,
        };
        let would = shadow
            .iter()
            .map(|&r| self.rules[r].def.action)
            .max()
            .map_or(enf_action, |a| a.max(enf_action));
        Some(Resolved {
            enf: enf_action,
            would,
            style,
            winner,
            enf_hits: enf.into_boxed_slice(),
            shadow_hits: shadow.into_boxed_slice(),
        })
    }

    fn static_slots(&self, global_shadow: bool) -> Vec<[Slot; 2]> {
        (0..self.patterns.len())
            .map(|p| {
                [Direction::Request, Direction::Response].map(|dir| {
                    let scoped = self.pattern_rules[p].iter().any(|&r| {
                        self.rules[r].def.directions[dir.idx()] && self.rules[r].when.is_some()
                    });
                    if scoped {
                        Slot::Dynamic
                    } else {
                        Slot::Static(self.resolve(p, dir, None, global_shadow))
                    }
                })
            })
            .collect()
    }
}

/// All loaded packs compiled into one immutable, `Send + Sync` rule set with ONE multi-pattern
/// matcher. Cheap to clone (shared internals).
///
/// Precedence for a finding (per direction, among rules whose `direction` and `when` apply):
/// 1. An enforced `allow` rule **with a `when` clause** exempts the finding from every other rule
///    on the same detector/pattern (all packs): nothing is applied or shadow-recorded, only the
///    allow rule is credited. An `allow` rule without `when` is just the lowest action.
/// 2. Otherwise the strongest enforced action wins: block > redact > flag > allow. A redacted span
///    gets the style of the first (load order: file name, then rule order) winning redact rule;
///    a blocked span is also masked.
/// 3. Rules of shadow packs (or all rules under global shadow) never change traffic and never
///    exempt; they are recorded as shadow hits and raise `would_be`.
#[derive(Clone)]
pub struct RuleSet {
    pub(crate) core: Arc<Core>,
    pub(crate) slots: Arc<Vec<[Slot; 2]>>,
    pub(crate) global_shadow: bool,
}

/// Serializable view of a pack (admin API, `jimini rules list`). Never contains matched values.
#[derive(Clone, Debug, Serialize)]
pub struct PackSummary {
    pub name: String,
    pub version: String,
    /// Mode declared in the pack.
    pub mode: Mode,
    /// True when the pack is not enforced (pack mode or global shadow).
    pub shadow: bool,
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<RuleSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleSummary {
    /// Full id `pack.rule`.
    pub id: String,
    pub description: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub direction: Vec<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<WhenSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redact: Option<RedactStyle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WhenSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<Vec<String>>,
}

#[derive(PartialEq, Eq, Hash)]
enum PatKey {
    Builtin(String),
    Regex(String),
    Keywords(Vec<String>),
}

/// `api_key.openai` → `API_KEY_OPENAI`.
pub(crate) fn token_of(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl RuleSet {
    /// A rule set without rules (everything passes, nothing is recorded).
    pub fn empty(opts: &RulesOptions) -> RuleSet {
        // An empty pack list cannot fail to compile (no patterns, no matcher).
        compile(Vec::new(), opts).unwrap_or_else(|_| unreachable!("empty rule set compiles"))
    }

    /// Loads every `*.yaml` / `*.yml` file of `dir` (sorted by name; dotfiles and directories
    /// such as Kubernetes' `..data` are skipped, symlinks to files are followed). `dir` may also
    /// be a single pack file. All-or-nothing: any error rejects the whole set.
    pub fn load_dir(dir: &Path, opts: &RulesOptions) -> Result<RuleSet, RulesError> {
        let io = |p: &Path, e: std::io::Error| RulesError::Io {
            path: p.display().to_string(),
            error: e,
        };
        let meta = fs::metadata(dir).map_err(|e| io(dir, e))?;
        let mut paths = Vec::new();
        if meta.is_file() {
            paths.push(dir.to_path_buf());
        } else {
            for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
                let entry = entry.map_err(|e| io(dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let lower = name.to_ascii_lowercase();
                if name.starts_with('.') || !(lower.ends_with(".yaml") || lower.ends_with(".yml")) {
                    continue;
                }
                let path = entry.path();
                // Follows symlinks (ConfigMap keys are symlinks into ..data/).
                match fs::metadata(&path) {
                    Ok(m) if m.is_file() => paths.push(path),
                    Ok(_) => {}
                    // A dangling symlink mid-swap: the next reload will see the final state.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&path, e)),
                }
            }
            paths.sort();
        }
        let mut sources = Vec::with_capacity(paths.len());
        for p in paths {
            let len = fs::metadata(&p).map_err(|e| io(&p, e))?.len();
            if len > MAX_PACK_BYTES as u64 {
                return Err(RulesError::Invalid(PackError {
                    file: p.display().to_string(),
                    line: None,
                    rule: None,
                    message: format!("pack file larger than {MAX_PACK_BYTES} bytes"),
                }));
            }
            let src = fs::read_to_string(&p).map_err(|e| io(&p, e))?;
            sources.push((p.display().to_string(), src));
        }
        RuleSet::from_sources(&sources, opts)
    }

    /// Compiles packs given as (file name, YAML source) pairs, in order.
    pub fn from_sources(
        sources: &[(String, String)],
        opts: &RulesOptions,
    ) -> Result<RuleSet, RulesError> {
        let mut packs: Vec<PackDef> = Vec::with_capacity(sources.len());
        for (file, src) in sources {
            let p = parse_pack(file, src).map_err(RulesError::Invalid)?;
            if let Some(first) = packs.iter().find(|q| q.name == p.name) {
                let line = src
                    .lines()
                    .position(|l| l.starts_with("pack:"))
                    .map(|l| l + 1);
                return Err(RulesError::Invalid(PackError {
                    file: file.clone(),
                    line,
                    rule: None,
                    message: format!("duplicate pack '{}' (also in {})", p.name, first.file),
                }));
            }
            packs.push(p);
        }
        compile(packs, opts)
    }

    /// Summaries of all packs, in load order.
    pub fn packs(&self) -> Vec<PackSummary> {
        let c = &self.core;
        c.packs
            .iter()
            .enumerate()
            .map(|(pi, p)| PackSummary {
                name: p.name.clone(),
                version: p.version.clone(),
                mode: p.mode,
                shadow: self.global_shadow || p.mode == Mode::Shadow,
                file: p.file.clone(),
                description: p.description.clone(),
                rules: c
                    .rules
                    .iter()
                    .filter(|r| r.pack == pi)
                    .map(|r| rule_summary(&r.def))
                    .collect(),
            })
            .collect()
    }

    pub fn rule_count(&self) -> usize {
        self.core.rules.len()
    }

    /// Number of distinct patterns in the shared matcher.
    pub fn pattern_count(&self) -> usize {
        self.core.patterns.len()
    }

    /// The same rules with global shadow switched on/off (admin "toggle shadow"). Cheap: shares
    /// the compiled matcher; only the per-pattern resolutions are recomputed.
    pub fn with_global_shadow(&self, on: bool) -> RuleSet {
        if on == self.global_shadow {
            return self.clone();
        }
        RuleSet {
            core: Arc::clone(&self.core),
            slots: Arc::new(self.core.static_slots(on)),
            global_shadow: on,
        }
    }

    pub fn global_shadow(&self) -> bool {
        self.global_shadow
    }

    /// Hold-back window (bytes) of the stream scanners: the longest possible match, capped by
    /// `max_holdback`.
    pub fn max_span(&self) -> usize {
        self.core.max_span
    }
}

fn rule_summary(d: &RuleDef) -> RuleSummary {
    let (mut detector, mut regex, mut keywords, mut models, mut label) =
        (None, None, None, None, None);
    match &d.matcher {
        RuleMatch::Detector { name, .. } => detector = Some(name.clone()),
        RuleMatch::Regex(r) => {
            regex = Some(r.clone());
            label = Some(d.label.clone());
        }
        RuleMatch::Keywords(k) => {
            keywords = Some(k.clone());
            label = Some(d.label.clone());
        }
        RuleMatch::Models(m) => models = Some(m.clone()),
    }
    let is_models = models.is_some();
    RuleSummary {
        id: d.full_id.clone(),
        description: d.description.clone(),
        action: d.action,
        detector,
        regex,
        keywords,
        models,
        label,
        direction: if is_models {
            vec![Direction::Request]
        } else {
            [Direction::Request, Direction::Response]
                .into_iter()
                .filter(|x| d.directions[x.idx()])
                .collect()
        },
        when: d.when.as_ref().map(|w| WhenSummary {
            model: w.model.clone(),
            route: w.route.clone(),
            caller: w.caller.clone(),
        }),
        redact: (d.action == Action::Redact).then_some(d.redact),
        severity: d.severity,
    }
}

fn compile(packs: Vec<PackDef>, opts: &RulesOptions) -> Result<RuleSet, RulesError> {
    let mut metas = Vec::with_capacity(packs.len());
    let mut rules: Vec<Rule> = Vec::new();
    let mut specs: Vec<PatternSpec> = Vec::new();
    let mut patterns: Vec<PatternMeta> = Vec::new();
    let mut pattern_rules: Vec<Vec<usize>> = Vec::new();
    let mut keys: HashMap<PatKey, usize> = HashMap::new();
    let mut model_rules = Vec::new();
    let mut intern = |key: PatKey, kind: PatternKind, label: &str, ri: usize| {
        let id = *keys.entry(key).or_insert_with(|| {
            specs.push(PatternSpec {
                label: label.to_string(),
                kind,
            });
            patterns.push(PatternMeta {
                label: label.to_string(),
                token: token_of(label),
                mask: crate::scan::mask_label(label),
            });
            pattern_rules.push(Vec::new());
            patterns.len() - 1
        });
        if pattern_rules[id].last() != Some(&ri) {
            pattern_rules[id].push(ri);
        }
    };
    for (pi, p) in packs.into_iter().enumerate() {
        metas.push(PackMeta {
            name: p.name,
            version: p.version,
            mode: p.mode,
            file: p.file,
            description: p.description,
        });
        for def in p.rules {
            let ri = rules.len();
            match &def.matcher {
                RuleMatch::Detector { expanded, .. } => {
                    for d in expanded {
                        intern(
                            PatKey::Builtin(d.clone()),
                            PatternKind::Builtin(d.clone()),
                            d,
                            ri,
                        );
                    }
                }
                RuleMatch::Regex(re) => intern(
                    PatKey::Regex(re.clone()),
                    PatternKind::Regex(re.clone()),
                    &def.label,
                    ri,
                ),
                RuleMatch::Keywords(k) => {
                    let mut norm: Vec<String> = k.iter().map(|s| s.to_lowercase()).collect();
                    norm.sort();
                    norm.dedup();
                    intern(
                        PatKey::Keywords(norm),
                        PatternKind::Keywords(k.clone()),
                        &def.label,
                        ri,
                    )
                }
                RuleMatch::Models(_) => model_rules.push(ri),
            }
            let models = match &def.matcher {
                RuleMatch::Models(m) => m.iter().map(|g| Glob::new(g, true)).collect(),
                _ => Vec::new(),
            };
            rules.push(Rule {
                pack: pi,
                when: def.when.as_ref().map(When::compile),
                models,
                def,
            });
        }
    }
    let matcher = if specs.is_empty() {
        None
    } else {
        // The cap bounds the stream hold-back; longer matches may be split across releases.
        Some(
            Matcher::new_with_cap(&specs, opts.max_holdback.max(1))
                .map_err(|e| compile_error(e, &rules, &metas))?,
        )
    };
    let max_span = matcher
        .as_ref()
        .map_or(1, |m| m.max_match_len().min(opts.max_holdback))
        .max(1);
    let dir_active = [Direction::Request, Direction::Response].map(|d| {
        pattern_rules
            .iter()
            .flatten()
            .any(|&r| rules[r].def.directions[d.idx()])
    });
    let core = Core {
        packs: metas,
        rules,
        patterns,
        pattern_rules,
        model_rules,
        matcher,
        max_span,
        hash_key: opts.hash_key.clone(),
        dir_active,
    };
    let slots = core.static_slots(opts.global_shadow);
    Ok(RuleSet {
        core: Arc::new(core),
        slots: Arc::new(slots),
        global_shadow: opts.global_shadow,
    })
}

/// Locates an error of the combined matcher (each regex was already compiled alone during
/// validation, so this is rare: e.g. combined size limits).
fn compile_error(e: ScanError, rules: &[Rule], packs: &[PackMeta]) -> RulesError {
    let label = match &e {
        ScanError::BadRegex { label, .. } => Some(label.as_str()),
        ScanError::EmptyKeywords(label) => Some(label.as_str()),
        _ => None,
    };
    if let Some(r) = label.and_then(|l| {
        rules
            .iter()
            .find(|r| r.def.label == l && !matches!(r.def.matcher, RuleMatch::Detector { .. }))
    }) {
        return RulesError::Invalid(PackError {
            file: packs[r.pack].file.clone(),
            line: None,
            rule: Some(r.def.full_id.clone()),
            message: e.to_string(),
        });
    }
    RulesError::Compile(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = Glob::new("gpt-4*", true);
        assert!(g.matches("gpt-4o"));
        assert!(g.matches("GPT-4"));
        assert!(!g.matches("gpt-3.5-turbo"));
        assert!(Glob::new("*", false).matches(""));
        assert!(Glob::new("a*b*c", false).matches("axxbyyc"));
        assert!(!Glob::new("a*b*c", false).matches("axxbyy"));
        assert!(Glob::new("team-?", false).matches("team-a"));
        assert!(!Glob::new("team-?", false).matches("team-ab"));
        assert!(
            !Glob::new("Team-*", false).matches("team-a"),
            "callers are case-sensitive"
        );
        assert!(Glob::new("*-mini", true).matches("gpt-4o-mini"));
        assert!(Glob::new("**x", true).matches("x"));
    }

    fn src(name: &str, body: &str) -> (String, String) {
        (format!("rules/{name}.yaml"), body.to_string())
    }

    #[test]
    fn dedupes_patterns_and_detects_duplicate_packs() {
        let a = src(
            "a",
            "pack: a\nrules:\n  - id: e\n    description: d\n    detector: email\n    action: redact\n  - id: k\n    description: d\n    detector: api_key\n    action: block\n  - id: r\n    description: d\n    regex: 'x\\d+'\n    action: flag\n",
        );
        let b = src(
            "b",
            "pack: b\nrules:\n  - id: e\n    description: d\n    detector: email\n    action: flag\n  - id: r\n    description: d\n    regex: 'x\\d+'\n    action: flag\n  - id: k\n    description: d\n    keywords: [Foo, foo]\n    action: flag\n  - id: k2\n    description: d\n    keywords: [FOO]\n    action: flag\n",
        );
        let rs = RuleSet::from_sources(&[a.clone(), b], &RulesOptions::default()).unwrap();
        let n_api = crate::scan::BUILTIN_DETECTORS
            .iter()
            .filter(|d| d.starts_with("api_key."))
            .count();
        // email + api keys + one regex + one keyword set.
        assert_eq!(rs.pattern_count(), 1 + n_api + 1 + 1);
        assert_eq!(rs.rule_count(), 7);
        let dup = RuleSet::from_sources(&[a.clone(), a], &RulesOptions::default())
            .err()
            .unwrap();
        assert_eq!(
            dup.to_string(),
            "rules/a.yaml:1: duplicate pack 'a' (also in rules/a.yaml)"
        );
        let packs = rs.packs();
        assert_eq!(packs.len(), 2);
        assert_eq!(packs[0].rules[1].detector.as_deref(), Some("api_key"));
        let j = serde_json::to_value(&packs).unwrap();
        assert_eq!(j[1]["rules"][1]["regex"], "x\\d+");
        assert_eq!(j[0]["rules"][0]["redact"], "mask");
    }

    const GOOD: &str =
        "pack: NAME\nrules:\n  - id: e\n    description: d\n    detector: email\n    action: redact\n";

    #[test]
    fn load_dir_picks_yaml_files_and_skips_dotfiles_and_dirs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fs::write(p.join("b.yaml"), GOOD.replace("NAME", "b")).unwrap();
        fs::write(p.join("a.yml"), GOOD.replace("NAME", "a")).unwrap();
        fs::write(p.join(".hidden.yaml"), "garbage: [").unwrap();
        fs::write(p.join("notes.txt"), "garbage: [").unwrap();
        fs::write(p.join("pii.yaml.swp"), "garbage: [").unwrap();
        fs::create_dir(p.join("..2024_01")).unwrap();
        fs::write(
            p.join("..2024_01").join("c.yaml"),
            GOOD.replace("NAME", "c"),
        )
        .unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("..2024_01", p.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/c.yaml", p.join("c.yaml")).unwrap();
            std::os::unix::fs::symlink("missing.yaml", p.join("dangling.yaml")).unwrap();
        }
        let rs = RuleSet::load_dir(p, &RulesOptions::default()).unwrap();
        let names: Vec<String> = rs.packs().into_iter().map(|p| p.name).collect();
        #[cfg(unix)]
        assert_eq!(names, ["a", "b", "c"]);
        #[cfg(not(unix))]
        assert_eq!(names, ["a", "b"]);
        // A single file works too (`jimini rules test FILE`).
        let one = RuleSet::load_dir(&p.join("b.yaml"), &RulesOptions::default()).unwrap();
        assert_eq!(one.rule_count(), 1);
    }

    #[test]
    fn load_dir_errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.yaml"), GOOD.replace("NAME", "a")).unwrap();
        fs::write(
            d.path().join("z.yaml"),
            GOOD.replace("NAME", "z").replace("email", "emial"),
        )
        .unwrap();
        let e = RuleSet::load_dir(d.path(), &RulesOptions::default())
            .err()
            .unwrap();
        let want = format!(
            "{}:5: rule z.e: unknown detector 'emial'",
            d.path().join("z.yaml").display()
        );
        assert_eq!(e.to_string(), want);
        let pe = e.pack_error().unwrap();
        assert_eq!(pe.line, Some(5));
        assert_eq!(pe.rule.as_deref(), Some("z.e"));
        let missing = RuleSet::load_dir(&d.path().join("nope"), &RulesOptions::default())
            .err()
            .unwrap();
        assert!(matches!(missing, RulesError::Io { .. }), "{missing}");
        // The CLI prints errors with their chain (`{:#}`): the cause once, not twice.
        let chain = format!("{:#}", anyhow::Error::from(missing));
        assert!(chain.contains("nope: "), "{chain}");
        assert_eq!(chain.matches(": ").count(), 1, "{chain}");
    }

    #[test]
    fn with_global_shadow_shares_matcher() {
        let rs = RuleSet::from_sources(
            &[src("a", &GOOD.replace("NAME", "a"))],
            &RulesOptions::default(),
        )
        .unwrap();
        let sh = rs.with_global_shadow(true);
        assert!(sh.global_shadow());
        assert!(Arc::ptr_eq(&rs.core, &sh.core));
        assert!(sh.packs()[0].shadow);
        assert!(!rs.packs()[0].shadow);
    }

    #[test]
    fn empty_rule_set() {
        let rs = RuleSet::empty(&RulesOptions::default());
        assert_eq!(rs.rule_count(), 0);
        assert!(rs.packs().is_empty());
    }
}
