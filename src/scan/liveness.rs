//! Precise stream release: [`Liveness`] tells which start positions of a buffered text could
//! still begin a match once more text arrives, so [`super::StreamScanner`] releases text as
//! soon as no finding can still be growing across it (instead of a fixed hold-back window).
//!
//! It is ONE anchored lazy DFA (`MatchKind::All`) over the very NFA the [`super::Matcher`]
//! compiles from its pattern HIRs, run from each candidate start until it dies. In prose
//! almost every start dies within a byte or two (word boundaries, first-byte classes), so
//! the cost is a few cached transitions per released byte. DFA caches come from a
//! per-thread pool (like the meta regex's), so memory does not grow with open streams.

use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson::{self, WhichCaptures, NFA};
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input, MatchKind};

/// Bytes after a match's end that must be buffered before the match is final (validators
/// look at the next one or two bytes: `123-45-6789` + `0` is not an SSN; one full UTF-8
/// character covers `\b`). The stream scanner uses the same margin.
pub(crate) const LOOKAHEAD: usize = 4;

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// Liveness oracle for a compiled pattern set. Immutable, `Send + Sync`.
pub struct Liveness {
    dfa: DFA,
    pool: Pool<Cache, CacheFn>,
    filter: StartFilter,
    /// Per pattern id: a validator may extend a match past the regex end (PEM body), so a
    /// start whose regex already matched stays live (the fixed window bounds it).
    extends: Vec<bool>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("patterns", &self.extends.len())
            .finish_non_exhaustive()
    }
}

/// Why a [`Liveness`] could not be built (the scanner then keeps the fixed window).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LivenessError {
    #[error("liveness NFA: {0}")]
    Nfa(#[from] Box<thompson::BuildError>),
    #[error("liveness DFA: {0}")]
    Dfa(#[from] Box<regex_automata::hybrid::BuildError>),
}

impl Liveness {
    /// Builds the oracle. `compile` turns the matcher's patterns (in its pattern-id order) into
    /// an NFA with the given compiler (configured here: no captures, forward); `extends[i]`
    /// marks patterns whose validator may extend a match beyond the regex end.
    pub(crate) fn new(
        compile: impl FnOnce(&thompson::Compiler) -> Result<NFA, Box<thompson::BuildError>>,
        extends: Vec<bool>,
    ) -> Result<Liveness, LivenessError> {
        let mut compiler = thompson::Compiler::new();
        compiler.configure(
            thompson::Config::new()
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(64 << 20)),
        );
        let nfa = compile(&compiler)?;
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    // Custom patterns with Unicode `\b`: the DFA quits on non-ASCII bytes
                    // (treated as live) instead of failing to build.
                    .unicode_word_boundary(true)
                    .cache_capacity(4 << 20)
                    .skip_cache_capacity_check(true)
                    // Never give up on an inefficient cache: runs are short, and a give-up
                    // would only make a start look live.
                    .minimum_cache_clear_count(None),
            )
            .build_from_nfa(nfa)
            .map_err(Box::new)?;
        let filter = StartFilter::new(&dfa);
        let for_pool = dfa.clone();
        let create: CacheFn = Box::new(move || for_pool.create_cache());
        Ok(Liveness {
            dfa,
            pool: Pool::new(create),
            filter,
            extends,
        })
    }

    /// The forward NFA of the matcher's patterns (shared with the two-lane search).
    pub(crate) fn nfa(&self) -> &NFA {
        self.dfa.get_nfa()
    }

    /// The smallest char boundary `p` in `[from, to)` from which an anchored run over
    /// `haystack[p..]` has not died (a match starting at `p` could still grow or its
    /// look-ahead is not buffered yet), or `to` if there is none. `haystack[..p]` is
    /// look-behind context. Cost: the bytes each examined start survives.
    pub fn earliest_live_start(&self, haystack: &str, from: usize, to: usize) -> usize {
        let hay = haystack.as_bytes();
        let to = to.min(hay.len());
        if from >= to {
            return to;
        }
        let mut cache = None;
        (from..to)
            .find(|&p| {
                haystack.is_char_boundary(p)
                    && self.filter.may_start(hay, p)
                    && self.live_at(cache.get_or_insert_with(|| self.pool.get()), hay, p)
            })
            .unwrap_or(to)
    }

    /// Whether a match starting at `p` is not settled by `hay` alone. Errors (quit bytes,
    /// cache trouble) count as live: the caller then falls back to its fixed window.
    fn live_at(&self, cache: &mut Cache, hay: &[u8], p: usize) -> bool {
        let len = hay.len();
        let input = Input::new(hay).span(p..len).anchored(Anchored::Yes);
        let Ok(mut sid) = self.dfa.start_state_forward(cache, &input) else {
            return true;
        };
        if sid.is_dead() {
            return false;
        }
        for (at, &b) in hay.iter().enumerate().skip(p) {
            sid = match self.dfa.next_state(cache, sid, b) {
                Ok(s) => s,
                Err(_) => return true,
            };
            if sid.is_tagged() {
                if sid.is_dead() {
                    return false;
                }
                if sid.is_quit() {
                    return true;
                }
                // Matches are delayed by one byte: this one ends at `at`.
                if sid.is_match() && (len - at < LOOKAHEAD || self.extending_match(cache, sid)) {
                    return true;
                }
            }
        }
        // Still running at the end of the buffer: more text could extend (or complete) it.
        true
    }

    fn extending_match(&self, cache: &Cache, sid: LazyStateID) -> bool {
        (0..self.dfa.match_len(cache, sid)).any(|i| {
            let pid = self.dfa.match_pattern(cache, sid, i);
            self.extends.get(pid.as_usize()).copied().unwrap_or(true)
        })
    }
}

