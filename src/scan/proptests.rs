//! Property tests: texts mixing prose (with multi-byte characters) and randomly GENERATED
//! PII/secrets (valid Luhn cards, mod-97 IBANs, Base58Check/bech32 wallets, keys ...), cut
//! into random chunkings; the stream output must equal whole-text rewriting and no
//! generated value may survive.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::matcher::LaneOutcome;
use super::sha256::double_sha256;
use super::validators::{bech32_polymod, luhn};
use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: fine statistical quality, any seed (incl. 0) works.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chars_of(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| *self.pick(alphabet) as char).collect()
    }
    fn chars_in(&mut self, alphabet: &[u8], lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        self.chars_of(alphabet, n)
    }
    fn alnum_in(&mut self, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        self.alnum(n)
    }
    fn digits_in(&mut self, lo: usize, hi: usize) -> String {
        self.chars_in(b"0123456789", lo, hi)
    }
    fn digits(&mut self, n: usize) -> String {
        self.chars_of(b"0123456789", n)
    }
    fn alnum(&mut self, n: usize) -> String {
        self.chars_of(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            n,
        )
    }
}

const WORDS: &[&str] = &[
    "the",
    "a",
    "model",
    "said",
    "please",
    "summarize",
    "this",
    "report",
    "2024",
    "12",
    "7",
    "v1.2.3",
    "10:30",
    "3.5%",
    "é",
    "漢字",
    "🎉",
    "naïve",
    "café",
    "—",
    "x",
    "Paris",
    "OK",
    "id",
    "1",
    "0",
    "at",
    "is",
    "and",
    "ABA",
    "ZZ",
    "I",
    "42",
    "1999",
    "ü",
    "→",
    "C++",
    "std::vec",
];

const SEPS: &[&str] = &[" ", " ", " ", "\n", ", ", "; ", " (", ") ", ": ", " é "];

const KINDS: usize = 20;

