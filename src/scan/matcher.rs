//! The single compiled multi-pattern matcher over built-in detectors, custom regexes and
//! keyword lists: one `regex_automata::meta::Regex` built with `new_many`-style semantics,
//! a leftmost-first, non-overlapping scan, and per-pattern validators.
//!
//! Design notes:
//! - All patterns live in ONE meta regex, so a text is scanned once by one lazy DFA whatever
//!   the number of patterns. Built-ins use ASCII-only classes and ASCII word boundaries
//!   (`(?-u:\b)`), which keeps the lazy DFA usable on any UTF-8 text (a Unicode `\b` would
//!   force a slower engine on non-ASCII input). Keyword lists compile to case-insensitive
//!   literal alternations inside the same regex; the meta engine picks literal prefilters
//!   (Aho-Corasick/Teddy) on its own when every pattern has one, which is not the case for
//!   the PII shapes, so the DFA is the hot loop (see `benches/scanner.rs` for numbers).
//! - Priority at one start position: built-ins in a fixed specificity order (PEM, JWT, URL
//!   credentials, API keys, wallets, IBAN, email, card, SSN, IPs, phone, routing), then custom
//!   specs in the order given. Leftmost-first semantics then pick the earliest start.
//! - Rejected candidates: when a validator rejects the leftmost candidate, other patterns
//!   that also match at that same start are tried (an `All`-semantics twin of the regex tells
//!   which ones). Then the scan resumes after the rejected candidate's first token (the
//!   maximal ASCII-alphanumeric run at its start), or — for number-shaped built-ins that start
//!   inside a longer digit sequence (`1.2.3.4.5`, `555-123-4567-89`) — after the candidate
//!   (up to the next whitespace). So a 16-digit non-Luhn order number is skipped whole (no
//!   phone or SSN inside it), while `123-45-6789 2024` — first seen as a too-long card
//!   candidate — still yields the SSN. Accepted findings resume at their end. Worst case on
//!   adversarial digit soup is ~15 MB/s (one rejected candidate every few bytes), linear.
//! - `find_from(h, from)` starts the raw scan up to [`RESYNC_WINDOW`] bytes before `from`
//!   (inside the context) and reports only findings starting at or after `from`; that way a
//!   candidate straddling `from` is skipped exactly as a scan from the beginning would.
//! - Speed: the lazy DFA over the whole text is the hot loop (≈ 0.6 GB/s per walk on the
//!   shared dev box, as fast as a single tiny digit regex there: each byte waits for the
//!   previous transition). Spans of 512 bytes and more are searched by up to four interleaved
//!   walks (`lanes`, same answers, ~2.3× faster); after a candidate close to where its search
//!   began, the next search is the plain one (candidates cluster). A trigger-byte / literal
//!   prefilter that ran the DFA only around digits, '@', ':' and key prefixes was prototyped
//!   and dropped: Aho-Corasick over the short case-insensitive key prefixes cost as much as
//!   the DFA pass it was meant to avoid.
//! - Specs with identical kinds: only the first can win at a position (the rules layer
//!   should map one detector pattern to many rules).

use std::sync::OnceLock;

use regex_automata::util::syntax;
use regex_automata::{meta, Anchored, Input, MatchKind, PatternID, PatternSet};
use regex_syntax::hir::{Hir, HirKind};

use super::detectors::{self, SpanValidator};
use super::lanes::{Lanes, Starts, LANE_GAP, MIN_LANE_SPAN};
use super::liveness::Liveness;
use super::{Finding, PatternKind, PatternSpec, ScanError};

/// Default cap for `max_match_len()` of patterns without a finite bound (custom regexes
/// with `+`/`*`). Built-in detectors are all bounded (largest: PEM blocks, ≈ 8.3 KiB).
pub const DEFAULT_MAX_MATCH_CAP: usize = 16 * 1024;

/// How far before `from` a `find_from` scan starts to re-synchronise with candidates that
/// straddle `from` (bounded so a large hold-back does not make every stream push rescan
/// kilobytes of context). [`super::StreamScanner`] keeps `min(hold-back, this)` bytes (at
/// least 64) of released text as context.
pub const RESYNC_WINDOW: usize = 512;