/// Which first bytes survive the anchored start state, per look-behind byte: most positions
/// of prose are rejected by one table lookup instead of a DFA start-state computation.
struct StartFilter {
    /// Look-behind byte (256 = start of haystack) -> index into `rows`.
    row_of: Box<[u8; 257]>,
    /// Bitsets over the first byte; bit set = a run from there might not die at once.
    rows: Vec<[u64; 4]>,
}

impl StartFilter {
    /// Precomputes the rows from the DFA (one row per distinct start state: a handful). Any
    /// doubt (errors, quit states, a cache clear while building) leaves a bit set, which only
    /// sends that position through the full check.
    fn new(dfa: &DFA) -> StartFilter {
        const ALL: [u64; 4] = [u64::MAX; 4];
        let unfiltered = || StartFilter {
            row_of: Box::new([0; 257]),
            rows: vec![ALL],
        };
        let mut cache = dfa.create_cache();
        let mut starts: Vec<LazyStateID> = Vec::new();
        let mut f = unfiltered();
        for lb in 0..257usize {
            let buf = [lb as u8, 0];
            let input = if lb == 256 {
                Input::new(&buf[1..]).anchored(Anchored::Yes)
            } else {
                Input::new(&buf[..]).span(1..2).anchored(Anchored::Yes)
            };
            let Ok(sid) = dfa.start_state_forward(&mut cache, &input) else {
                continue; // row 0: everything may start
            };
            if let Some(i) = starts.iter().position(|&s| s == sid) {
                f.row_of[lb] = (i + 1) as u8;
                continue;
            }
            if starts.len() >= 200 {
                return unfiltered();
            }
            let mut row = [0u64; 4];
            for b in 0..=255u8 {
                let next = dfa.next_state(&mut cache, sid, b);
                if !next.is_ok_and(|n| n.is_dead()) {
                    row[usize::from(b >> 6)] |= 1 << (b & 63);
                }
            }
            starts.push(sid);
            f.rows.push(row);
            f.row_of[lb] = starts.len() as u8;
        }
        // State ids are only comparable while the cache was never cleared.
        if cache.clear_count() > 0 {
            return unfiltered();
        }
        f
    }

    #[inline]
    fn may_start(&self, hay: &[u8], p: usize) -> bool {
        let lb = p.checked_sub(1).map_or(256, |i| usize::from(hay[i]));
        let row = &self.rows[usize::from(self.row_of[lb])];
        let b = hay[p];
        row[usize::from(b >> 6)] >> (b & 63) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use crate::scan::{Matcher, PatternKind, PatternSpec};

    fn builtin() -> &'static Matcher {
        static M: std::sync::OnceLock<Matcher> = std::sync::OnceLock::new();
        M.get_or_init(|| Matcher::new_with_cap(&crate::scan::builtin_specs(), 128).unwrap())
    }