/// Generates one PII/secret value of kind `k`. Returns (text to insert, values that must
/// not appear in the output).
fn gen_pii(k: usize, rng: &mut Rng) -> (String, Vec<String>) {
    let one = |s: String| (s.clone(), vec![s]);
    match k {
        0 => one(gen_card(rng)),
        1 => {
            let iban = gen_iban(rng);
            // A compact lowercase IBAN is only one after the word "IBAN".
            if !iban.contains([' ', '-']) && rng.below(4) == 0 {
                let lower = iban.to_ascii_lowercase();
                (format!("IBAN: {lower}"), vec![lower])
            } else {
                one(iban)
            }
        }
        2 => {
            let local = if rng.below(2) == 0 {
                rng.chars_in(b"abcdefghijklmnopqrstuvwxyz0123456789", 1, 12)
            } else {
                format!("{}.{}", rng.alnum_in(1, 8), rng.alnum_in(1, 8))
            };
            let domain = rng.chars_in(b"abcdefghijklmnopqrstuvwxyz", 2, 10);
            let tld = *rng.pick(&["com", "org", "io", "de", "co.uk", "travel"]);
            one(format!("{local}@{domain}.{tld}"))
        }
        3 => {
            let (text, value) = gen_phone(rng);
            (text, vec![value])
        }
        4 => {
            let mut area = rng.range(1, 899);
            if area == 666 {
                area = 665;
            }
            let sep = *rng.pick(&["-", "-", " ", "", "."]);
            let ssn = format!(
                "{area:03}{sep}{:02}{sep}{:04}",
                rng.range(1, 99),
                rng.range(1, 9999)
            );
            if matches!(sep, "" | ".") {
                // bare or dotted: after an SSN keyword
                let kw = *rng.pick(&["SSN: ", "ssn ", "Social Security Number: ", "SSN #"]);
                (format!("{kw}{ssn}"), vec![ssn])
            } else {
                one(ssn)
            }
        }
        5 => one(format!(
            "{}.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            rng.below(256),
            rng.below(256)
        )),
        6 => loop {
            let mut seg = [0u16; 8];
            let zeros = rng.below(4);
            for (i, s) in seg.iter_mut().enumerate() {
                if i < 2 || i >= 2 + zeros {
                    *s = rng.next() as u16;
                }
            }
            let s = std::net::Ipv6Addr::from(seg).to_string();
            if s.bytes().any(|b| b.is_ascii_digit()) && s.contains(':') {
                // glued to a label and a colon ("ip:2001:db8::1")
                let label = *rng.pick(&["", "", "ip:", "IPv6:", "addr:"]);
                break (format!("{label}{s}"), vec![s]);
            }
        },
        7 => one(format!("sk-proj-{}", rng.alnum_in(40, 100))),
        8 => one(format!("sk-ant-api03-{}AA", rng.alnum(80))),
        9 => one(format!("ghp_{}", rng.alnum(36))),
        10 => one(format!(
            "AKIA{}",
            rng.chars_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        )),
        11 => one(format!(
            "AIza{}",
            rng.chars_of(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                35
            )
        )),
        12 => one(format!("sk_live_{}", rng.alnum_in(24, 40))),
        13 => one(format!(
            "xoxb-{}-{}-{}",
            rng.digits(12),
            rng.digits(13),
            rng.alnum(24)
        )),
        14 => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let payload = b64.encode(format!(
                r#"{{"sub":"{}","iat":{}}}"#,
                rng.alnum(8),
                rng.next() % 2_000_000_000
            ));
            let sig: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
            one(format!("{header}.{payload}.{}", b64.encode(sig)))
        }
        15 => one(gen_base58_address(rng)),
        16 => one(gen_bech32_address(rng)),
        17 => one(format!("0x{}", rng.chars_of(b"0123456789abcdef", 40))),
        18 => {
            let r = gen_routing(rng);
            let kw = *rng.pick(&["routing number ", "ABA: ", "RTN #", "Routing no. "]);
            (format!("{kw}{r}"), vec![r])
        }
        _ => {
            if rng.below(2) == 0 {
                let secret = rng.chars_of(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+",
                    39,
                ) + "7";
                (format!("aws_secret_access_key = {secret}"), vec![secret])
            } else {
                let user = rng.alnum_in(1, 10);
                let pass = rng.alnum_in(4, 16);
                let host = rng.chars_in(b"abcdefghijklmnopqrstuvwxyz", 3, 10);
                let scheme = *rng.pick(&["https", "postgres", "redis", "amqp"]);
                let url = format!("{scheme}://{user}:{pass}@{host}.example.com");
                (url, vec![format!("{user}:{pass}")])
            }
        }
    }
}

fn gen_card(rng: &mut Rng) -> String {
    let (prefix, len) = *rng.pick(&[
        ("4", 16),
        ("4", 13),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("2720", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("65", 16),
        ("62", 19),
        ("3528", 16),
        ("35", 16),
        ("2131", 15),
        ("67", 12),
        ("0604", 12),
        ("50", 12),
        ("38", 14),
        ("62", 17),
        ("62", 18),
        ("2200", 16),
        ("2204", 19),
        ("81", 16),
        ("82", 16),
        ("508", 16),
    ]);
    let mut digits = prefix.to_string() + &rng.digits(len - prefix.len() - 1);
    for c in b'0'..=b'9' {
        let candidate = format!("{digits}{}", c as char);
        if luhn(candidate.as_bytes()) {
            digits = candidate;
            break;
        }
    }
    let sep = *rng.pick(&["", " ", "-"]);
    if sep.is_empty() {
        return digits;
    }
    let groups: &[usize] = match len {
        12 => &[4, 4, 4],
        15 => &[4, 6, 5],
        13 if rng.below(2) == 0 => &[4, 4, 5],
        13 => &[4, 4, 4, 1],
        14 => &[4, 4, 4, 2],
        17 => &[4, 4, 4, 4, 1],
        18 => &[4, 4, 4, 4, 2],
        19 => &[4, 4, 4, 4, 3],
        _ => &[4, 4, 4, 4],
    };
    let mut out = String::new();
    let mut pos = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&digits[pos..pos + g]);
        pos += g;
    }
    out
}

