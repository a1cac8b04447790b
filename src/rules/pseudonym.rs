//! Per-request pseudonym map (`[EMAIL_1]` placeholders, same value → same placeholder) with bounded
//! memory, the placeholder restorer used on responses (a `scan::Rewriter`, so it is stream-safe
//! across delta splits), and the keyed-hash redaction text.

use std::collections::HashMap;

use sha3::{Digest, Sha3_256};

use crate::scan::{Replacement, Rewriter};

/// Most distinct pseudonymized values kept per request; past this (or past 1 MiB of values) new
/// values are masked instead, so memory per request stays bounded.
pub const MAX_PSEUDONYMS: usize = 10_000;
const MAX_PSEUDONYM_BYTES: usize = 1 << 20;

struct Entry {
    value: Box<str>,
    /// Request-side values are restored in the response; values pseudonymized on the response
    /// side are not (that would undo the response rule).
    restorable: bool,
}

#[derive(Default)]
struct TokenMap {
    /// Highest confirmed number.
    last: u32,
    /// Highest number proposed in the current round.
    next_proposal: u32,
    by_value: HashMap<Box<str>, Box<str>>,
}

/// The placeholder ↔ value map of one request.
#[derive(Default)]
pub(crate) struct Pseudonyms {
    by_token: HashMap<Box<str>, TokenMap>,
    by_placeholder: HashMap<Box<str>, Entry>,
    /// Unconfirmed proposals of the current round: (token, value) → placeholder.
    proposed: HashMap<(Box<str>, Box<str>), Box<str>>,
    proposed_bytes: usize,
    bytes: usize,
    restorable: usize,
    max_restorable_len: usize,
}

impl Pseudonyms {
    /// Starts a new proposal round (one `Rewriter::find` call): forgets unconfirmed proposals.
    pub(crate) fn begin(&mut self) {
        self.proposed.clear();
        self.proposed_bytes = 0;
        for t in self.by_token.values_mut() {
            t.next_proposal = t.last;
        }
    }

    /// The placeholder `value` of kind `token` (`EMAIL`) gets if it is applied: its existing one,
    /// else the next free `[EMAIL_<n>]` (the same within one round for the same value). Nothing
    /// is recorded until [`Pseudonyms::confirm`], because the stream scanner re-finds spans
    /// that it does not apply yet. `None` when the map is full (the caller masks instead).
    pub(crate) fn propose(&mut self, token: &str, value: &str) -> Option<String> {
        if let Some(ph) = self.by_token.get(token).and_then(|t| t.by_value.get(value)) {
            return Some(ph.to_string());
        }
        let key = (Box::<str>::from(token), Box::<str>::from(value));
        if let Some(ph) = self.proposed.get(&key) {
            return Some(ph.to_string());
        }
        if self.by_placeholder.len() + self.proposed.len() >= MAX_PSEUDONYMS
            || self.bytes + self.proposed_bytes + value.len() > MAX_PSEUDONYM_BYTES
        {
            return None;
        }
        let t = self.by_token.entry(key.0.clone()).or_default();
        t.next_proposal = t.next_proposal.max(t.last) + 1;
        let ph = format!("[{token}_{}]", t.next_proposal);
        self.proposed_bytes += value.len();
        self.proposed.insert(key, ph.clone().into());
        Some(ph)
    }

    /// Records an applied placeholder. `restorable`: request-side values are restored in the
    /// response; values pseudonymized on the response side are not (that would undo the rule).
    pub(crate) fn confirm(&mut self, token: &str, value: &str, ph: &str, restorable: bool) {
        if let Some(e) = self.by_placeholder.get_mut(ph) {
            if restorable && !e.restorable {
                e.restorable = true;
                self.restorable += 1;
                self.max_restorable_len = self.max_restorable_len.max(ph.len());
            }
            return;
        }
        if self.by_placeholder.len() >= MAX_PSEUDONYMS {
            // Applied but not recorded: the response keeps the placeholder (never leaks).
            return;
        }
        let n: u32 = ph
            .trim_end_matches(']')
            .rsplit('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let t = self.by_token.entry(token.into()).or_default();
        t.last = t.last.max(n);
        t.by_value.insert(value.into(), ph.into());
        self.bytes += value.len();
        if restorable {
            self.restorable += 1;
            self.max_restorable_len = self.max_restorable_len.max(ph.len());
        }
        self.by_placeholder.insert(
            ph.into(),
            Entry {
                value: value.into(),
                restorable,
            },
        );
    }

    /// `propose` + `confirm` in one step (tests).
    #[cfg(test)]
    pub(crate) fn placeholder(
        &mut self,
        token: &str,
        value: &str,
        restorable: bool,
    ) -> Option<String> {
        self.begin();
        let ph = self.propose(token, value)?;
        self.confirm(token, value, &ph, restorable);
        Some(ph)
    }

    /// Original value of a request-side placeholder.
    pub(crate) fn restore(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder
            .get(placeholder)
            .filter(|e| e.restorable)
            .map(|e| &*e.value)
    }

    pub(crate) fn has_restorable(&self) -> bool {
        self.restorable > 0
    }

    pub(crate) fn len(&self) -> usize {
        self.by_placeholder.len()
    }

    /// Longest restorable placeholder (the restorer's hold-back window).
    pub(crate) fn max_len(&self) -> usize {
        self.max_restorable_len
    }
}

/// Rewriter replacing request-side placeholders by their values. Anything that is not exactly a
/// known placeholder (invented `[EMAIL_9]`, mangled `[EMAIL_1`, other brackets) stays as is.
pub(crate) struct Restorer<'a> {
    pub(crate) map: &'a Pseudonyms,
}