/// Longest whitespace run accepted between the words of a multi-word keyword.
const KEYWORD_MAX_SPACE: usize = 8;

/// Compiled matcher. Immutable, `Send + Sync`; build once, share behind an `Arc`.
#[derive(Debug)]
pub struct Matcher {
    re: meta::Regex,
    /// Same patterns with `MatchKind::All`, used only after a rejection to learn which other
    /// patterns match at the same start. `None` with a single pattern.
    all: Option<meta::Regex>,
    /// Regex pattern id (priority order) -> spec index.
    spec_of: Vec<usize>,
    /// Validator per regex pattern id (None for custom specs).
    validators: Vec<Option<SpanValidator>>,
    /// Per regex pattern id: number-shaped built-in whose glued rejections skip the span.
    glue_skip: Vec<bool>,
    labels: Vec<String>,
    /// Per spec: capped upper bound of a finding's length.
    max_lens: Vec<usize>,
    /// Per spec: real upper bound, None if unbounded.
    bounds: Vec<Option<usize>>,
    /// Per regex pattern id: most characters a regex match spans (None if unbounded), where
    /// the search after the lanes starts: a byte bound would read twice as far back for a
    /// pattern with non-ASCII letters, on the (mostly ASCII) text in front of a match.
    char_bounds: Vec<Option<usize>>,
    max_len: usize,
    /// Stream release oracle over the same NFA; None if it could not be built (the stream
    /// scanner then keeps its fixed hold-back window).
    liveness: Option<Liveness>,
    /// The same patterns as a multi-lane lazy DFA for long spans (see `lanes`), built on the
    /// first long span (a matcher that only ever sees short texts never pays for it); None if it
    /// could not be built (then every search is the plain one).
    lanes: OnceLock<Option<Lanes>>,
    /// Where a match the lanes found begins (a reverse lazy DFA), built from `sources` on the
    /// first match the lanes find (≈ 4 ms for the shipped packs, once per rule set; never for
    /// a matcher that only sees short texts); None if it could not be built (then the regex
    /// engine finds the match again).
    starts: OnceLock<Option<Starts>>,
    /// The patterns' sources in priority order, for `starts`.
    sources: Vec<String>,
}

/// Per-spec compile inputs (the HIR itself is kept beside it: its type is not nameable
/// without a direct regex-syntax dependency).
struct SpecSource {
    spec: usize,
    rank: (u8, usize),
    source: String,
    validator: Option<SpanValidator>,
    extra_len: usize,
    glue_skip: bool,
}

impl Matcher {
    /// Compiles all specs into one matcher; unbounded patterns are capped at
    /// [`DEFAULT_MAX_MATCH_CAP`] for `max_match_len()`.
    pub fn new(specs: &[PatternSpec]) -> Result<Matcher, ScanError> {
        Matcher::new_with_cap(specs, DEFAULT_MAX_MATCH_CAP)
    }

    /// Like [`Matcher::new`] but `max_match_len()` (the stream hold-back) never exceeds
    /// `cap`. In a [`super::StreamScanner`], matches longer than the hold-back may be split
    /// across releases (e.g. a 2 KiB PEM block with a 128-byte window: the header is still
    /// detected, the body is not masked as one span).
    pub fn new_with_cap(specs: &[PatternSpec], cap: usize) -> Result<Matcher, ScanError> {
        let cap = cap.max(1);
        let mut compiled = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let src = spec_source(i, spec)?;
            let hir = syntax::parse_with(&src.source, &syntax::Config::new()).map_err(|e| {
                ScanError::BadRegex {
                    label: spec.label.clone(),
                    message: e.to_string(),
                }
            })?;
            if hir.properties().minimum_len() == Some(0) {
                return Err(ScanError::BadRegex {
                    label: spec.label.clone(),
                    message: "pattern can match the empty string".to_string(),
                });
            }
            compiled.push((src, hir));
        }
        compiled.sort_by_key(|(c, _)| c.rank);