fn gen_iban(rng: &mut Rng) -> String {
    let (cc, len) = *rng.pick(&[
        ("DE", 22),
        ("GB", 22),
        ("FR", 27),
        ("NL", 18),
        ("BE", 16),
        ("CH", 21),
        ("ES", 24),
        ("IT", 27),
        ("NO", 15),
        ("PL", 28),
        ("MT", 31),
    ]);
    // One in eight has a BBAN a character short or long (hand-typed, or a generator that
    // gets a country's format wrong); its check digits still hold.
    let len = match rng.below(16) {
        0 if len > 15 => len - 1,
        1 => len + 1,
        _ => len,
    };
    let bban = if rng.below(2) == 0 {
        rng.digits(len - 4)
    } else {
        rng.chars_of(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4) + &rng.digits(len - 8)
    };
    let rearranged = format!("{bban}{cc}00");
    let mut rem = 0u32;
    for b in rearranged.bytes() {
        rem = if b.is_ascii_digit() {
            (rem * 10 + u32::from(b - b'0')) % 97
        } else {
            (rem * 100 + u32::from(b - b'A' + 10)) % 97
        };
    }
    let compact = format!("{cc}{:02}{bban}", 98 - rem);
    if rng.below(2) == 0 {
        return compact;
    }
    // In groups of four: spaces, dashes, or spaces in lowercase.
    let (sep, lower) = *rng.pick(&[(" ", false), (" ", false), ("-", false), (" ", true)]);
    let grouped = compact
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(sep);
    if lower {
        grouped.to_ascii_lowercase()
    } else {
        grouped
    }
}

/// A phone number as (text to insert, value that must not survive). Shapeless national
/// formats come after a phone word, as the detector requires.
fn gen_phone(rng: &mut Rng) -> (String, String) {
    let area = loop {
        let a = format!("{}{}", rng.range(2, 9), rng.digits(2));
        if &a[1..] != "11" {
            break a;
        }
    };
    let ex = rng.digits(3);
    let line = rng.digits(4);
    let shaped = match rng.below(20) {
        0 => format!("({area}) {ex}-{line}"),
        1 => format!("{area}-{ex}-{line}"),
        2 => format!("+1 {area} {ex} {line}"),
        3 => format!("+1{area}{ex}{line}"),
        4 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
        5 => format!("{area}.{ex}.{line}"),
        6 => {
            let ext_len = rng.range(1, 5);
            format!("{area}-{ex}-{line}x{}", rng.digits(ext_len))
        }
        7 => format!("020 {} {}", rng.digits(4), rng.digits(4)),
        8 => format!(
            "0{} {} {} {} {}",
            rng.range(1, 9),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2),
            rng.digits(2)
        ),
        9 => format!("08-{} {} {}", rng.digits(3), rng.digits(2), rng.digits(2)),
        10 => format!("0{}/{}", rng.range(30, 99), rng.digits(7)),
        // the 00 international prefix (Faker en_US "001-…", with an extension)
        12 => format!("001-{area}-{ex}-{line}"),
        13 => format!("001-{area}-{ex}-{line}x{}", rng.digits_in(1, 5)),
        14 => format!(
            "00{} {} {} {}",
            rng.range(30, 49),
            rng.digits(4),
            rng.digits(3),
            rng.digits(3)
        ),
        15 => format!("0044 7{} {}", rng.digits(3), rng.digits(6)),
        16 => format!(
            "(+{}) {} {} {}",
            rng.range(30, 49),
            rng.digits(2),
            rng.digits(4),
            rng.digits(4)
        ),
        // trunk-prefixed, 13-15 digits (AT)
        17 => format!(
            "(0{}) {} {}",
            rng.digits(4),
            rng.digits(5),
            rng.digits_in(3, 5)
        ),
        // trunk 8 (RU)
        18 => format!(
            "8 ({}) {}-{}-{}",
            rng.digits(3),
            rng.digits(3),
            rng.digits(2),
            rng.digits(2)
        ),
        _ => format!("(0{}) {}", rng.range(100, 999), rng.digits(6)),
    };
    if rng.below(4) != 0 {
        return (shaped.clone(), shaped);
    }
    // No shape of its own: ten bare NANP digits or 3-4 groups, after a phone word.
    let word = *rng.pick(&[
        "call ",
        "Tel: ",
        "phone number: ",
        "Mobile ",
        "WhatsApp me at ",
    ]);
    // The last group never all zeros: "12 000 000" reads as an amount, not a phone.
    let tail = format!("{}{}", rng.range(1, 9), rng.digits(2));
    let value = match rng.below(5) {
        0 => format!("{area}{}{}{line}", rng.range(2, 9), rng.digits(2)),
        // other countries' bare numbers (CN mobile, IL), never ending in four zeros
        3 => format!("1{}{}", rng.digits(9), rng.range(1, 9)),
        4 => format!("0{}{}", rng.digits(7), rng.range(1, 9)),
        1 => format!("{} {} {tail}", rng.digits(3), rng.digits(3)),
        _ => format!(
            "{} {}-{tail}{}",
            rng.digits(2),
            rng.digits(4),
            rng.digits(1)
        ),
    };
    (format!("{word}{value}"), value)
}

