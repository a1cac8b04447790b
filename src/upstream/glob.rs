//! Tiny glob matcher for route paths and model names: `*` = any run of characters (including `/`),
//! `?` = exactly one character, everything else literal and case-sensitive. Compiled once at load;
//! matching allocates nothing and runs in O(pattern × text) worst case with the classic star backtrack.

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    source: Box<str>,
    /// `None` when the pattern has no wildcard: plain string equality.
    tokens: Option<Box<[char]>>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Glob {
        let wild = pattern.contains(['*', '?']);
        Glob {
            source: pattern.into(),
            tokens: wild.then(|| pattern.chars().collect()),
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let Some(p) = &self.tokens else {
            return *self.source == *text;
        };
        let (mut pi, mut ti) = (0usize, 0usize);
        // (pattern index after the last '*', text index that '*' currently extends to)
        let mut star: Option<(usize, usize)> = None;
        while ti < text.len() {
            let Some(tc) = text[ti..].chars().next() else {
                break;
            };
            match p.get(pi) {
                Some('*') => {
                    pi += 1;
                    star = Some((pi, ti));
                }
                Some(&pc) if pc == '?' || pc == tc => {
                    pi += 1;
                    ti += tc.len_utf8();
                }
                _ => match star {
                    Some((sp, st)) => {
                        // Let the last '*' swallow one more character and retry from there.
                        let step = text[st..].chars().next().map_or(1, char::len_utf8);
                        star = Some((sp, st + step));
                        pi = sp;
                        ti = st + step;
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-4o*", "gpt-4o", true),
            ("gpt-4o*", "gpt-4", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("/v1/chat/*", "/v1/chat/completions", true),
            ("/v1/chat/*", "/v1/chat", false),
            ("/v1/*/completions", "/v1/a/b/completions", true),
            ("llama-?b", "llama-7b", true),
            ("llama-?b", "llama-70b", false),
            ("*-mini", "o4-mini", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("é?", "éü", true),
            ("*ü", "aü", true),
            ("GPT*", "gpt-4", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(Glob::new(p).matches(t), *want, "pattern {p:?} text {t:?}");
        }
    }

    /// Reference implementation: naive recursion over chars.
    fn naive(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| naive(rest, &t[i..])),
            Some((&c, rest)) => match t.split_first() {
                Some((&tc, trest)) => (c == '?' || c == tc) && naive(rest, trest),
                None => false,
            },
        }
    }

    proptest! {
        #[test]
        fn agrees_with_naive(p in "[ab*?é]{0,8}", t in "[abé]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(Glob::new(&p).matches(&t), naive(&pc, &tc));
        }
    }
}