        let mut bounds = vec![None; specs.len()];
        let mut max_lens = vec![0; specs.len()];
        for (c, hir) in &compiled {
            let bound = hir.properties().maximum_len().map(|m| m + c.extra_len);
            bounds[c.spec] = bound;
            max_lens[c.spec] = bound.unwrap_or(cap).min(cap);
        }
        let char_bounds = compiled.iter().map(|(_, h)| max_chars(h)).collect();
        let hirs: Vec<_> = compiled.iter().map(|(_, h)| h).collect();
        let build = |kind: MatchKind| -> Result<meta::Regex, ScanError> {
            meta::Regex::builder()
                .configure(
                    meta::Config::new()
                        .match_kind(kind)
                        .utf8_empty(true)
                        .nfa_size_limit(Some(64 << 20))
                        .hybrid_cache_capacity(4 << 20),
                )
                .build_many_from_hir(&hirs)
                .map_err(|e| {
                    let spec = e
                        .pattern()
                        .and_then(|p| compiled.get(p.as_usize()))
                        .map_or(0, |(c, _)| c.spec);
                    ScanError::BadRegex {
                        label: specs[spec].label.clone(),
                        message: e.to_string(),
                    }
                })
        };
        let re = build(MatchKind::LeftmostFirst)?;
        let all = if compiled.len() > 1 {
            Some(build(MatchKind::All)?)
        } else {
            None
        };
        let liveness = Liveness::new(
            |c| c.build_many_from_hir(&hirs).map_err(Box::new),
            compiled.iter().map(|(c, _)| c.extra_len > 0).collect(),
        )
        .map_err(|e| tracing::debug!(error = %e, "stream liveness unavailable: fixed hold-back"))
        .ok();
        let lanes = OnceLock::new();
        Ok(Matcher {
            re,
            all,
            spec_of: compiled.iter().map(|(c, _)| c.spec).collect(),
            validators: compiled.iter().map(|(c, _)| c.validator).collect(),
            glue_skip: compiled.iter().map(|(c, _)| c.glue_skip).collect(),
            labels: specs.iter().map(|s| s.label.clone()).collect(),
            max_len: max_lens.iter().copied().max().unwrap_or(0),
            max_lens,
            bounds,
            char_bounds,
            liveness,
            lanes,
            starts: OnceLock::new(),
            sources: compiled.iter().map(|(c, _)| c.source.clone()).collect(),
        })
    }

    /// All built-in detectors, label == detector name, in [`super::BUILTIN_DETECTORS`] order.
    pub fn builtin() -> Result<Matcher, ScanError> {
        Matcher::new(&super::builtin_specs())
    }

    /// Findings in the whole text.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.find_from(text, 0)
    }

    /// Findings that START at or after `from`; `haystack[..from]` is only left context (word
    /// boundaries, keyword context, and re-synchronising with candidates that straddle
    /// `from`). Sorted by start, non-overlapping, validated. `from` past the end (or inside
    /// a UTF-8 character) is clamped/rounded down to a character boundary.
    pub fn find_from(&self, haystack: &str, from: usize) -> Vec<Finding> {
        let hay = haystack.as_bytes();
        let len = hay.len();
        let from = floor_char_boundary(haystack, from.min(len));
        let scan_from = floor_char_boundary(
            haystack,
            from.saturating_sub(self.max_len.min(RESYNC_WINDOW)),
        );
        let mut out = Vec::new();
        self.scan_range(hay, scan_from, len, from, &mut out);
        out
    }

    /// The leftmost-first candidate loop over `hay[start..end]` (validators and look-around
    /// see the whole haystack); findings starting before `from` are context only.
    fn scan_range(
        &self,
        hay: &[u8],
        start: usize,
        end: usize,
        from: usize,
        out: &mut Vec<Finding>,
    ) {
        let mut pos = start;
        // Lanes pay off when candidates are far apart; right after a near one, the next is
        // likely near too, and the lanes ahead would only be wasted work.
        let mut sparse = true;
        while pos < end {
            let Some(m) = self.search(hay, pos, end, sparse) else {
                return;
            };
            sparse = m.start() - pos >= LANE_GAP;
            let (s, e) = (m.start(), m.end());
            match self.accept(hay, m.pattern(), s, e) {
                Some((pid, fs, fe)) => {
                    if fs >= from {
                        out.push(Finding {
                            pattern: self.spec_of[pid],
                            start: fs,
                            end: fe,
                        });
                    }
                    pos = fe.max(next_char(hay, s));
                }
                // A number-shaped candidate that starts inside a longer digit sequence
                // (`1.2.3.4.5`, `555-123-4567-89`) skips that sequence up to its end or the
                // next whitespace; anything else only skips its first token.
                None if self.glue_skip[m.pattern().as_usize()] && detectors::glued_left(hay, s) => {
                    let ws = hay[s..e].iter().position(u8::is_ascii_whitespace);
                    pos = ws.map_or(e, |w| s + w).max(next_char(hay, s));
                }
                None => pos = skip_token(hay, s),
            }
        }
    }

    /// The leftmost-first candidate in `hay[pos..end]`. On long spans interleaved DFA
    /// lanes find where it ends (see `lanes`) and a reverse DFA where it starts (hot 2 KB
    /// prompt with two findings 2.9 → 2.0 µs, 5.6 → 4.0 µs with caches flushed: the regex
    /// engine no longer reads an e-mail's 281-character bound again); if either gives up, the
    /// regex engine finds it again from its pattern's maximum length before that end.
    fn search(
        &self,
        hay: &[u8],
        pos: usize,
        end: usize,
        try_lanes: bool,
    ) -> Option<regex_automata::Match> {
        let mut from = pos;
        if try_lanes && end - pos >= MIN_LANE_SPAN {
            if let Some(found) = self.lanes().and_then(|l| l.find_end(hay, pos, end)) {
                let half = found?;
                let starts = self.starts();
                if let Some(s) =
                    starts.and_then(|st| st.start(hay, pos, half.offset(), half.pattern()))
                {
                    return Some(regex_automata::Match::new(half.pattern(), s..half.offset()));
                }
                let bound = self
                    .char_bounds
                    .get(half.pattern().as_usize())
                    .copied()
                    .flatten();
                if let Some(n) = bound {
                    from = back_chars(hay, pos, half.offset(), n);
                }
            }
        }
        self.re.search(&Input::new(hay).span(from..end))
    }

    fn lanes(&self) -> Option<&Lanes> {
        self.lanes
            .get_or_init(|| {
                self.liveness
                    .as_ref()
                    .and_then(|l| Lanes::new(l.nfa().clone()))
            })
            .as_ref()
    }

    fn starts(&self) -> Option<&Starts> {
        self.starts
            .get_or_init(|| {
                let reverse = regex_automata::nfa::thompson::Compiler::new()
                    .syntax(syntax::Config::new())
                    .configure(
                        regex_automata::nfa::thompson::Config::new()
                            .reverse(true)
                            .which_captures(regex_automata::nfa::thompson::WhichCaptures::None)
                            .nfa_size_limit(Some(64 << 20)),
                    )
                    .build_many(&self.sources)
                    .map_err(|e| tracing::debug!(error = %e, "no reverse start finder"))
                    .ok()?;
                Starts::new(reverse)
            })
            .as_ref()
    }

    /// (what the lanes made of a span, the matcher's search, the plain engine's search).
    #[cfg(test)]
    pub(crate) fn search_both(
        &self,
        hay: &[u8],
        pos: usize,
        end: usize,
    ) -> (
        LaneOutcome,
        Option<regex_automata::Match>,
        Option<regex_automata::Match>,
    ) {
        let outcome = match self.lanes() {
            _ if end - pos < MIN_LANE_SPAN => LaneOutcome::NotTried,
            None => LaneOutcome::NotTried,
            Some(lanes) => match lanes.find_end_observing_clears(hay, pos, end) {
                (Some(_), _) => LaneOutcome::Decided,
                (None, true) => LaneOutcome::CacheCleared,
                (None, false) => LaneOutcome::GaveUp,
            },
        };
        (
            outcome,
            self.search(hay, pos, end, true),
            self.re.search(&Input::new(hay).span(pos..end)),
        )
    }

    /// This matcher with the multi-lane search switched off: the reference the lanes are tested
    /// against.
    #[cfg(test)]
    pub(crate) fn without_lanes(mut self) -> Matcher {
        self.lanes = OnceLock::from(None);
        self
    }

    /// Validates the leftmost candidate; on rejection tries the other patterns that match
    /// at the same start, in priority order. Returns (regex pattern id, span).
    fn accept(
        &self,
        hay: &[u8],
        pid: PatternID,
        s: usize,
        e: usize,
    ) -> Option<(usize, usize, usize)> {
        let p = pid.as_usize();
        if let Some(span) = self.validate(p, hay, s, e) {
            return Some((p, span.0, span.1));
        }
        let all = self.all.as_ref()?;
        let mut set = PatternSet::new(all.pattern_len());
        let input = Input::new(hay).span(s..hay.len()).anchored(Anchored::Yes);
        all.which_overlapping_matches(&input, &mut set);
        for q in set.iter().filter(|q| *q != pid) {
            let input = Input::new(hay)
                .span(s..hay.len())
                .anchored(Anchored::Pattern(q));
            if let Some(m) = self.re.search(&input) {
                if let Some(span) = self.validate(q.as_usize(), hay, s, m.end()) {
                    return Some((q.as_usize(), span.0, span.1));
                }
            }
        }
        None
    }

    fn validate(&self, p: usize, hay: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
        match self.validators.get(p).copied().flatten() {
            None => Some((s, e)),
            Some(f) => f(hay, s, e).filter(|&(a, b)| {
                // Defensive: a validator must return a non-empty span on char boundaries.
                a < b && b <= hay.len() && is_boundary(hay, a) && is_boundary(hay, b)
            }),
        }
    }

    /// Which buffered start positions could still begin a growing match (precise stream
    /// release); None if unavailable.
    pub fn liveness(&self) -> Option<&Liveness> {
        self.liveness.as_ref()
    }

    /// Upper bound in bytes of any finding (capped; see [`Matcher::new_with_cap`]).
    pub fn max_match_len(&self) -> usize {
        self.max_len
    }

    /// Capped upper bound of findings of spec `index`.
    pub fn pattern_max_len(&self, index: usize) -> Option<usize> {
        self.max_lens.get(index).copied()
    }

    /// Uncapped bound of spec `index`; None if the pattern is unbounded (or no such spec).
    pub fn pattern_bound(&self, index: usize) -> Option<usize> {
        self.bounds.get(index).copied().flatten()
    }

    /// Labels, indexed by `Finding::pattern`.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