fn gen_routing(rng: &mut Rng) -> String {
    loop {
        let prefix = *rng.pick(&[
            "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "21", "26",
            "31", "32", "61", "72", "80",
        ]);
        let mid = rng.digits(6);
        let d: Vec<u32> = format!("{prefix}{mid}")
            .bytes()
            .map(|b| u32::from(b - b'0'))
            .collect();
        let s = 3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5];
        let check = (10 - s % 10) % 10;
        let r = format!("{prefix}{mid}{check}");
        if r.bytes().any(|b| b != b'0') {
            return r;
        }
    }
}

fn base58_encode(data: &[u8]) -> String {
    const A: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    let mut digits: Vec<u8> = Vec::new(); // little-endian base58
    for &byte in &data[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut s = "1".repeat(zeros);
    s.extend(digits.iter().rev().map(|&d| A[d as usize] as char));
    s
}

fn gen_base58_address(rng: &mut Rng) -> String {
    let mut raw = vec![if rng.below(2) == 0 { 0x00 } else { 0x05 }];
    raw.extend((0..20).map(|_| rng.next() as u8));
    let sum = double_sha256(&raw);
    raw.extend_from_slice(&sum[..4]);
    base58_encode(&raw)
}

fn gen_bech32_address(rng: &mut Rng) -> String {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let program: Vec<u8> = (0..20).map(|_| rng.next() as u8).collect();
    let mut data = vec![0u8];
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in &program {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            data.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        data.push(((acc << (5 - bits)) & 31) as u8);
    }
    let hrp = b"bc";
    let values: Vec<u8> = hrp
        .iter()
        .map(|c| c >> 5)
        .chain([0])
        .chain(hrp.iter().map(|c| c & 31))
        .chain(data.iter().copied())
        .chain([0; 6])
        .collect();
    let pm = bech32_polymod(values.into_iter()) ^ 1;
    let checksum = (0..6).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8);
    let mut s = String::from("bc1");
    s.extend(
        data.iter()
            .copied()
            .chain(checksum)
            .map(|d| CHARSET[d as usize] as char),
    );
    s
}

