//! Chunk-boundary-safe stream rewriting: [`StreamScanner`] buffers streamed text, releases
//! everything that can no longer be part of a growing match (hold-back = the rewriter's
//! `max_span()`), and keeps a bounded amount of already-released text as look-behind.

use super::matcher::RESYNC_WINDOW;
use super::rewrite::{apply, sanitize};
use super::Rewriter;

/// Bytes past a span's maximal end that must be buffered before the span is final: one
/// full UTF-8 character of look-ahead for `\b` and the validators' "is the number glued to
/// another one" checks (`-5`, `.5`).
const LOOKAHEAD: usize = 4;

/// Minimum already-released text kept as look-behind context (word boundaries, the routing
/// number keyword window).
const MIN_CONTEXT: usize = 64;

/// Hold-backs above this are scanned in batches of `max_span / 2` released bytes, trading a
/// little latency for O(1) amortised work per byte with very large windows.
const BATCH_ABOVE: usize = 1024;

/// Per-stream buffer. Property (tested): for any text and any chunking,
/// `concat(push(..)..., finish())` equals `rewrite_all(text).unwrap_or(text)` as long as
/// no replaced span is longer than `max_span()`.
///
/// Memory: at most `max_span + LOOKAHEAD + batch + chunk` unreleased bytes plus about
/// `2 * context` bytes of released context, context = `clamp(max_span, 64, 512)`.
#[derive(Debug, Default, Clone)]
pub struct StreamScanner {
    /// Original (unrewritten) text: released context, then unreleased bytes.
    buf: String,
    /// Index in `buf` of the first byte not yet released.
    released: usize,
}

impl StreamScanner {
    pub fn new() -> Self {
        StreamScanner::default()
    }

    /// Appends `chunk` and returns the rewritten text that is now final (possibly empty).
    pub fn push<R: Rewriter + ?Sized>(&mut self, rw: &mut R, chunk: &str) -> String {
        self.buf.push_str(chunk);
        let hold = rw.max_span();
        // Spans starting before `cut` are final: they end at most `hold` bytes later, and
        // the look-ahead after their end is already buffered.
        let cut = floor_char_boundary(
            &self.buf,
            self.buf
                .len()
                .saturating_sub(hold.saturating_add(LOOKAHEAD)),
        );
        let batch = if hold > BATCH_ABOVE { hold / 2 } else { 0 };
        if cut <= self.released || cut - self.released < batch {
            return String::new();
        }
        let reps = sanitize(rw.find(&self.buf, self.released), &self.buf, self.released);
        let n_final = reps.iter().take_while(|r| r.start < cut).count();
        let finals = &reps[..n_final];
        let release_to = finals.last().map_or(cut, |r| r.end.max(cut));
        let out = apply(&self.buf, self.released, release_to, finals);
        rw.commit(finals);
        self.released = release_to;
        self.compact(hold);
        out
    }

    /// Flushes everything still held (end of stream). The scanner is empty afterwards and
    /// can be reused.
    pub fn finish<R: Rewriter + ?Sized>(&mut self, rw: &mut R) -> String {
        let out = if self.released < self.buf.len() {
            let reps = sanitize(rw.find(&self.buf, self.released), &self.buf, self.released);
            let out = apply(&self.buf, self.released, self.buf.len(), &reps);
            rw.commit(&reps);
            out
        } else {
            String::new()
        };
        self.buf.clear();
        self.released = 0;
        out
    }

    /// Bytes received but not yet released.
    pub fn held(&self) -> usize {
        self.buf.len() - self.released
    }

    /// Bytes buffered in total (held + look-behind context).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops released text beyond the look-behind context (in steps of at least `context`
    /// bytes, so small pushes do not memmove the buffer every time).
    fn compact(&mut self, hold: usize) {
        let context = hold.clamp(MIN_CONTEXT, RESYNC_WINDOW);
        if self.released < 2 * context {
            return;
        }
        let drop = floor_char_boundary(&self.buf, self.released - context);
        self.buf.drain(..drop);
        self.released -= drop;
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{rewrite_all, BuiltinRewriter, Matcher, PatternSpec, Replacement};

    fn stream_with<R: Rewriter>(rw: &mut R, chunks: &[&str]) -> String {
        let mut s = StreamScanner::new();
        let mut out = String::new();
        for c in chunks {
            out.push_str(&s.push(rw, c));
        }
        out.push_str(&s.finish(rw));
        out
    }

    fn small_matcher() -> Matcher {
        let specs: Vec<PatternSpec> = ["email", "phone", "credit_card", "us_ssn", "ipv4"]
            .iter()
            .map(|n| PatternSpec::builtin(n))
            .collect();
        Matcher::new_with_cap(&specs, 128).unwrap()
    }

    #[test]
    fn split_email_is_masked() {
        let m = small_matcher();
        let text = "Contact: jane.doe@example.com, thanks! ".repeat(20);
        let chunks: Vec<&str> = text
            .as_bytes()
            .chunks(3)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let mut rw = BuiltinRewriter::new(&m);
        let out = stream_with(&mut rw, &chunks);
        assert!(!out.contains("jane.doe"));
        assert_eq!(
            out,
            rewrite_all(&mut BuiltinRewriter::new(&m), &text).unwrap()
        );
        // counted once per finding even though spans were re-found across pushes
        assert_eq!(rw.counts().get("email"), Some(&20));
    }

    #[test]
    fn releases_early_and_memory_is_bounded() {
        let m = small_matcher();
        let mut rw = BuiltinRewriter::new(&m);
        let hold = rw.max_span();
        let mut s = StreamScanner::new();
        let word = "lorem ipsum dolor sit amet ";
        let mut released = 0;
        let mut total = 0;
        for _ in 0..2000 {
            total += word.len();
            released += s.push(&mut rw, word).len();
            assert!(total - released <= hold + LOOKAHEAD + word.len());
            assert!(
                s.buffered()
                    <= hold + LOOKAHEAD + word.len() + 2 * RESYNC_WINDOW.min(hold.max(64)) + 8
            );
        }
        released += s.finish(&mut rw).len();
        assert_eq!(released, total);
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn multibyte_chunks() {
        let m = small_matcher();
        let text = "漢字 é 🎉 call +1 (415) 555-2671 or mail ünï@example.com 🎉 done";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        let out = stream_with(&mut BuiltinRewriter::new(&m), &refs);
        let whole = rewrite_all(&mut BuiltinRewriter::new(&m), text).unwrap();
        assert_eq!(out, whole);
        assert!(out.contains("[REDACTED:PHONE]"));
    }

    /// A rewriter with a fixed small window, to test the release logic independently.
    struct Upper;
    impl Rewriter for Upper {
        fn find(&mut self, h: &str, from: usize) -> Vec<Replacement> {
            // replace every "abc" with "X"
            h[from..]
                .match_indices("abc")
                .map(|(i, _)| Replacement {
                    start: from + i,
                    end: from + i + 3,
                    text: "X".into(),
                })
                .collect()
        }
        fn max_span(&self) -> usize {
            3
        }
    }

    #[test]
    fn generic_rewriter_every_split() {
        let text = "zabcabcyabzabcé漢abc";
        let want = rewrite_all(&mut Upper, text).unwrap();
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &a in &bounds {
            for &b in bounds.iter().filter(|&&b| b >= a) {
                let got = stream_with(&mut Upper, &[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(got, want, "split at {a},{b}");
            }
        }
    }
}