fn placeholder_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
}

impl Rewriter for Restorer<'_> {
    fn find(&mut self, haystack: &str, from: usize) -> Vec<Replacement> {
        let mut out = Vec::new();
        let b = haystack.as_bytes();
        let max = self.map.max_len();
        let mut i = from;
        while i < b.len() {
            let Some(off) = b[i..].iter().position(|&c| c == b'[') else {
                break;
            };
            let start = i + off;
            // `[` + [A-Z0-9_]+ + `]`, no longer than the longest placeholder.
            let limit = b.len().min(start + max);
            let mut j = start + 1;
            while j < limit && placeholder_byte(b[j]) {
                j += 1;
            }
            if j < limit && b[j] == b']' && j > start + 1 {
                // Both ends are ASCII, so these are char boundaries.
                if let Some(v) = self.map.restore(&haystack[start..=j]) {
                    out.push(Replacement {
                        start,
                        end: j + 1,
                        text: v.to_string(),
                    });
                    i = j + 1;
                    continue;
                }
            }
            i = start + 1;
        }
        out
    }

    fn max_span(&self) -> usize {
        self.map.max_len().max(1)
    }

    /// Only a trailing `[` followed by placeholder bytes, still shorter than the longest
    /// placeholder, can become a placeholder (at most one: a later `[` ends the tail of an
    /// earlier one). Everything before it is final.
    fn release_bound(&mut self, haystack: &str, from: usize) -> Option<usize> {
        let b = haystack.as_bytes();
        // A `[` before `from` is settled (it was released, or is too far from the end).
        let Some(open) = b
            .get(from..)?
            .iter()
            .rposition(|&c| c == b'[')
            .map(|i| from + i)
        else {
            return Some(b.len());
        };
        let growing =
            b.len() - open < self.max_span() && b[open + 1..].iter().all(|&c| placeholder_byte(c));
        Some(if growing { open } else { b.len() })
    }
}