/// Most characters a match of `hir` spans; None if unbounded. Literals count their bytes (an
/// upper bound of their characters).
fn max_chars(hir: &Hir) -> Option<usize> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(lit) => Some(lit.0.len()),
        HirKind::Class(_) => Some(1),
        HirKind::Repetition(r) => {
            let most = usize::try_from(r.max?).ok()?;
            max_chars(&r.sub)?.checked_mul(most)
        }
        HirKind::Capture(c) => max_chars(&c.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .try_fold(0usize, |sum, h| sum.checked_add(max_chars(h)?)),
        HirKind::Alternation(alts) => alts
            .iter()
            .try_fold(0usize, |most, h| Some(most.max(max_chars(h)?))),
    }
}

/// A character boundary `f >= pos` with at least `n` characters in `hay[f..end]` (or `pos`
/// itself): where a match ending at `end` of at most `n` characters can start at the earliest.
/// `hay` is UTF-8 and `pos`, `end` are character boundaries.
fn back_chars(hay: &[u8], pos: usize, end: usize, n: usize) -> usize {
    let mut f = end;
    let mut need = n;
    while need > 0 && f > pos {
        // Step back a byte per character still needed (exact on ASCII), then count how
        // many characters that really covered.
        let g = f - need.min(f - pos);
        let chars = hay[g..f].iter().filter(|&&b| (b & 0xC0) != 0x80).count();
        need = need.saturating_sub(chars);
        f = g;
        // On a continuation byte: go back to its character's start, one more character.
        if (hay[f] & 0xC0) == 0x80 {
            while f > pos && (hay[f] & 0xC0) == 0x80 {
                f -= 1;
            }
            need = need.saturating_sub(1);
        }
    }
    f
}

