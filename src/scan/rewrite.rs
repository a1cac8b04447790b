//! Rewriting on top of findings: the [`Rewriter`] trait shared with the rules engine,
//! whole-text [`rewrite_all`], mask labels, the masking [`BuiltinRewriter`] used by
//! `jimini scan`, and the JSON report of `jimini scan --json`.

use std::collections::BTreeMap;

use super::{Finding, Matcher};

/// Replace `haystack[start..end]` with `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Something that decides which spans of a text to replace.
pub trait Rewriter {
    /// Spans to replace in `haystack`, starting at or after `from` (haystack[..from] is
    /// context only), sorted, non-overlapping. `&mut self` so implementors can keep state
    /// (pseudonym maps ...).
    ///
    /// NOTE: [`super::StreamScanner`] may call `find` several times over the same bytes (spans
    /// near the end of its buffer are not final yet and are found again after more text
    /// arrives). Count findings in [`Rewriter::commit`], which sees each applied span once.
    fn find(&mut self, haystack: &str, from: usize) -> Vec<Replacement>;

    /// Upper bound in bytes of any span this rewriter can return (hold-back window).
    fn max_span(&self) -> usize;

    /// Precise stream release (optional): an index `b >= from` such that no span this
    /// rewriter could return for any continuation of `haystack` starts in `[from, b)` and is
    /// not already decided by `haystack` alone (growing matches, pending look-ahead).
    /// `haystack[..from]` is settled already. [`super::StreamScanner`] releases text up to
    /// the larger of `b` and its fixed window (`max_span()` + look-ahead before the end).
    /// Default `None`: fixed window only.
    fn release_bound(&mut self, _haystack: &str, _from: usize) -> Option<usize> {
        None
    }

    /// Called once with the replacements actually applied (by [`rewrite_all`] and by the
    /// stream scanner when it releases them). Offsets refer to the haystack of the
    /// preceding `find` call. Default: nothing.
    fn commit(&mut self, _applied: &[Replacement]) {}
}

/// Rewrites a whole text; `None` if nothing was replaced.
pub fn rewrite_all<R: Rewriter + ?Sized>(rw: &mut R, text: &str) -> Option<String> {
    let reps = sanitize(rw.find(text, 0), text, 0);
    if reps.is_empty() {
        return None;
    }
    let out = apply(text, 0, text.len(), &reps);
    rw.commit(&reps);
    Some(out)
}

/// Drops replacements a buggy rewriter may return (out of range, off char boundaries,
/// overlapping, before `from`) instead of panicking on user traffic; sorts the rest.
pub(crate) fn sanitize(mut reps: Vec<Replacement>, text: &str, from: usize) -> Vec<Replacement> {
    if reps.windows(2).any(|w| w[0].start > w[1].start) {
        reps.sort_by_key(|r| (r.start, r.end));
    }
    let mut last_end = from;
    let before = reps.len();
    reps.retain(|r| {
        let ok = r.start >= last_end
            && r.start <= r.end
            && r.end <= text.len()
            && text.is_char_boundary(r.start)
            && text.is_char_boundary(r.end);
        if ok {
            last_end = r.end;
        }
        ok
    });
    if reps.len() != before {
        tracing::warn!(
            dropped = before - reps.len(),
            "rewriter returned invalid replacement spans"
        );
    }
    reps
}

/// `text[from..to]` with `reps` (sanitized, all within `from..to`) applied.
pub(crate) fn apply(text: &str, from: usize, to: usize, reps: &[Replacement]) -> String {
    let extra: usize = reps.iter().map(|r| r.text.len()).sum();
    let mut out = String::with_capacity(to - from + extra);
    let mut pos = from;
    for r in reps {
        out.push_str(&text[pos..r.start]);
        out.push_str(&r.text);
        pos = r.end;
    }
    out.push_str(&text[pos..to]);
    out
}

/// Mask text for a detector/label: `email` -> `[REDACTED:EMAIL]`,
/// `api_key.openai` -> `[REDACTED:API_KEY_OPENAI]`.
pub fn mask_label(detector: &str) -> String {
    let mut s = String::with_capacity(detector.len() + 12);
    s.push_str("[REDACTED:");
    for c in detector.chars() {
        if c.is_alphanumeric() {
            s.extend(c.to_uppercase());
        } else {
            s.push('_');
        }
    }
    s.push(']');
    s
}

/// Masks every finding of a [`Matcher`] with [`mask_label`] of its label and counts
/// applied findings per label.
#[derive(Debug)]
pub struct BuiltinRewriter<'m> {
    matcher: &'m Matcher,
    masks: Vec<String>,
    counts: BTreeMap<String, u64>,
    last: Vec<Finding>,
}

impl<'m> BuiltinRewriter<'m> {
    pub fn new(matcher: &'m Matcher) -> Self {
        BuiltinRewriter {
            matcher,
            masks: matcher.labels().iter().map(|l| mask_label(l)).collect(),
            counts: BTreeMap::new(),
            last: Vec::new(),
        }
    }

    /// Applied findings per label so far.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Total applied findings so far.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

impl Rewriter for BuiltinRewriter<'_> {
    fn find(&mut self, haystack: &str, from: usize) -> Vec<Replacement> {
        self.last = self.matcher.find_from(haystack, from);
        self.last
            .iter()
            .map(|f| Replacement {
                start: f.start,
                end: f.end,
                text: self.masks[f.pattern].clone(),
            })
            .collect()
    }