/// Builds a text from (selector, seed) pairs: ~1/3 generated PII, the rest prose.
fn build_text(items: &[(u8, u64)]) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut secrets = Vec::new();
    for &(sel, seed) in items {
        let mut rng = Rng(seed);
        if sel % 3 == 0 {
            let (t, vals) = gen_pii(rng.below(KINDS), &mut rng);
            text.push_str(&t);
            secrets.extend(vals);
        } else {
            let word: &&str = rng.pick(WORDS);
            text.push_str(word);
        }
        let sep: &&str = rng.pick(SEPS);
        text.push_str(sep);
    }
    (text, secrets)
}

/// Chunk sizes (bytes, rounded up to char boundaries); 0 = one char per chunk.
fn chunk<'a>(text: &'a str, sizes: &[usize]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < text.len() {
        let want = sizes
            .get(k % sizes.len().max(1))
            .copied()
            .unwrap_or(0)
            .max(1);
        k += 1;
        let mut end = (pos + want).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[pos..end]);
        pos = end;
    }
    out
}

fn stream_matcher() -> &'static Matcher {
    static M: OnceLock<Matcher> = OnceLock::new();
    M.get_or_init(|| {
        let specs: Vec<PatternSpec> = builtin_specs()
            .into_iter()
            .filter(|s| s.label != "private_key")
            .collect();
        Matcher::new_with_cap(&specs, 256).expect("compile")
    })
}

const TIGHT_SUBSETS: &[&[&str]] = &[
    &["us_ssn"],
    &["ipv4"],
    &["credit_card"],
    &["us_ssn", "us_itin", "phone", "ipv4"],
    &["email"],
    &["iban"],
    &["crypto_wallet"],
    &["us_bank_routing"],
    &["ipv6", "api_key.aws_access_key"],
];

fn tight_matchers() -> &'static [Matcher] {
    static M: OnceLock<Vec<Matcher>> = OnceLock::new();
    M.get_or_init(|| {
        TIGHT_SUBSETS
            .iter()
            .map(|names| {
                let specs: Vec<PatternSpec> =
                    names.iter().map(|n| PatternSpec::builtin(n)).collect();
                Matcher::new(&specs).expect("compile")
            })
            .collect()
    })
}

fn full_matcher() -> &'static Matcher {
    static M: OnceLock<Matcher> = OnceLock::new();
    M.get_or_init(|| Matcher::builtin().expect("compile"))
}

/// Built-ins plus pack-style custom patterns (case-insensitive phrases, keyword lists, a
/// literal alternation), with and without the multi-lane search.
fn lane_matchers() -> &'static [(Matcher, Matcher)] {
    static M: OnceLock<Vec<(Matcher, Matcher)>> = OnceLock::new();
    M.get_or_init(|| {
        let mut packish = builtin_specs();
        packish.push(PatternSpec {
            label: "override".into(),
            kind: PatternKind::Regex(
                r"(?i)\b(?:ignore|disregard|forget)\s+(?:all\s+)?(?:previous|prior|system)\s+(?:instructions?|prompts?)\b".into(),
            ),
        });
        packish.push(PatternSpec {
            label: "persona".into(),
            kind: PatternKind::Keywords(vec![
                "do anything now".into(),
                "developer mode enabled".into(),
                "the report".into(),
                "café".into(),
            ]),
        });
        packish.push(PatternSpec {
            label: "template".into(),
            kind: PatternKind::Regex(r"<\|im_start\|>|\[/?INST\]|<</?SYS>>".into()),
        });
        packish.push(PatternSpec {
            label: "unicode-boundary".into(),
            kind: PatternKind::Regex(r"\bnaïve\b".into()),
        });
        [builtin_specs(), packish]
            .iter()
            .map(|specs| {
                (
                    Matcher::new(specs).expect("compile"),
                    Matcher::new(specs).expect("compile").without_lanes(),
                )
            })
            .collect()
    })
}

fn run_stream(m: &Matcher, chunks: &[&str]) -> (String, u64) {
    let mut rw = BuiltinRewriter::new(m);
    let mut s = StreamScanner::new();
    let mut out = String::new();
    for c in chunks {
        out.push_str(&s.push(&mut rw, c));
    }
    out.push_str(&s.finish(&mut rw));
    (out, rw.total())
}

fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![1]),
        prop::collection::vec(1usize..8, 1..20),
        prop::collection::vec(1usize..400, 1..10),
        (1usize..2000).prop_map(|n| vec![n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 256 cases by default; PROPTEST_CASES=n for longer runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stream_equals_whole_and_nothing_leaks(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 1..80),
        sizes in chunking(),
    ) {
        let (text, secrets) = build_text(&items);
        let m = stream_matcher();
        let mut whole_rw = BuiltinRewriter::new(m);
        let whole = rewrite_all(&mut whole_rw, &text).unwrap_or_else(|| text.clone());
        let chunks = chunk(&text, &sizes);
        prop_assert_eq!(chunks.concat(), text.clone());
        let (streamed, count) = run_stream(m, &chunks);
        prop_assert_eq!(&streamed, &whole, "text: {:?}", text);
        prop_assert_eq!(count, whole_rw.total());
        for s in &secrets {
            prop_assert!(!whole.contains(s.as_str()), "leaked {:?} in {:?}", s, whole);
        }
    }

    #[test]
    fn full_builtin_set_nothing_leaks(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 1..60),
        sizes in chunking(),
    ) {
        let (text, secrets) = build_text(&items);
        let m = full_matcher();
        let whole = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap_or_else(|| text.clone());
        for s in &secrets {
            prop_assert!(!whole.contains(s.as_str()), "leaked {:?} in {:?}", s, whole);
        }
        let (streamed, _) = run_stream(m, &chunk(&text, &sizes));
        prop_assert_eq!(streamed, whole);
    }

    /// Small detector subsets have hold-backs equal to their longest possible match, so
    /// matches right at the window edge (and the look-ahead after them) are exercised.
    #[test]
    fn stream_equals_whole_tight_windows(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 1..80),
        sizes in chunking(),
        subset in 0usize..TIGHT_SUBSETS.len(),
    ) {
        let (text, _) = build_text(&items);
        let m = &tight_matchers()[subset];
        let whole = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap_or_else(|| text.clone());
        let (streamed, _) = run_stream(m, &chunk(&text, &sizes));
        prop_assert_eq!(streamed, whole, "subset {:?} text {:?}", TIGHT_SUBSETS[subset], text);
    }

    /// Adversarial alphabet (digits, separators, letters, multi-byte): no PII guarantee,
    /// but the stream must still equal whole-text rewriting and findings must be sane.
    #[test]
    fn stream_equals_whole_on_noise(
        text in "[0-9 .:@+()\\-/_a-fA-FxkKsS漢é🎉\n]{0,2000}",
        sizes in chunking(),
    ) {
        let m = stream_matcher();
        let whole = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap_or_else(|| text.clone());
        let (streamed, _) = run_stream(m, &chunk(&text, &sizes));
        prop_assert_eq!(streamed, whole);
        let tight = &tight_matchers()[3];
        let whole = rewrite_all(&mut BuiltinRewriter::new(tight), &text).unwrap_or_else(|| text.clone());
        let (streamed, _) = run_stream(tight, &chunk(&text, &sizes));
        prop_assert_eq!(streamed, whole);
        let fs = m.find(&text);
        for w in fs.windows(2) {
            prop_assert!(w[0].end <= w[1].start);
        }
        for f in &fs {
            prop_assert!(f.start < f.end && text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            prop_assert!(f.end - f.start <= m.pattern_bound(f.pattern).unwrap_or(usize::MAX));
        }
    }

    /// The multi-lane search is an optimisation only: on long generated texts every finding
    /// equals the plain engine's, and so does every raw leftmost-first candidate over random
    /// spans (whenever the lanes decide; they must decide on ordinary prose).
    #[test]
    fn lanes_equal_the_plain_search(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 60..400),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..6),
    ) {
        let (text, _) = build_text(&items);
        let hay = text.as_bytes();
        for (lanes, plain) in lane_matchers() {
            prop_assert_eq!(lanes.find(&text), plain.find(&text));
            for (a, b) in &cuts {
                let (mut pos, mut end) = (a.index(hay.len() + 1), b.index(hay.len() + 1));
                if pos > end {
                    std::mem::swap(&mut pos, &mut end);
                }
                let (_, laned, plain_found) = lanes.search_both(hay, pos, end);
                prop_assert_eq!(laned, plain_found, "span {}..{}", pos, end);
            }
        }
    }

    /// Long prose with rare findings: lanes hand over many times and new ones start ahead
    /// (the pipelined case), with findings landing in any lane.
    #[test]
    fn lanes_equal_the_plain_search_on_long_sparse_text(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 400..2500),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..4),
    ) {
        // One item in about forty is a PII value, the rest are words.
        let items: Vec<(u8, u64)> = items
            .iter()
            .map(|&(sel, seed)| (if sel % 40 == 0 { 0 } else { 1 }, seed))
            .collect();
        // ASCII only: a pattern with a Unicode word boundary makes the DFA give up on other
        // bytes (then the plain search runs, which the other tests cover).
        let text: String = build_text(&items)
            .0
            .chars()
            .map(|c| if c.is_ascii() { c } else { 'x' })
            .collect();
        let hay = text.as_bytes();
        for (lanes, plain) in lane_matchers() {
            prop_assert_eq!(lanes.find(&text), plain.find(&text));
            // A cache clear abandons the lanes by design (the matchers and their caches live
            // across cases, so the cache does fill up now and then); nothing else may.
            let (outcome, _, _) = lanes.search_both(hay, 0, hay.len());
            prop_assert!(
                matches!(outcome, LaneOutcome::Decided | LaneOutcome::CacheCleared) || text.len() < 1024,
                "the lanes did not decide: {:?}", outcome
            );
            for (a, b) in &cuts {
                let (mut pos, mut end) = (a.index(hay.len() + 1), b.index(hay.len() + 1));
                if pos > end {
                    std::mem::swap(&mut pos, &mut end);
                }
                while !text.is_char_boundary(pos) {
                    pos -= 1;
                }
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let (_, laned, plain_found) = lanes.search_both(hay, pos, end.max(pos));
                prop_assert_eq!(laned, plain_found, "span {}..{}", pos, end);
            }
        }
    }

    #[test]
    fn lanes_equal_the_plain_search_on_noise(
        text in "[0-9 .:@+()\\-/_a-fA-FxkKsSiI漢é🎉\n<|>\\[\\]]{500,3000}",
    ) {
        for (lanes, plain) in lane_matchers() {
            prop_assert_eq!(lanes.find(&text), plain.find(&text));
            let (_, laned, plain_found) = lanes.search_both(text.as_bytes(), 0, text.len());
            prop_assert_eq!(laned, plain_found);
        }
    }

    #[test]
    fn find_from_reports_only_suffix_findings(
        items in prop::collection::vec((any::<u8>(), any::<u64>()), 1..30),
        cut in any::<prop::sample::Index>(),
    ) {
        let (text, _) = build_text(&items);
        let m = stream_matcher();
        let mut from = cut.index(text.len() + 1);
        while !text.is_char_boundary(from) {
            from -= 1;
        }
        let all = m.find(&text);
        let tail = m.find_from(&text, from);
        prop_assert!(tail.iter().all(|f| f.start >= from));
        // Findings that start at a token start after `from` agree with the full scan.
        let expected: Vec<_> = all.iter().filter(|f| f.start >= from).copied().collect();
        prop_assert_eq!(tail, expected);
    }
}

