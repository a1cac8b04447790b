//! Chunk-boundary-safe stream rewriting: [`StreamScanner`] buffers streamed text, releases
//! everything that can no longer be part of a growing match, and keeps a bounded amount of
//! already-released text as look-behind. The release point is the rewriter's precise
//! [`Rewriter::release_bound`] (text is released as soon as no finding can still be growing
//! across it), never later than the fixed window `max_span()` + look-ahead before the end.

use super::liveness::LOOKAHEAD;
use super::matcher::RESYNC_WINDOW;
use super::rewrite::{apply, sanitize};
use super::Rewriter;

/// Minimum already-released text kept as look-behind context (word boundaries, the routing
/// number keyword window).
const MIN_CONTEXT: usize = 64;

/// Hold-backs above this are scanned in batches (of `max_span / 2` released bytes at the
/// fixed window, of 1/8 of the rescanned context at a precise bound), trading a little
/// latency for O(1) amortised work per byte with very large windows.
const BATCH_ABOVE: usize = 1024;

/// Held bytes up to which the precise bound is recomputed on every push. Above it (a long
/// match still growing), it is recomputed only after the held text grew by a quarter, so
/// the work stays amortised O(1) per byte whatever the window.
const RECHECK_FREE: usize = 256;

/// Per-stream buffer. Property (tested): for any text and any chunking,
/// `concat(push(..)..., finish())` equals `rewrite_all(text).unwrap_or(text)` as long as
/// no replaced span is longer than `max_span()`.
///
/// Latency: with a rewriter that implements [`Rewriter::release_bound`], held text is only
/// what could still be (the start of) a finding — in prose, the unfinished last word.
///
/// Memory: at most `max_span + LOOKAHEAD + batch + chunk` unreleased bytes plus about
/// `2 * context` bytes of released context, context = `clamp(max_span, 64, 512)`.
#[derive(Debug, Default, Clone)]
pub struct StreamScanner {
    /// Original (unrewritten) text: released context, then unreleased bytes.
    buf: String,
    /// Index in `buf` of the first byte not yet released.
    released: usize,
    /// Buffer length before which the precise bound is not recomputed (set while a long
    /// held match keeps it stuck; cleared on every release, hence never stale after a
    /// compaction).
    recheck_at: Option<usize>,
}

impl StreamScanner {
    pub fn new() -> Self {
        StreamScanner::default()
    }

    /// Appends `chunk` and returns the rewritten text that is now final (possibly empty).
    pub fn push<R: Rewriter + ?Sized>(&mut self, rw: &mut R, chunk: &str) -> String {
        self.buf.push_str(chunk);
        let len = self.buf.len();
        let hold = rw.max_span();
        // Spans starting before `fixed` are final: they end at most `hold` bytes later, and
        // the look-ahead after their end is already buffered.
        let fixed = floor_char_boundary(
            &self.buf,
            len.saturating_sub(hold.saturating_add(LOOKAHEAD)),
        );
        // Spans starting before `cut` are final too: the rewriter says none starting in
        // `[from, bound)` can still grow or change.
        let mut cut = fixed;
        let from = fixed.max(self.released);
        let checked = from < len && self.recheck_at.is_none_or(|r| len >= r);
        if checked {
            if let Some(bound) = rw.release_bound(&self.buf, from) {
                cut = cut.max(floor_char_boundary(&self.buf, bound));
            }
        }
        let batch = match hold {
            h if h <= BATCH_ABOVE => 0,
            _ if cut > fixed => self.released.min(RESYNC_WINDOW) / 8,
            h => h / 2,
        };
        if cut <= self.released || cut - self.released < batch {
            let held = len - self.released;
            if checked && held > RECHECK_FREE {
                self.recheck_at = Some(len + held / 4);
            }
            return String::new();
        }
        self.recheck_at = None;
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
        self.recheck_at = None;
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

#[cfg(test)]
mod release_tests {
    //! Precise release (via `Rewriter::release_bound`): latency and equivalence with the
    //! fixed window.
    use super::*;
    use crate::scan::{builtin_specs, rewrite_all, BuiltinRewriter, Matcher, Replacement};
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// The same rewriter without a precise bound: today's fixed window only.
    struct Fixed<R>(R);
    impl<R: Rewriter> Rewriter for Fixed<R> {
        fn find(&mut self, h: &str, from: usize) -> Vec<Replacement> {
            self.0.find(h, from)
        }
        fn max_span(&self) -> usize {
            self.0.max_span()
        }
        fn commit(&mut self, applied: &[Replacement]) {
            self.0.commit(applied)
        }
    }

    /// All built-ins with the shipped hold-back cap.
    fn builtins() -> &'static Matcher {
        static M: OnceLock<Matcher> = OnceLock::new();
        M.get_or_init(|| Matcher::new_with_cap(&builtin_specs(), 128).unwrap())
    }

    fn chunks(text: &str, size: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let mut end = (pos + size).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push(&text[pos..end]);
            pos = end;
        }
        out
    }