    fn live(m: &Matcher, text: &str) -> usize {
        let l = m.liveness().expect("liveness builds");
        l.earliest_live_start(text, 0, text.len())
    }

    #[test]
    fn prose_holds_only_the_unfinished_word() {
        let m = builtin();
        assert_eq!(live(m, "Hello there, how ar"), "Hello there, how ".len());
        assert_eq!(live(m, "Hello there, how "), "Hello there, how ".len());
        assert_eq!(live(m, "Fine. "), "Fine. ".len());
        assert_eq!(live(m, "漢字 é 🎉 ok"), "漢字 é 🎉 ".len());
    }

    #[test]
    fn pii_prefixes_are_live() {
        let m = builtin();
        // an email in progress is held from its local part
        assert_eq!(live(m, "mail jane@exa"), 5);
        assert_eq!(live(m, "mail jane@example.com"), 5);
        // complete, but the look-ahead after it is not buffered yet
        assert_eq!(live(m, "mail jane@example.com, "), 5);
        assert_eq!(
            live(m, "mail jane@example.com, ok "),
            "mail jane@example.com, ok ".len()
        );
        // digit runs could become cards, phones, SSNs
        assert_eq!(live(m, "see 415 555"), 4);
        // after a phone word the word is held too: "call 44 20 7946 0958" is a phone from
        // its country code, which only the word shows
        assert_eq!(live(m, "call 415 555"), 0);
        assert_eq!(live(m, "ssn 123-45-6789"), 4);
        assert_eq!(live(m, "key sk-ab"), 4);
        // validators look past the end: a complete SSN needs its look-ahead buffered
        assert_eq!(live(m, "ssn 123-45-6789 x"), 4);
        assert_eq!(
            live(m, "ssn 123-45-6789 is ok"),
            "ssn 123-45-6789 is ".len()
        );
    }

    #[test]
    fn start_filter_only_rejects_dead_starts() {
        let m = builtin();
        let l = m.liveness().unwrap();
        let text = "Hi (ünï) 漢 jane@x.io, +1 (415) 555-2671; -----BEGIN 10.0.0.1 \n\r\tAKIA sk-ant- ::1 eyJ x:y@z _a";
        let hay = text.as_bytes();
        let mut cache = l.dfa.create_cache();
        let mut rejected = 0;
        for p in (0..hay.len()).filter(|&p| text.is_char_boundary(p)) {
            if !l.filter.may_start(hay, p) {
                rejected += 1;
                assert!(
                    !l.live_at(&mut cache, hay, p),
                    "filter rejected live start {p}"
                );
            }
        }
        assert!(rejected > hay.len() / 3, "{rejected}");
    }

    #[test]
    fn extending_patterns_stay_live() {
        let m = builtin();
        let t = "x -----BEGIN RSA PRIVATE KEY-----\nMIIE and much more text after it";
        assert_eq!(live(m, t), 2);
    }

    #[test]
    fn custom_patterns_and_lookbehind() {
        let specs = vec![
            PatternSpec {
                label: "ticket".into(),
                kind: PatternKind::Regex(r"\bTCK-\d{6}\b".into()),
            },
            PatternSpec {
                label: "kw".into(),
                kind: PatternKind::Keywords(vec!["Project Titan".into()]),
            },
            PatternSpec {
                label: "uni".into(),
                kind: PatternKind::Regex(r"\bcafé\b".into()),
            },
        ];
        let m = Matcher::new(&specs).unwrap();
        assert_eq!(live(&m, "see TCK-12"), 4);
        assert_eq!(live(&m, "see xTCK-12"), "see xTCK-12".len());
        assert_eq!(live(&m, "about project  ti"), 6);
        assert_eq!(live(&m, "about projects"), "about projects".len());
        // Unicode `\b`: the lazy DFA quits on non-ASCII bytes; quitting counts as live.
        assert_eq!(live(&m, "un caf"), 3);
        let l = m.liveness().unwrap();
        assert_eq!(l.earliest_live_start("see TCK-12", 5, 7), 7);
        assert_eq!(l.earliest_live_start("see TCK-12", 9, 3), 3);
    }
}