/// A finding with whitespace inside it placed at every offset of a long text: wherever a lane
/// starts inside it, that lane must not be believed until the lane before it is past the
/// finding.
#[test]
fn lanes_with_a_finding_at_every_offset() {
    let phrases = [
        "ignore   all previous \t instructions",
        "do  anything \n now",
        "+1 415 555 0134",
        "4111 1111 1111 1111",
        "jane.doe@example.com",
        "<|im_start|> [INST]",
    ];
    let pad = "The quarterly planning notes cover onboarding and vendor reviews. ";
    let body = pad.repeat(24);
    let (lanes, plain) = &lane_matchers()[1];
    let mut decided = 0;
    for phrase in phrases {
        for at in (150..body.len() - 100).filter(|i| body.is_char_boundary(*i)) {
            let text = format!("{} {phrase} {}", &body[..at], &body[at..]);
            let hay = text.as_bytes();
            let (lanes_decided, laned, plain_found) = lanes.search_both(hay, 0, hay.len());
            assert!(plain_found.is_some(), "{phrase}");
            decided += usize::from(lanes_decided == LaneOutcome::Decided);
            assert_eq!(laned, plain_found, "{phrase} at {at}");
            assert_eq!(lanes.find(&text), plain.find(&text), "{phrase} at {at}");
        }
    }
    assert!(decided > 6000, "the lanes decided only {decided} times");
}