fn spec_source(index: usize, spec: &PatternSpec) -> Result<SpecSource, ScanError> {
    let mut glue_skip = false;
    let (source, validator, extra_len, rank) = match &spec.kind {
        PatternKind::Builtin(name) => {
            let b =
                detectors::find(name).ok_or_else(|| ScanError::UnknownDetector(name.clone()))?;
            glue_skip = detectors::NUMBER_SHAPED.contains(&b.name);
            (
                detectors::pattern_of(b),
                Some(b.validate),
                b.extra_len,
                (0, usize::from(b.rank)),
            )
        }
        PatternKind::Regex(re) => (ascii_word_boundaries(re), None, 0, (1, index)),
        PatternKind::Keywords(words) => {
            let src = keywords_pattern(words)
                .ok_or_else(|| ScanError::EmptyKeywords(spec.label.clone()))?;
            (src, None, 0, (1, index))
        }
    };
    Ok(SpecSource {
        spec: index,
        rank,
        source,
        validator,
        extra_len,
        glue_skip,
    })
}

/// Keyword list -> `(?:kw1|kw2…)`, case-insensitive, whitespace inside a keyword matches any
/// short whitespace run, and an ASCII word boundary is required on each side whose keyword
/// character is an ASCII word character (so `cat` does not match `concatenate`, while
/// keywords ending in punctuation or non-ASCII letters still match).
pub(crate) fn keywords_pattern(words: &[String]) -> Option<String> {
    let mut alts = Vec::new();
    for w in words {
        let w = w.trim();
        if w.is_empty() {
            continue;
        }
        let mut alt = String::new();
        let word_char = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if word_char(w.chars().next()) {
            alt.push_str(r"(?-u:\b)");
        }
        // ASCII keywords fold ASCII case only (no KELVIN SIGN matching 'k'): cheaper
        // automaton, and what users of an ASCII keyword list expect.
        alt.push_str(if w.is_ascii() { "(?i-u:" } else { "(?i:" });
        for (i, part) in w.split_whitespace().enumerate() {
            if i > 0 {
                alt.push_str(&format!(r"(?-u:\s){{1,{KEYWORD_MAX_SPACE}}}"));
            }
            alt.push_str(&regex::escape(part));
        }
        alt.push(')');
        if word_char(w.chars().last()) {
            alt.push_str(r"(?-u:\b)");
        }
        alts.push(alt);
    }
    if alts.is_empty() {
        return None;
    }
    Some(format!("(?:{})", alts.join("|")))
}