    fn max_span(&self) -> usize {
        self.matcher.max_match_len()
    }

    fn release_bound(&mut self, haystack: &str, from: usize) -> Option<usize> {
        let live = self.matcher.liveness()?;
        Some(live.earliest_live_start(haystack, from, haystack.len()))
    }

    fn commit(&mut self, applied: &[Replacement]) {
        for r in applied {
            if let Ok(i) = self.last.binary_search_by_key(&r.start, |f| f.start) {
                let label = &self.matcher.labels()[self.last[i].pattern];
                match self.counts.get_mut(label) {
                    Some(n) => *n += 1,
                    None => {
                        self.counts.insert(label.clone(), 1);
                    }
                }
            }
        }
    }
}

/// `jimini scan --json`: `{"findings":[{"detector":"email","start":12,"end":29}],
/// "redacted":"…"}` with byte offsets into `input`.
pub fn scan_report(m: &Matcher, input: &str) -> serde_json::Value {
    let findings = m.find(input);
    let labels = m.labels();
    let reps: Vec<Replacement> = findings
        .iter()
        .map(|f| Replacement {
            start: f.start,
            end: f.end,
            text: mask_label(&labels[f.pattern]),
        })
        .collect();
    let redacted = apply(input, 0, input.len(), &reps);
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "detector": labels[f.pattern],
                "start": f.start,
                "end": f.end,
            })
        })
        .collect();
    serde_json::json!({ "findings": list, "redacted": redacted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{PatternKind, PatternSpec};

    #[test]
    fn mask_labels() {
        assert_eq!(mask_label("email"), "[REDACTED:EMAIL]");
        assert_eq!(mask_label("api_key.openai"), "[REDACTED:API_KEY_OPENAI]");
        assert_eq!(mask_label("pii.custom-id"), "[REDACTED:PII_CUSTOM_ID]");
    }

    #[test]
    fn rewrite_all_masks_and_counts() {
        let m = Matcher::builtin().unwrap();
        let mut rw = BuiltinRewriter::new(&m);
        let text = "mail bob@example.com or alice@example.org, card 4111 1111 1111 1111.";
        let out = rewrite_all(&mut rw, text).unwrap();
        assert_eq!(
            out,
            "mail [REDACTED:EMAIL] or [REDACTED:EMAIL], card [REDACTED:CREDIT_CARD]."
        );
        assert_eq!(rw.counts().get("email"), Some(&2));
        assert_eq!(rw.counts().get("credit_card"), Some(&1));
        assert_eq!(rw.total(), 3);
        assert_eq!(rewrite_all(&mut rw, "nothing to see here"), None);
    }

    #[test]
    fn report_json() {
        let m = Matcher::builtin().unwrap();
        let text = "héllo, write to john.doe@example.com now";
        let v = scan_report(&m, text);
        let start = text.find("john").unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "findings": [{"detector": "email", "start": start, "end": start + 20}],
                "redacted": "héllo, write to [REDACTED:EMAIL] now"
            })
        );
    }

    struct Bad;
    impl Rewriter for Bad {
        fn find(&mut self, _h: &str, _f: usize) -> Vec<Replacement> {
            vec![
                Replacement {
                    start: 5,
                    end: 3,
                    text: "x".into(),
                },
                Replacement {
                    start: 0,
                    end: 2,
                    text: "AB".into(),
                },
                Replacement {
                    start: 1,
                    end: 4,
                    text: "overlap".into(),
                },
                Replacement {
                    start: 1000,
                    end: 1001,
                    text: "oob".into(),
                },
            ]
        }
        fn max_span(&self) -> usize {
            4
        }
    }

    #[test]
    fn invalid_spans_are_dropped_not_panicking() {
        assert_eq!(rewrite_all(&mut Bad, "abcdef").as_deref(), Some("ABcdef"));
        // multi-byte: a span ending inside 'é' is dropped
        struct Mid;
        impl Rewriter for Mid {
            fn find(&mut self, _h: &str, _f: usize) -> Vec<Replacement> {
                vec![Replacement {
                    start: 0,
                    end: 2,
                    text: "x".into(),
                }]
            }
            fn max_span(&self) -> usize {
                2
            }
        }
        assert_eq!(rewrite_all(&mut Mid, "aé"), None);
    }

    #[test]
    fn custom_specs_in_rewriter() {
        let specs = vec![
            PatternSpec {
                label: "acme.ticket".into(),
                kind: PatternKind::Regex(r"\bTCK-\d{6}\b".into()),
            },
            PatternSpec {
                label: "acme.codename".into(),
                kind: PatternKind::Keywords(vec!["Project Titan".into(), "blue falcon".into()]),
            },
        ];
        let m = Matcher::new(&specs).unwrap();
        let mut rw = BuiltinRewriter::new(&m);
        let out = rewrite_all(
            &mut rw,
            "see TCK-123456 about project titan; not TCK-1234567",
        )
        .unwrap();
        assert_eq!(
            out,
            "see [REDACTED:ACME_TICKET] about [REDACTED:ACME_CODENAME]; not TCK-1234567"
        );
    }
}