#[test]
fn generators_produce_detectable_values() {
    let m = full_matcher();
    for k in 0..KINDS {
        for seed in 0..200u64 {
            let mut rng = Rng(seed * 31 + k as u64);
            let (t, vals) = gen_pii(k, &mut rng);
            let text = format!("see {t} ok");
            let out = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap_or_default();
            for v in vals {
                assert!(!out.contains(&v), "kind {k}: {text:?} -> {out:?}");
            }
        }
    }
}

#[test]
fn long_pem_block_streams_with_full_hold_back() {
    let m = full_matcher();
    let body: String = (0..40)
        .map(|i| {
            format!(
                "{}\n",
                "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk".repeat(1 + i % 2)
            )
        })
        .collect();
    let text =
        format!("key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----\nbye");
    let whole = rewrite_all(&mut BuiltinRewriter::new(m), &text).unwrap();
    assert_eq!(whole, "key:\n[REDACTED:PRIVATE_KEY]\nbye");
    let (streamed, n) = run_stream(m, &chunk(&text, &[7]));
    assert_eq!(streamed, whole);
    assert_eq!(n, 1);
}

/// Hand-picked texts where a match ends right at the hold-back edge or is followed by a
/// character that changes the verdict; every 2-way split and every 3-way split.
#[test]
fn edge_texts_every_split() {
    let texts = [
        "x 123-45-6789-5 y",
        "x 123-45-6789 y",
        "1.2.3.4.5 and 10.0.0.1",
        "4111111111111111 1 and 4111 1111 1111 1111-2",
        "+1 415 555 2671 2 é",
        "routing: 021000021 ok 021000021",
        "2001:db8::1: next 2001:db8::1:2",
        "a@b.co.uk. c@d.io@",
        "ssn 123 45 6789 2024 漢",
        "DE89 3704 0044 0532 0130 00 7",
        "AKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLEX",
        "Tel 001-541-872-1106 7 and 0044 7072 554917-1",
        "SSN: 748538820 1 ssn 328.99.0359.1",
        "ip:2001:db8::1 addr:fe80::1:",
        "4417 7763 1706 9 1 and de63-0256-7796-3778-4925-97",
    ];
    let mut matchers: Vec<&Matcher> = tight_matchers().iter().collect();
    matchers.push(stream_matcher());
    for m in matchers {
        for text in texts {
            let whole =
                rewrite_all(&mut BuiltinRewriter::new(m), text).unwrap_or_else(|| text.to_string());
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for (ai, &a) in bounds.iter().enumerate() {
                for &b in &bounds[ai..] {
                    let (got, _) = run_stream(m, &[&text[..a], &text[a..b], &text[b..]]);
                    assert_eq!(
                        got,
                        whole,
                        "{text:?} split at {a},{b} labels {:?}",
                        m.labels()
                    );
                }
            }
        }
    }
}