/// In ASCII-only custom regexes, `\b`/`\B` become ASCII word boundaries so the whole set
/// stays on the fast lazy DFA for any input (a Unicode `\b` makes the DFA give up on
/// non-ASCII text). The only behavioural difference is next to non-ASCII letters. Patterns
/// containing non-ASCII characters keep Unicode boundaries (correct for e.g. `\bcafé\b`).
pub(crate) fn ascii_word_boundaries(pattern: &str) -> String {
    if !pattern.is_ascii() || !pattern.contains("\\b") && !pattern.contains("\\B") {
        return pattern.to_string();
    }
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    let mut class_depth = 0usize;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            let n = b[i + 1];
            let braced = b.get(i + 2) == Some(&b'{');
            if class_depth == 0 && (n == b'b' || n == b'B') && !braced {
                out.push_str(if n == b'b' { r"(?-u:\b)" } else { r"(?-u:\B)" });
            } else {
                out.push(c as char);
                out.push(n as char);
            }
            i += 2;
            continue;
        }
        match c {
            b'[' => class_depth += 1,
            b']' if class_depth > 0 => class_depth -= 1,
            _ => {}
        }
        out.push(c as char);
        i += 1;
    }
    // If the rewrite somehow broke the pattern, keep the original (its errors are reported).
    if syntax::parse(&out).is_ok() {
        out
    } else {
        pattern.to_string()
    }
}