    /// Bytes after the last whitespace (the token still being typed: `asking.` could still
    /// become `asking.x@example.com`).
    fn unfinished_word(text: &str) -> usize {
        text.len()
            - text
                .char_indices()
                .rfind(|(_, c)| c.is_whitespace())
                .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// Streams `text` in `size`-byte chunks; returns (output, held bytes after each push).
    fn run<R: Rewriter>(rw: &mut R, text: &str, size: usize) -> (String, Vec<usize>) {
        let mut s = StreamScanner::new();
        let mut out = String::new();
        let mut held = Vec::new();
        for c in chunks(text, size) {
            out.push_str(&s.push(rw, c));
            held.push(s.held());
        }
        out.push_str(&s.finish(rw));
        (out, held)
    }

    #[test]
    fn prose_is_released_up_to_the_unfinished_word() {
        let m = builtins();
        let text = "Hello there, how are you today? I'm fine: thanks for asking. ".repeat(4);
        let mut rw = BuiltinRewriter::new(m);
        let mut s = StreamScanner::new();
        let (mut out, mut recv) = (String::new(), 0);
        for c in chunks(&text, 4) {
            out.push_str(&s.push(&mut rw, c));
            recv += c.len();
            let got = &text[..recv];
            assert!(
                s.held() <= unfinished_word(got) + LOOKAHEAD,
                "held {} after {got:?}",
                s.held()
            );
            assert_eq!(out, got[..recv - s.held()]);
        }
        // "Hello th": the first word is out after the second 4-byte delta.
        assert_eq!(run(&mut BuiltinRewriter::new(m), &text[..8], 4).1, [4, 2]);
        // The fixed window alone holds the first max_span + LOOKAHEAD bytes.
        let (_, fixed) = run(&mut Fixed(BuiltinRewriter::new(m)), &text, 4);
        assert_eq!(fixed[..32].iter().max(), Some(&128));
        assert!(fixed[40..].iter().all(|&h| h >= 128 + LOOKAHEAD - 4));
    }

    #[test]
    fn pii_in_progress_is_held_from_its_start() {
        let m = builtins();
        let mut rw = BuiltinRewriter::new(m);
        let mut s = StreamScanner::new();
        assert_eq!(s.push(&mut rw, "mail jane@exa"), "mail ");
        assert_eq!(s.held(), "jane@exa".len());
        assert_eq!(s.push(&mut rw, "mple.com"), "");
        // Complete, but validators look past the end: held until the look-ahead is in.
        assert_eq!(s.push(&mut rw, ", "), "");
        assert_eq!(s.push(&mut rw, "ok thanks"), "[REDACTED:EMAIL], ok ");
        assert_eq!(s.held(), "thanks".len());
        // A digit run could still become a card / phone / SSN.
        assert_eq!(s.push(&mut rw, ". Card 4111 1111 1111"), "thanks. Card ");
        assert_eq!(s.held(), "4111 1111 1111".len());
        assert_eq!(
            s.push(&mut rw, " 1111 expires soon"),
            "[REDACTED:CREDIT_CARD] expires "
        );
        // Look-ahead decides: `123-45-6789` + `0` is not an SSN.
        assert_eq!(s.push(&mut rw, ". SSN 123-45-6789"), "soon. SSN ");
        assert_eq!(s.push(&mut rw, "0 is not one"), "123-45-67890 is not ");
        assert_eq!(s.finish(&mut rw), "one");
    }

    #[test]
    fn no_release_bound_keeps_the_fixed_window() {
        let m = builtins();
        let text = "Hello there, how are you today? ".repeat(10);
        let (out, held) = run(&mut Fixed(BuiltinRewriter::new(m)), &text, 5);
        assert_eq!(out, text);
        assert!(held.iter().all(|&h| h <= 128 + LOOKAHEAD + 5));
        assert!(held[30..].iter().all(|&h| h >= 128));
    }

    /// Counts `release_bound` calls and the bytes they were asked to examine.
    struct Counting<R>(R, usize, usize);
    impl<R: Rewriter> Rewriter for Counting<R> {
        fn find(&mut self, h: &str, from: usize) -> Vec<Replacement> {
            self.0.find(h, from)
        }
        fn max_span(&self) -> usize {
            self.0.max_span()
        }
        fn commit(&mut self, applied: &[Replacement]) {
            self.0.commit(applied)
        }
        fn release_bound(&mut self, h: &str, from: usize) -> Option<usize> {
            self.1 += 1;
            self.2 += h.len() - from;
            self.0.release_bound(h, from)
        }
    }

    #[test]
    fn long_growing_match_rechecks_are_amortised() {
        let specs = [crate::scan::PatternSpec {
            label: "blob".into(),
            kind: crate::scan::PatternKind::Regex(r"\bBEGIN[A-Z]+END\b".into()),
        }];
        let m = Matcher::new(&specs).unwrap(); // unbounded: hold-back = 16 KiB cap
        let text = format!("x BEGIN{}END y z", "A".repeat(8000));
        let mut rw = Counting(BuiltinRewriter::new(&m), 0, 0);
        let (out, held) = run(&mut rw, &text, 5);
        assert_eq!(out, "x [REDACTED:BLOB] y z");
        let pushes = held.len();
        // Every push while little is held, then geometrically spaced: far fewer than one per
        // push, and the bytes examined stay linear in the input.
        assert!(rw.1 < 100, "{} checks for {pushes} pushes", rw.1);
        assert!(rw.2 < 8 * text.len(), "{} bytes examined", rw.2);
    }

    const TOKENS: &[&str] = &[
        "hello", "the", "answer", "is", "42", "2024", "12", "e.g.", "Project", "DE", "sk",
        "jane.doe@example.com", "a@b.io", "+1 (415) 555-2671", "415-555-2671",
        "4111 1111 1111 1111", "4111111111111111", "123-45-6789", "10.0.0.1", "2001:db8::1",
        "DE89 3704 0044 0532 0130 00", "AKIAIOSFODNN7EXAMPLE", "021000021",
        "sk-proj-4fT9xQ2mLp7Rv1sWb8nZk3Hj6Yc0Ad5Ge9Uo2Ti", "https://user:pw@db.example.com",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "-----BEGIN RSA PRIVATE KEY-----\nQUJDREVGR0hJSktMTU5PUFFS\n-----END RSA PRIVATE KEY-----",
        "漢字", "é", "🎉", "[", "]", "[EMAIL_1]",
    ];
    /// Index of the first long token in [`TOKENS`].
    const LONG_TOKENS: usize = 23;
    const SEPS: &[&str] = &[
        " ", " ", ", ", ". ", "\n", "-", ":", "@", ".", "", "/", "_", "0",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// With the precise bound the output is unchanged for any chunking (equal to the
        /// fixed window's and to whole-text rewriting), and it never holds more.
        #[test]
        fn precise_release_equals_fixed_and_whole(
            toks in prop::collection::vec((0..TOKENS.len(), 0..SEPS.len()), 1..60),
            sizes in prop::collection::vec(1usize..12, 1..8),
        ) {
            // Long tokens (keys, URLs, JWTs, PEM) end with whitespace: glued to each other they
            // form candidates on which the matcher's context re-synchronisation is approximate
            // for the fixed window too (see the module docs of `matcher`).
            let text: String = toks
                .iter()
                .map(|&(t, s)| {
                    let ws = if t >= LONG_TOKENS { " " } else { "" };
                    format!("{}{}{ws}", TOKENS[t], SEPS[s])
                })
                .collect();
            let m = builtins();
            // Spans longer than the hold-back cap may be split (documented); not this property.
            prop_assume!(m.find(&text).iter().all(|f| f.end - f.start <= m.max_match_len()));
            let whole = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap_or_else(|| text.clone());
            let (mut sp, mut sf) = (StreamScanner::new(), StreamScanner::new());
            let (mut rp, mut rf) = (BuiltinRewriter::new(m), Fixed(BuiltinRewriter::new(m)));
            let (mut op, mut of) = (String::new(), String::new());
            let mut pos = 0;
            let mut k = 0;
            while pos < text.len() {
                let mut end = (pos + sizes[k % sizes.len()]).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                k += 1;
                op.push_str(&sp.push(&mut rp, &text[pos..end]));
                of.push_str(&sf.push(&mut rf, &text[pos..end]));
                prop_assert!(sp.held() <= sf.held(), "held {} > fixed {} at {}", sp.held(), sf.held(), end);
                prop_assert!(whole.starts_with(op.as_str()), "released {:?} not a prefix of {:?}", op, whole);
                pos = end;
            }
            op.push_str(&sp.finish(&mut rp));
            of.push_str(&sf.finish(&mut rf));
            prop_assert_eq!(&op, &whole);
            prop_assert_eq!(&of, &whole);
            prop_assert_eq!(rp.counts(), rf.0.counts());
        }
    }

    /// `cargo test --release --lib -- --ignored stream_throughput --nocapture`
    #[test]
    #[ignore = "measurement; run in release"]
    fn stream_throughput_5_byte_deltas() {
        let m = builtins();
        let para = "The quick brown fox jumps over the lazy dog, and then it rests for a while. \
                    Please contact jane.doe@example.com or call +1 (415) 555-2671 about order \
                    12345 before 2024-05-01; the build at 10.0.0.1 passed all 1284 tests. ";
        let text = para.repeat(4000);
        for size in [5usize, 64] {
            let parts = chunks(&text, size);
            for precise in [false, true] {
                let t = std::time::Instant::now();
                let mut s = StreamScanner::new();
                let (mut out, mut held_sum) = (0usize, 0usize);
                let mut p = BuiltinRewriter::new(m);
                let mut f = Fixed(BuiltinRewriter::new(m));
                for c in &parts {
                    out += if precise {
                        s.push(&mut p, c)
                    } else {
                        s.push(&mut f, c)
                    }
                    .len();
                    held_sum += s.held();
                }
                out += if precise {
                    s.finish(&mut p)
                } else {
                    s.finish(&mut f)
                }
                .len();
                let secs = t.elapsed().as_secs_f64();
                eprintln!(
                    "{} B deltas, {}: {:.1} MB/s, mean held {:.1} B, out {out}",
                    size,
                    if precise { "precise" } else { "fixed  " },
                    text.len() as f64 / secs / 1e6,
                    held_sum as f64 / parts.len() as f64,
                );
            }
        }
    }
}