/// `[EMAIL:3f9a0c1b2d4e]`: first 12 hex digits of SHA3-256 over the length-prefixed key and label
/// and the value. Stable for one key (deployment), unlinkable across keys, not reversible without
/// the key (no dictionary attack on low-entropy values like phone numbers).
pub(crate) fn hash_text(key: &[u8], label: &str, token: &str, value: &str) -> String {
    let mut h = Sha3_256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update((label.len() as u64).to_be_bytes());
    h.update(label.as_bytes());
    h.update(value.as_bytes());
    let d = h.finalize();
    format!("[{token}:{}]", hex::encode(&d[..6]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{rewrite_all, StreamScanner};

    #[test]
    fn same_value_same_placeholder_numbered_per_token() {
        let mut p = Pseudonyms::default();
        assert_eq!(p.placeholder("EMAIL", "a@x.io", true).unwrap(), "[EMAIL_1]");
        assert_eq!(p.placeholder("EMAIL", "b@x.io", true).unwrap(), "[EMAIL_2]");
        assert_eq!(p.placeholder("EMAIL", "a@x.io", true).unwrap(), "[EMAIL_1]");
        assert_eq!(p.placeholder("PHONE", "555", true).unwrap(), "[PHONE_1]");
        assert_eq!(p.restore("[EMAIL_2]"), Some("b@x.io"));
        assert_eq!(p.restore("[EMAIL_3]"), None);
        assert_eq!(p.max_len(), "[EMAIL_1]".len());
    }

    #[test]
    fn response_side_values_are_not_restored() {
        let mut p = Pseudonyms::default();
        assert_eq!(
            p.placeholder("EMAIL", "a@x.io", false).unwrap(),
            "[EMAIL_1]"
        );
        assert!(!p.has_restorable());
        assert_eq!(p.restore("[EMAIL_1]"), None);
        // A later request-side sighting of the same value upgrades it.
        assert_eq!(p.placeholder("EMAIL", "a@x.io", true).unwrap(), "[EMAIL_1]");
        assert_eq!(p.restore("[EMAIL_1]"), Some("a@x.io"));
    }

    #[test]
    fn proposals_are_not_recorded_until_confirmed() {
        let mut p = Pseudonyms::default();
        p.begin();
        assert_eq!(p.propose("EMAIL", "partial@ex").unwrap(), "[EMAIL_1]");
        assert_eq!(p.propose("EMAIL", "b@x.io").unwrap(), "[EMAIL_2]");
        assert_eq!(p.propose("EMAIL", "partial@ex").unwrap(), "[EMAIL_1]");
        // Next round (the scanner re-finds a grown span): numbering restarts after the last
        // confirmed one.
        p.begin();
        assert_eq!(
            p.propose("EMAIL", "partial@example.com").unwrap(),
            "[EMAIL_1]"
        );
        p.confirm("EMAIL", "partial@example.com", "[EMAIL_1]", true);
        assert_eq!(p.len(), 1);
        assert_eq!(p.restore("[EMAIL_1]"), Some("partial@example.com"));
        p.begin();
        assert_eq!(p.propose("EMAIL", "c@x.io").unwrap(), "[EMAIL_2]");
    }

    #[test]
    fn bounded() {
        let mut p = Pseudonyms::default();
        for i in 0..MAX_PSEUDONYMS {
            assert!(p.placeholder("N", &i.to_string(), true).is_some());
        }
        assert!(p.placeholder("N", "one more", true).is_none());
        assert!(
            p.placeholder("N", "5", true).is_some(),
            "known values still map"
        );
        assert_eq!(p.len(), MAX_PSEUDONYMS);
    }

    #[test]
    fn restorer_leaves_unknown_and_mangled() {
        let mut p = Pseudonyms::default();
        p.placeholder("EMAIL", "a@x.io", true);
        p.placeholder("API_KEY_OPENAI", "sk-1", true);
        let mut r = Restorer { map: &p };
        let t = "[EMAIL_1] [EMAIL_9] [EMAIL_1 [[EMAIL_1]] [email_1] [API_KEY_OPENAI_1]";
        assert_eq!(
            rewrite_all(&mut r, t).unwrap(),
            "a@x.io [EMAIL_9] [EMAIL_1 [a@x.io] [email_1] sk-1"
        );
        assert_eq!(rewrite_all(&mut r, "nothing [here]"), None);
        // Split across chunks.
        let mut s = StreamScanner::new();
        let mut out = String::new();
        for c in ["x [EMA", "IL_", "1", "] y"] {
            out += &s.push(&mut r, c);
        }
        out += &s.finish(&mut r);
        assert_eq!(out, "x a@x.io y");
    }

    #[test]
    fn restorer_holds_only_a_growing_placeholder() {
        let mut p = Pseudonyms::default();
        p.placeholder("EMAIL", "a@x.io", true);
        let mut r = Restorer { map: &p };
        let mut s = StreamScanner::new();
        assert_eq!(s.push(&mut r, "Hello there"), "Hello there");
        assert_eq!(s.push(&mut r, ", write to [EM"), ", write to ");
        assert_eq!(s.held(), "[EM".len());
        assert_eq!(s.push(&mut r, "AIL_1] now [x"), "a@x.io now [x");
        // "[EMAIL_12" is already as long as the longest placeholder: it cannot become one.
        assert_eq!(s.push(&mut r, " [EMAIL_1"), " ");
        assert_eq!(s.push(&mut r, "2"), "[EMAIL_12");
        assert_eq!(s.push(&mut r, " [[EMAIL_1"), " [");
        assert_eq!(s.finish(&mut r), "[EMAIL_1");
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = hash_text(b"k1", "email", "EMAIL", "a@x.io");
        assert_eq!(a, hash_text(b"k1", "email", "EMAIL", "a@x.io"));
        assert_ne!(a, hash_text(b"k2", "email", "EMAIL", "a@x.io"));
        assert_ne!(a, hash_text(b"k1", "email", "EMAIL", "b@x.io"));
        assert!(a.starts_with("[EMAIL:") && a.ends_with(']'));
        assert_eq!(a.len(), "[EMAIL:".len() + 12 + 1);
    }
}