fn is_boundary(hay: &[u8], i: usize) -> bool {
    i == hay.len() || hay.get(i).is_some_and(|&b| (b as i8) >= -0x40)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn next_char(hay: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < hay.len() && !is_boundary(hay, j) {
        j += 1;
    }
    j
}

/// Resume point after a rejected candidate at `s`: past its first char, and past the rest
/// of the ASCII alphanumeric run it starts (never inside a token).
fn skip_token(hay: &[u8], s: usize) -> usize {
    let mut j = next_char(hay, s);
    if hay[s].is_ascii_alphanumeric() {
        while j < hay.len() && hay[j].is_ascii_alphanumeric() {
            j += 1;
        }
    }
    j
}

/// What the multi-lane search made of a span (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneOutcome {
    /// The span is too short for lanes, or the patterns have none.
    NotTried,
    /// The lanes found the answer.
    Decided,
    /// The lazy-DFA cache filled up and was cleared while several lanes walked: the other
    /// lanes' states were renumbered, so the plain search took over (by design).
    CacheCleared,
    /// Anything else sent the span to the plain search.
    GaveUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(label: &str, kind: PatternKind) -> PatternSpec {
        PatternSpec {
            label: label.to_string(),
            kind,
        }
    }

    #[test]
    fn character_bounds_of_patterns() {
        let chars = |re: &str| max_chars(&syntax::parse(re).unwrap());
        assert_eq!(chars(r"ab[ü-ÿ]{2,5}"), Some(7));
        assert_eq!(chars(r"(?:xyz|[a-z]{9})\b"), Some(9));
        assert_eq!(chars(r"é"), Some(2), "literals count bytes: an upper bound");
        assert_eq!(chars(r"a+"), None);
    }

    #[test]
    fn back_chars_finds_a_start_with_enough_characters_in_front() {
        let text = "abc ü€😀 défg";
        let hay = text.as_bytes();
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        for &end in boundaries.iter().chain([&hay.len()]) {
            for &pos in boundaries.iter().filter(|&&p| p <= end) {
                for n in 0..16 {
                    let f = back_chars(hay, pos, end, n);
                    assert!(text.is_char_boundary(f) && (pos..=end).contains(&f));
                    let covered = text[f..end].chars().count();
                    assert!(f == pos || covered >= n, "{pos}..{end} n={n}: {f}");
                    assert!(f == end || covered <= n, "{pos}..{end} n={n}: {f}");
                }
            }
        }
    }

    #[test]
    fn keyword_pattern_shapes() {
        let p = keywords_pattern(&["Project Titan".into(), " ".into(), "c++".into()]).unwrap();
        let m = Matcher::new(&[spec("kw", PatternKind::Regex(p))]).unwrap();
        let t = "about project   titan and C++ code; projecttitan no; xc++ no";
        let got: Vec<&str> = m.find(t).iter().map(|f| &t[f.start..f.end]).collect();
        assert_eq!(got, vec!["project   titan", "C++"]);
    }

    #[test]
    fn ascii_boundary_rewrite() {
        assert_eq!(ascii_word_boundaries(r"\bfoo\b"), r"(?-u:\b)foo(?-u:\b)");
        assert_eq!(ascii_word_boundaries(r"[\b]x"), r"[\b]x");
        assert_eq!(ascii_word_boundaries(r"\\b"), r"\\b");
        assert_eq!(ascii_word_boundaries(r"\bcafé\b"), r"\bcafé\b");
        assert_eq!(ascii_word_boundaries(r"\b{start}x"), r"\b{start}x");
    }

    #[test]
    fn no_specs_ok_and_empty_matches_rejected() {
        let none = Matcher::new(&[]).unwrap();
        assert!(none.find("a@b.io 4111 1111 1111 1111").is_empty());
        assert_eq!(none.max_match_len(), 0);
        let e = Matcher::new(&[spec("opt", PatternKind::Regex("a*".into()))]).unwrap_err();
        assert!(matches!(e, ScanError::BadRegex { ref label, .. } if label == "opt"));
    }

    #[test]
    fn skip_token_is_char_safe() {
        let h = "é12ab x".as_bytes();
        assert_eq!(skip_token(h, 0), 2);
        assert_eq!(skip_token(h, 2), 6);
        assert_eq!(skip_token(h, 6), 7);
    }
}
