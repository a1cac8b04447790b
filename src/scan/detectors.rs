//! The built-in detector table: for each stable detector name, an ASCII-only regex (the
//! candidate shape) and a span validator that cuts false positives (checksums, boundaries,
//! context). Validators may trim a candidate (e.g. drop a trailing number group) or, for PEM
//! blocks, extend it to the END line; `extra_len` bounds such extensions.

use super::validators as v;

/// Validates a candidate `hay[start..end]`; returns the accepted span (possibly trimmed or
/// extended) or None. `hay` is the whole haystack, so validators may look around the span.
pub(crate) type SpanValidator = fn(hay: &[u8], start: usize, end: usize) -> Option<(usize, usize)>;

pub(crate) struct Builtin {
    pub name: &'static str,
    pub pattern: &'static str,
    pub validate: SpanValidator,
    /// Priority when several detectors match at the same start (lower wins).
    pub rank: u8,
    /// Bytes a validator may add beyond the regex match (PEM body).
    pub extra_len: usize,
}

/// Longest PEM block body we look for after a `BEGIN … PRIVATE KEY` header.
pub(crate) const PEM_MAX_BODY: usize = 8 * 1024;

/// Bytes before a 9-digit candidate searched for a routing-number keyword.
const ROUTING_CONTEXT: usize = 32;

/// Longest IPv6 zone id (`%eth0`, `%25eth0.100`) redacted with its address.
const IPV6_ZONE_MAX: usize = 16;

/// Bytes before a compact lowercase IBAN searched for the word "IBAN".
const IBAN_CONTEXT: usize = 32;

/// Bytes an IBAN written with no-break spaces may run past its first four characters (30
/// more characters and up to eight two-byte separators).
const IBAN_NBSP_EXTRA: usize = 48;

/// Bytes before an unseparated or dotted SSN candidate searched for an SSN keyword.
const SSN_CONTEXT: usize = 32;

/// Keywords announcing an SSN written without its usual dashes ("SSN: 748538820",
/// "Social Security Number: 328990359").
const SSN_WORDS: [&[u8]; 4] = [b"ssn", b"social security", b"soc sec", b"soc. sec"];

/// "social" alone ("my social is 813741321") announces an SSN only right before the number,
/// with at most these words in between ("social media 123456789" is not one).
const SSN_FILLERS: &[&[u8]] = &[
    b"security",
    b"sec",
    b"no",
    b"nr",
    b"num",
    b"number",
    b"is",
    b"was",
    b"my",
    b"his",
    b"her",
    b"their",
    b"your",
    b"the",
    b"card",
    b"id",
    b"s",
];

/// Keywords announcing an ITIN written without dashes ("ITIN: 912701234"); an ITIN is often
/// given where an SSN is asked for.
const ITIN_WORDS: [&[u8]; 5] = [b"itin", b"tin", b"taxpayer", b"tax id", b"ssn"];

/// Bytes before a phone candidate without a shape of its own (ten bare digits, other
/// national formats) searched for a phone word.
const PHONE_CONTEXT: usize = 32;

/// Word starts that make a shapeless number a phone number ("tel" covers "telephone" and
/// "teléfono", "mobil" "mobile", "cel" "cell"/"celular"), anywhere in [`PHONE_CONTEXT`].
/// "text" and "reach" were tried and dropped: "the text 2024 1234 5678", "reach 12 000 000".
const PHONE_WORDS: [&[u8]; 9] = [
    b"phone",
    b"tel",
    b"tlf",
    b"mobil",
    b"cel",
    b"handy",
    b"fax",
    b"sms",
    b"whatsapp",
];

/// Phone words that are as often something else ("call stack depth 1234567890", "contact id
/// 1234567890", "dial 10 times"): they count only right before the number ("call" covers
/// "calls"/"called"/"calling"), with at most [`PHONE_FILLERS`] in between ("call me at …").
const ADJACENT_PHONE_WORDS: [&[u8]; 3] = [b"call", b"contact", b"dial"];

const PHONE_FILLERS: &[&[u8]] = &[
    b"me",
    b"us",
    b"him",
    b"her",
    b"them",
    b"at",
    b"on",
    b"to",
    b"from",
    b"is",
    b"are",
    b"my",
    b"our",
    b"your",
    b"his",
    b"their",
    b"the",
    b"a",
    b"number",
    b"no",
    b"nr",
    b"num",
    b"now",
    b"or",
    b"via",
    b"back",
    b"directly",
    b"anytime",
    b"today",
    b"tomorrow",
    b"toll",
    b"free",
    b"office",
    b"home",
    b"work",
    b"line",
    b"direct",
    b"details",
    b"info",
];

/// Non-ASCII letters an e-mail address may contain: Latin-1 and Latin Extended letters
/// (without `×` and `÷`), Greek, Cyrillic, Latin Extended Additional (Vietnamese).
macro_rules! email_letters {
    () => {
        "À-ÖØ-öø-ɏΆΈ-ΊΌΎ-ΡΣ-ώЀ-ӿḀ-ỿ"
    };
}

const OCTET: &str = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)";

#[cfg(test)]
pub(crate) fn builtins() -> &'static [Builtin] {
    BUILTINS
}

pub(crate) fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

/// IPv6 candidates: full 8-group form (optionally with an IPv4 tail) or any form with `::`.
/// Bare `12:30:45` times never become candidates. A `%zone` id after the address is added
/// by the validator (in the regex it cost ~0.5 % scan throughput for a rare suffix).
pub(crate) fn ipv6_pattern() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let v4 = format!(r"{OCTET}(?:\.{OCTET}){{3}}");
    format!(
        r"(?-u)(?:\b{h}(?::{h}){{7}}|\b{h}(?::{h}){{5}}:{v4}|(?:\b{h}(?::{h}){{0,6}}|\B)::(?:(?:{h}:){{0,5}}{v4}|(?:{h}:){{0,6}}{h})?)"
    )
}

pub(crate) fn ipv4_pattern() -> String {
    format!(r"(?-u)\b(?:{OCTET}\.){{3}}{OCTET}\b")
}

static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "email",
        // Local part and domain labels also take Latin, Greek and Cyrillic letters (EAI and
        // IDN addresses: `müller@bücher.de`; an ASCII-only local part left `mü` unredacted in
        // front of the match), and an apostrophe (`o'brien@example.ie`); Cyrillic top-level
        // domains (`.рф`, `.укр`) too. Other scripts stay outside: CJK text glued to an
        // address ("请联系zhang@example.com") must not become part of it.
        pattern: concat!(
            r"(?:(?-u:\b)[A-Za-z0-9_]|[",
            email_letters!(),
            r"])[A-Za-z0-9._%+'\-",
            email_letters!(),
            r"]{0,63}@[A-Za-z0-9",
            email_letters!(),
            r"][A-Za-z0-9.\-",
            email_letters!(),
            r"]{0,190}\.(?:[A-Za-z]{2,24}(?-u:\b)|[Ѐ-ӿ]{2,24})",
        ),
        validate: email,
        rank: 13,
        extra_len: 0,
    },
    Builtin {
        name: "phone",
        pattern: concat!(
            r"(?-u)(?:",
            // international: '+', '(+' or the '00' international prefix, a country code,
            // optional (area), groups ("+44 20 7946 0958", "(+44) 20 7946 0958", Faker's
            // "001-541-872-1106", "0044 7072 554917")
            r"(?:\B\+|\(\+|\b00)[1-9]\d{0,2}\)?(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){1,6}",
            // NANP shape: optional 1, area code (with or without parens), exchange, line. The
            // separated 3-3-4 shape is the evidence; NANP's digit rules are not required of it
            // (fictional 555 numbers and generated test data break them).
            r"|(?:\b1[ .\-]?)?(?:\b\d{3}[ .\-]|\B\(\d{3}\)[ .\-]?)\d{3}[ .\-]\d{4}",
            // a country code in parentheses without '+' ("(351) 936827521", "(351) 932 979
            // 232"): after the NANP shapes, which keep "(415) 555-2671"; only when labelled.
            r"|\B\([1-9]\d{0,2}\)[ .\-]?\d{2,9}(?:[ .\-]\d{2,5}){0,3}",
            // NANP written without separators: [1] NXX NXX XXXX
            r"|\b1?[2-9]\d{2}[2-9]\d{6}",
            // trunk 8 (Russia and CIS): 8 (495) 123-45-67, 8 (8452) 12-34-56, 8 800 555-35-35,
            // 8 (712) 844-8740
            r"|\b8[ \-]?(?:\(\d{3,5}\)[ \-]?|\d{3}[ \-])\d{1,3}(?:(?:[ \-]\d{2}){2}|[ \-]\d{4})",
            // trunk-prefixed national numbers (UK 020 7946 0958, DE 030/1234567, FR 01 23 45 67
            // 89, SE 08-811 78 75, NL (0578) 696723): a 0, an area code, groups of 2-5 digits
            r"|(?:\b0\d{1,4}|\B\(0\d{1,4}\))[ .\-/]?\d{2,5}(?:[ .\-]?\d{2,5}){0,3}",
            // other national formats: 8-12 digits, bare or in three or four groups ("574 850
            // 767", "45 2755-9746", "22 340 33 07"); the validator wants a phone word right
            // before it. (A two-group form would make every "2024 12" a candidate: -7 % scan
            // throughput in benches/scanner.rs for little recall.)
            // 13-15 bare digits: a country code without '+' (MSISDN "4915112345678"), checked
            // against the code's length, after a phone word.
            r"|\b\d{2,4}[ \-]\d{3,4}[ \-]\d{2,4}(?:[ \-]\d{2,4})?|\b\d{2}[ \-]\d{4}[ \-]\d{4}|\b\d{8,15}",
            // a country code without '+' in front of groups ("phone 44 20 7946 0958"): the
            // phone word is part of the candidate, so prose never pays for these loose digit
            // groups; the validator keeps the number only (from its first digit).
            r"|(?i:\b(?:phone|tel|tlf|mobil|cel|handy|fax|whatsapp|call|contact)[a-z]{0,7}",
            r#"(?:[\x20\t:.#=>("'\-]{1,4}(?:number|no|nr|num)?){1,2})"#,
            r"[1-9]\d{0,2}(?:[ .\-]\d{1,8}){2,6}",
            // a phone word, up to four words, and a local number in two to four groups
            // ("Phone: 8026.4790", "my phone number is 9538-0646", "Tel.: 905 09 486",
            // "mobile 98 61 48 10"): only with a label are such shapes phones; the validator
            // checks the words between (fillers only) and keeps the number.
            r"|(?i:\b(?:phone|tel|tlf|mobil|cel|handy|fax|sms|whatsapp|call|contact|dial)[a-z]{0,7}",
            r#"[\x20\t:.#=>("'\-]{1,4}(?:[a-z]{1,9}[\x20\t:.]{1,3}){0,4})"#,
            r"\d{2,5}(?:[ .\-]\d{1,8}){1,3}",
            // optional extension: x123, ext. 123, #123
            r")(?:[ ]?(?:x|ext\.?|#)[ ]?\d{1,6})?\b",
        ),
        validate: phone,
        rank: 19,
        extra_len: 0,
    },
    Builtin {
        name: "credit_card",
        // 12-19 digits, or groups of 3-6 digits with single space/dash/dot separators, the
        // last group possibly short after groups of four ("4417 7763 1706 9" Visa 13, "3830-
        // 7217-1027-27" Diners 14, "6251 8788 0345 5033 65" UnionPay 18); the validator
        // checks one separator kind (mixed only in 4-4-4-4: "4111 1111-1111 1111"), 12-19
        // digits in a group-aligned prefix; 12 only for Maestro.
        pattern: r"(?-u)\b(?:\d{12,19}|\d{3,6}(?:[ .\-]\d{3,6}){1,5}(?:[ .\-]\d{1,2})?)\b",
        validate: credit_card,
        rank: 14,
        extra_len: 0,
    },
    Builtin {
        name: "us_ssn",
        // 3-2-4 with spaces or dashes; dotted or nine bare digits only after an SSN keyword
        // (see the validator).
        pattern: r"(?-u)\b(?:\d{3}[ \-.]\d{2}[ \-.]\d{4}|\d{9})\b",
        validate: us_ssn,
        rank: 15,
        extra_len: 0,
    },
    Builtin {
        name: "us_itin",
        // IRS ITIN, 9XX-GG-SSSS (group 50-65, 70-88, 90-92, 94-99), written like an SSN: 3-2-4
        // with spaces or dashes; dotted or nine bare digits only after an ITIN keyword.
        pattern: r"(?-u)\b9\d{2}(?:[ \-.]\d{2}[ \-.]\d{4}|\d{6})\b",
        validate: us_itin,
        rank: 16,
        extra_len: 0,
    },
    Builtin {
        name: "iban",
        // Compact, or in groups of four separated by spaces or dashes; any letter case (the
        // validator wants an IBAN keyword before a compact lowercase one). It may be glued to
        // the word "IBAN" ("IBANDE89…") or to a lowercase word in front of an uppercase
        // country code ("KontoDE89…"); the validator drops that prefix. Groups separated by
        // no-break spaces (U+00A0) match as the country and check digits alone and the
        // validator reads the groups: a U+00A0 in the regex would add byte classes, and one
        // class past 128 doubles every lazy-DFA state (-12 % scan throughput).
        pattern: concat!(
            r"(?-u)(?:\b(?i:iban)?[A-Za-z]{2}|[a-z][A-Z]{2})\d{2}(?:[A-Za-z0-9]{11,30}\b|",
            r"(?:[ \-][A-Za-z0-9]{4}){2,7}(?:[ \-][A-Za-z0-9]{1,4})?\b|\b)",
        ),
        validate: iban,
        rank: 12,
        extra_len: IBAN_NBSP_EXTRA,
    },
    Builtin {
        name: "ipv4",
        pattern: "", // built by ipv4_pattern()
        validate: ipv4,
        rank: 17,
        extra_len: 0,
    },
    Builtin {
        name: "ipv6",
        pattern: "", // built by ipv6_pattern()
        validate: ipv6,
        rank: 18,
        extra_len: IPV6_ZONE_MAX + 1,
    },
    Builtin {
        name: "us_bank_routing",
        pattern: r"(?-u)\b(?:0\d|1[0-2]|2[1-9]|3[0-2]|6[1-9]|7[0-2]|80)\d{7}\b",
        validate: us_bank_routing,
        rank: 20,
        extra_len: 0,
    },
    Builtin {
        name: "crypto_wallet",
        // Base58Check: Bitcoin 1…/3…, Litecoin L…/M…, Dogecoin D…, Bitcoin testnet P2SH 2…;
        // bech32/bech32m segwit: bc1, ltc1, tb1 (testnet); Ethereum 0x + 40 hex. Every form
        // is checksum-validated. Testnet P2PKH (m…/n…) is left out: a base58 run from every
        // word starting with m or n cost ~2 % scan throughput, for coins without value.
        pattern: concat!(
            r"(?-u)\b(?:[123LMD][1-9A-HJ-NP-Za-km-z]{25,34}",
            r"|(?:bc1|BC1|ltc1|LTC1|tb1|TB1)[02-9ac-hj-np-zAC-HJ-NP-Z]{8,87}|0x[0-9a-fA-F]{40})\b",
        ),
        validate: crypto_wallet,
        rank: 11,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.openai",
        pattern: r"(?-u)\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,250}",
        validate: openai_key,
        rank: 4,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.anthropic",
        pattern: r"(?-u)\bsk-ant-[A-Za-z0-9_\-]{20,250}",
        validate: anthropic_key,
        rank: 3,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.aws_access_key",
        pattern: r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        validate: aws_access_key,
        rank: 9,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.aws_secret_key",
        // The keyword is part of the match (so prose never pays for 40-char runs); the
        // validator trims the finding to the 40-character secret itself.
        pattern: concat!(
            r"(?-u)(?i:(?:aws[_\-. ]?)?secret[_\-. ]?access[_\-. ]?key|aws[_\-. ]?secret(?:[_\-. ]?key)?)",
            r#"(?:\s{1,4}is\s{1,4}|[\x20\t"'`:=>\\]{1,10})"#,
            r"[A-Za-z0-9/+]{40}"
        ),
        validate: aws_secret_key,
        rank: 10,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.github",
        pattern: r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,242})\b",
        validate: github_token,
        rank: 6,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.slack",
        // Tokens, and incoming-webhook / workflow URLs (the URL path is the secret).
        pattern: concat!(
            r"(?-u)\b(?:(?:xox[abprse]|xoxe\.xox[bp]|xapp)-[A-Za-z0-9\-]{10,250}",
            r"|https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{20,250})",
        ),
        validate: slack_token,
        rank: 7,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.google",
        // API keys, and OAuth client secrets (`GOCSPX-` + 28)
        pattern: r"(?-u)\b(?:AIza[0-9A-Za-z_\-]{35}|GOCSPX-[0-9A-Za-z_\-]{28})",
        validate: google_key,
        rank: 8,
        extra_len: 0,
    },
    Builtin {
        name: "api_key.stripe",
        // Secret and restricted keys, and webhook signing secrets (whsec_). Publishable keys
        // (pk_live_, pk_test_) are public by design (they ship in web pages): not secrets.
        pattern: r"(?-u)\b(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}|whsec_[0-9A-Za-z]{24,247})\b",
        validate: stripe_key,
        rank: 5,
        extra_len: 0,
    },
    Builtin {
        name: "private_key",
        pattern: r"(?-u)-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
        validate: private_key,
        rank: 0,
        extra_len: PEM_MAX_BODY + 128,
    },
    Builtin {
        name: "jwt",
        pattern: r"(?-u)\beyJ[A-Za-z0-9_\-]{6,600}\.[A-Za-z0-9_\-]{2,6000}\.[A-Za-z0-9_\-]{0,1400}",
        validate: jwt,
        rank: 1,
        extra_len: 0,
    },
    Builtin {
        name: "url_credentials",
        pattern: concat!(
            r"(?-u)\b[A-Za-z][A-Za-z0-9+.\-]{1,31}://",
            r"[A-Za-z0-9._~%!$&'()*+,;=\-]{0,128}:[A-Za-z0-9._~%!$&'()*+,;=:@\-]{1,256}@",
            r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9.\-]{0,252})"
        ),
        validate: url_credentials,
        rank: 2,
        extra_len: 0,
    },
];

/// The regex source of a built-in (two are generated).
pub(crate) fn pattern_of(b: &Builtin) -> String {
    match b.name {
        "ipv4" => ipv4_pattern(),
        "ipv6" => ipv6_pattern(),
        _ => b.pattern.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// boundary helpers

fn at(h: &[u8], i: usize) -> Option<u8> {
    h.get(i).copied()
}

fn before(h: &[u8], s: usize, k: usize) -> Option<u8> {
    s.checked_sub(k).and_then(|i| at(h, i))
}

fn is_digit(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_digit())
}

/// The candidate is not glued to a longer digit sequence: no digit right before/after, and
/// no `-`/`.` joining it to another digit (`1.2.3.4.5`, `555-123-4567-89`).
fn digits_isolated(h: &[u8], s: usize, e: usize) -> bool {
    let joiner = |b: Option<u8>| matches!(b, Some(b'-' | b'.'));
    let glued_before =
        is_digit(before(h, s, 1)) || (joiner(before(h, s, 1)) && is_digit(before(h, s, 2)));
    let glued_after = is_digit(at(h, e)) || (joiner(at(h, e)) && is_digit(at(h, e + 1)));
    !(glued_before || glued_after)
}

/// Detectors whose candidates are digit groups; see [`glued`].
pub(crate) const NUMBER_SHAPED: &[&str] = &[
    "phone",
    "credit_card",
    "us_ssn",
    "us_itin",
    "ipv4",
    "us_bank_routing",
];

/// The candidate starts inside a longer digit sequence (`7.` or `7-` or `7` before it).
pub(crate) fn glued_left(h: &[u8], s: usize) -> bool {
    let joiner = matches!(before(h, s, 1), Some(b'-' | b'.'));
    is_digit(before(h, s, 1)) || (joiner && is_digit(before(h, s, 2)))
}

fn is_key_char(b: u8, extra: &[u8]) -> bool {
    b.is_ascii_alphanumeric() || extra.contains(&b)
}

/// The token does not continue past `e` with characters of the same alphabet.
fn key_ends(h: &[u8], e: usize, extra: &[u8]) -> bool {
    !at(h, e).is_some_and(|b| is_key_char(b, extra))
}

/// Cheap randomness sanity check for secret bodies: rejects placeholders such as
/// `sk-xxxxxxxxxxxxxxxxxxxxxxxx` or `sk-your-api-key-here-please`.
fn looks_random(body: &[u8]) -> bool {
    let mut seen = [false; 128];
    let mut distinct = 0;
    let (mut digit, mut upper, mut lower) = (false, false, false);
    for &b in body {
        if b < 128 && !seen[b as usize] {
            seen[b as usize] = true;
            distinct += 1;
        }
        digit |= b.is_ascii_digit();
        upper |= b.is_ascii_uppercase();
        lower |= b.is_ascii_lowercase();
    }
    distinct >= 8 && (digit || (upper && lower))
}

/// Ends of the maximal digit runs inside `h[s..e]`, with the number of digits up to each.
fn digit_groups(h: &[u8], s: usize, e: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut count = 0;
    let mut i = s;
    while i < e {
        if h[i].is_ascii_digit() {
            count += 1;
            if i + 1 == e || !h[i + 1].is_ascii_digit() {
                out.push((i + 1, count));
            }
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// validators

fn email(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let at_pos = span.iter().position(|&b| b == b'@')?;
    let (local, domain) = (&span[..at_pos], &span[at_pos + 1..]);
    let local_ok = !local.is_empty()
        && local.first() != Some(&b'.')
        && local.last() != Some(&b'.')
        && !local.windows(2).any(|w| w == b"..");
    let labels_ok = domain.split(|&b| b == b'.').all(|l| {
        !l.is_empty() && l.len() <= 63 && l.first() != Some(&b'-') && l.last() != Some(&b'-')
    });
    // "a@b.c-d.com" fine; an '@' right after the match means it is part of something else.
    let glued = at(h, e) == Some(b'@') || before(h, s, 1) == Some(b'@');
    // Image file names with a density suffix (`logo@2x.png`): no such top-level domains.
    const FILE_TLDS: [&[u8]; 8] = [
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"bmp",
    ];
    let tld = domain.rsplit(|&b| b == b'.').next().unwrap_or_default();
    let file = FILE_TLDS.iter().any(|t| tld.eq_ignore_ascii_case(t));
    (local_ok && labels_ok && !glued && !file).then_some((s, e))
}

fn phone(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    // A phone word and a number with a country code but no '+' ("phone 44 20 7946 0958").
    if h[s].is_ascii_alphabetic() {
        return phone_after_word(h, s, e);
    }
    // An extension ("x522", "ext. 12", "#7") is redacted with the number but not counted.
    let core = phone_core_end(h, s, e);
    // International numbers ('+', '(+44)' or '00' and a country code) are checked against
    // E.164 (8-15 digits after the prefix); others have fixed shapes.
    if let Some((start, body)) = intl_prefix(h, s) {
        if is_digit(before(h, start, 1)) {
            return None;
        }
        let found = international(h, start, body, core, e);
        if h[s] != b'0' {
            return found;
        }
        // '00' without separators is as likely a zero-padded id: only after a phone word.
        // Otherwise it may still be a national number ("001-234-5678").
        let grouped = h[s..core].iter().any(|b| !b.is_ascii_digit());
        if found.is_some() && (grouped || phone_word_before(h, s)) {
            return found;
        }
    }
    // A '+' glued to a word ("x+14155552671") was refused above; its digits are not a
    // number of their own either.
    if before(h, s, 1) == Some(b'+') {
        return None;
    }
    // Longest group-aligned prefix first: "(0602) 726344 12.34.56.78" is a phone followed
    // by an address, not one 16-digit non-phone.
    let groups = digit_groups(h, s, core);
    (1..=groups.len())
        .rev()
        .find(|&k| phone_without_plus(h, s, &groups[..k]))
        .map(|k| {
            let end = groups[k - 1].0;
            (s, if end == core { e } else { end })
        })
}

/// Where an international number starts and where its country code starts: `+44…`,
/// `(+44) …`, `0044…` (the `00` international prefix). A `(+44 20 …)` in parentheses
/// starts at the '+'.
fn intl_prefix(h: &[u8], s: usize) -> Option<(usize, usize)> {
    match (at(h, s), at(h, s + 1), at(h, s + 2)) {
        (Some(b'+'), _, _) => Some((s, s + 1)),
        (Some(b'('), Some(b'+'), _) => {
            let cc = h[s + 2..].iter().take_while(|b| b.is_ascii_digit()).count();
            let closed = (1..=3).contains(&cc) && at(h, s + 2 + cc) == Some(b')');
            Some((if closed { s } else { s + 1 }, s + 2))
        }
        (Some(b'0'), Some(b'0'), Some(b'1'..=b'9')) => Some((s, s + 2)),
        _ => None,
    }
}

/// A candidate that starts with a phone word: the number after it, when its first group is a
/// country code written without '+' ("Tel 44 20 7946 0958", "phone: 49 151 12345678") and
/// the digits fit that code. Anything else is left to the other shapes (the matcher goes on
/// after the word).
fn phone_after_word(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let n = s + h[s..e].iter().position(u8::is_ascii_digit)?;
    if before(h, n, 1).is_none_or(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let core = phone_core_end(h, n, e);
    let groups = digit_groups(h, n, core);
    international_after_word(h, n, &groups, core, e).or_else(|| local_after_label(h, n, core, e))
}

/// A number after a phone word whose first group is a country code written without '+'
/// ("phone 44 20 7946 0958").
fn international_after_word(
    h: &[u8],
    n: usize,
    groups: &[(usize, usize)],
    core: usize,
    e: usize,
) -> Option<(usize, usize)> {
    let cc_end = groups.first()?.0;
    if !v::country_code(&h[n..cc_end]) {
        return None;
    }
    let (start, end) = international(h, n, n, core, e)?;
    let number_end = end.min(core);
    let (digits, lens) = digits_and_groups(h, n, number_end);
    // Amounts with thousands separators ("call 44 000 000 000", "tel 1 500 000 000").
    let amount = lens.len() > 2 && lens[1..].iter().all(|&len| len == 3);
    (v::msisdn_plausible(&digits)
        && !amount
        && !last_group_zeros(&digits, &lens)
        && !national_number_not_phone(&h[n..number_end])
        && !national_number_not_phone(&h[cc_end..number_end]))
    .then_some((start, end))
}

/// A number of 7-15 digits (E.164's longest) in two to four groups at `n` ("8026.4790", "905 09 486",
/// "98 61 48 10"), taken only when a phone word labels it (fillers between: "my phone number
/// is …", "contact me at …") and no further group follows ("Tel: 020 7946 0958 2024": the scan
/// goes on after this candidate's label and finds the trunk-prefixed number alone).
fn local_after_label(h: &[u8], n: usize, core: usize, e: usize) -> Option<(usize, usize)> {
    let (digits, lens) = digits_and_groups(h, n, core);
    // Groups of up to five digits, or an area code and a long subscriber number joined by a
    // space or '-' ("120-19543839"; "8026.479012" is a decimal).
    let short_groups = lens.iter().all(|&len| len <= 5);
    let long_subscriber =
        lens[0] <= 5 && lens[1..].iter().all(|&len| len <= 8) && !h[n..core].contains(&b'.');
    let shaped = (2..=4).contains(&lens.len())
        && lens[0] >= 2
        && (short_groups || long_subscriber)
        && (7..=15).contains(&digits.len());
    let group_follows = matches!(at(h, core), Some(b' ' | b'/')) && is_digit(at(h, core + 1));
    (shaped
        // Amounts with thousands separators ("calls: 12 000 000") and round numbers.
        && !thousands_groups(&lens)
        && !last_group_zeros(&digits, &lens)
        && digits_isolated(h, n, core)
        && !group_follows
        && !national_number_not_phone(&h[n..core])
        && phone_labelled(h, n))
    .then_some((n, e))
}

/// The digits of `h[s..e]` and the lengths of its digit groups.
fn digits_and_groups(h: &[u8], s: usize, e: usize) -> (Vec<u8>, Vec<usize>) {
    let digits = h[s..e].iter().copied().filter(u8::is_ascii_digit).collect();
    (digits, group_lens(&digit_groups(h, s, e)).collect())
}

/// Digit groups written like an amount with thousands separators: a lead group of one or two
/// digits, then groups of three ("12 000 000", "1.500.000").
fn thousands_groups(lens: &[usize]) -> bool {
    lens.len() > 1 && lens[0] < 3 && lens[1..].iter().all(|&len| len == 3)
}

/// The last digit group is all zeros (a round amount: "… 500 000").
fn last_group_zeros(digits: &[u8], lens: &[usize]) -> bool {
    lens.last()
        .and_then(|&len| digits.len().checked_sub(len))
        .is_some_and(|from| digits[from..].iter().all(|&b| b == b'0'))
}

/// A phone word shortly before `s`: one of [`PHONE_WORDS`] in the [`PHONE_CONTEXT`] bytes
/// before it, or one of [`ADJACENT_PHONE_WORDS`] with at most filler words in between.
fn phone_word_before(h: &[u8], s: usize) -> bool {
    keyword_before(h, s, PHONE_CONTEXT, &PHONE_WORDS, false)
        || ADJACENT_PHONE_WORDS
            .iter()
            .any(|w| word_adjacent(h, s, PHONE_CONTEXT, w, true, PHONE_FILLERS))
}

/// The number at `s` is labelled as one: a phone word right before it, only fillers between
/// ("Phone: 0864941566144", "call me at 7147412596461", "mobile no. 08-49 15 27"). Stronger
/// than [`phone_word_before`]'s 32-byte window: such a number is taken whatever its shape
/// (7-15 digits in up to four groups) or country code. (Only context before a number counts: a stream releases a
/// number a few bytes after its end, before "… is my number" could arrive.)
fn phone_labelled(h: &[u8], s: usize) -> bool {
    PHONE_WORDS
        .iter()
        .chain(ADJACENT_PHONE_WORDS.iter())
        .any(|w| word_adjacent(h, s, PHONE_CONTEXT, w, true, PHONE_FILLERS))
}

/// Whether `word` (lowercase) starts a word in the `window` bytes before `s` and nothing but
/// punctuation and `fillers` (lowercase words) stands between it and `s`. With `suffixed`
/// the word may go on with letters ("call" in "calling").
fn word_adjacent(
    h: &[u8],
    s: usize,
    window: usize,
    word: &[u8],
    suffixed: bool,
    fillers: &[&[u8]],
) -> bool {
    let ctx: Vec<u8> = h[s.saturating_sub(window)..s]
        .iter()
        .map(u8::to_ascii_lowercase)
        .collect();
    let word_char = |b: &u8| b.is_ascii_alphanumeric() || *b >= 0x80;
    (0..ctx.len()).any(|i| {
        if !ctx[i..].starts_with(word) || (i > 0 && word_char(&ctx[i - 1])) {
            return false;
        }
        let mut j = i + word.len();
        if suffixed {
            while j < ctx.len() && ctx[j].is_ascii_alphabetic() {
                j += 1;
            }
        } else if ctx.get(j).is_some_and(word_char) {
            return false;
        }
        ctx[j..]
            .split(|b| !word_char(b))
            .filter(|w| !w.is_empty())
            .all(|w| fillers.contains(&w))
    })
}

/// An international number from `s` (its country code at `body`) through the longest
/// prefix ending on a digit group that is a plausible number, so a trailing unrelated number
/// ("+44 20 7946 0958 2024") does not hide the phone.
fn international(h: &[u8], s: usize, body: usize, core: usize, e: usize) -> Option<(usize, usize)> {
    let groups = digit_groups(h, body, core);
    for (k, &(end, ndigits)) in groups.iter().enumerate().rev() {
        if !(8..=15).contains(&ndigits) {
            continue;
        }
        let singles = group_lens(&groups[..=k]).filter(|&len| len == 1).count();
        let span = &h[s..end];
        let opens = span.iter().filter(|&&b| b == b'(').count();
        let closes = span.iter().filter(|&&b| b == b')').count();
        if singles <= 2
            && opens == closes
            && digits_isolated(h, s, end)
            && !plus_number_not_phone(&h[body - 1..end])
        {
            return Some((s, if end == core { e } else { end }));
        }
    }
    None
}

/// Lengths of the digit groups from [`digit_groups`] (which counts digits cumulatively).
fn group_lens(groups: &[(usize, usize)]) -> impl Iterator<Item = usize> + '_ {
    groups.iter().scan(0, |prev, &(_, n)| {
        let len = n - *prev;
        *prev = n;
        Some(len)
    })
}

/// Latin American shape: a two-digit area code in parentheses and a local number of 4-4 or
/// 5-4 digits joined by '-' ("(11) 98765-4321" BR, "(55) 1234-5678" MX, "(11) 4567-8901"
/// AR). The parentheses and the dash together are the evidence, no phone word needed; a
/// range of years ("(12) 1990-2000") is not one.
fn area_code_in_parens(h: &[u8], s: usize, groups: &[(usize, usize)], lens: &[usize]) -> bool {
    if !(matches!(lens, [2, 4 | 5, 4])
        && h[s + 1] != b'0'
        && at(h, s + 3) == Some(b')')
        && matches!(at(h, s + 4), Some(b' ' | b'0'..=b'9'))
        && at(h, s + 5).is_some_and(|b| b.is_ascii_digit())
        && at(h, groups[1].0) == Some(b'-'))
    {
        return false;
    }
    let year = |end: usize| matches!(&h[end - 4..end], [b'1', b'9', ..] | [b'2', b'0', ..]);
    !(lens[1] == 4 && year(groups[1].0) && year(groups[2].0))
}

/// Whether the candidate from `s` through the last of `groups` (its digit groups, no
/// extension) is a national, NANP or phone-word-announced number.
fn phone_without_plus(h: &[u8], s: usize, groups: &[(usize, usize)]) -> bool {
    let Some(&(end, _)) = groups.last() else {
        return false;
    };
    if !digits_isolated(h, s, end) {
        return false;
    }
    let first = h[s];
    let digits: Vec<u8> = h[s..end]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    let bare = digits.len() == end - s;
    // "000 000 000" is a placeholder or an amount, never a number to dial.
    if digits.iter().all(|&b| b == b'0') {
        return false;
    }
    // Context checks run only for candidates that need them (digit-dense text has many).
    // A labelled number also has a phone word before it: `phone_word` needs no label check.
    let label = std::cell::OnceCell::new();
    let labelled = || *label.get_or_init(|| phone_labelled(h, s));
    let phone_word = || phone_word_before(h, s);
    let lens: Vec<usize> = group_lens(groups).collect();
    // Other national formats have no shape of their own: 8-12 digits in one run or three or
    // four groups, after a phone word.
    let other_national = || {
        // Amounts written with thousands separators are not phones even after a phone word
        // ("API calls: 12 000 000", "calls 1.500.000"): a short lead group followed by
        // groups of three, or a last group of zeros; bare, four trailing zeros
        // ("calls: 1500000000").
        let amount = thousands_groups(&lens)
            || (lens.len() > 1 && last_group_zeros(&digits, &lens))
            || (bare && digits.ends_with(b"0000"));
        // 13-15 bare digits: an international number without '+' (MSISDN) whose country
        // code fits its length ("4915112345678"; not "1234567890123": NANP has 11).
        let national = (8..=12).contains(&digits.len()) && (bare || (3..=4).contains(&lens.len()));
        let msisdn = bare
            && (13..=15).contains(&digits.len())
            && (v::msisdn_plausible(&digits) || labelled());
        (national || msisdn) && !amount && !national_number_not_phone(&h[s..end]) && phone_word()
    };
    if first == b'0' || (first == b'(' && at(h, s + 1) == Some(b'0')) {
        // 0 + area code + subscriber: 9 (SE) to 15 digits (E.164's maximum; AT "(02239)
        // 09960 308" has 13) when written in groups, more than 12 only with one separator
        // kind ("0171 1234567 01.02.2024" is a phone and a date); an unbroken run needs
        // 10-11 (a bare 9-digit 0… is as likely a routing number or id) unless a phone word
        // comes before it ("Phone: 039093786").
        let n = digits.len();
        let shaped = if bare {
            (10..=11).contains(&n)
        } else {
            (9..=12).contains(&n) || ((13..=15).contains(&n) && one_separator_kind(&h[s..end]))
        };
        // Labelled ("Phone: 0864941566144", "contact me at 08-49 15 27", "call me on
        // 0768332"): any 7-15 digits.
        let labelled_number = || (7..=15).contains(&n) && labelled();
        return ((shaped || labelled_number()) && !national_number_not_phone(&h[s..end]))
            || (bare && other_national());
    }
    if first == b'8' && !is_digit(at(h, s + 1)) {
        // Trunk 8 + ten digits (RU/CIS): the (area code) is the evidence, or a phone word.
        return digits.len() == 11 && (h[s..end].contains(&b'(') || phone_word());
    }
    let d = if digits.len() == 11 && digits[0] == b'1' {
        &digits[1..]
    } else {
        &digits[..]
    };
    if first == b'(' && area_code_in_parens(h, s, groups, &lens) {
        return true;
    }
    if first == b'(' && !(lens[0] == 3 && d.len() == 10) {
        // A country code in parentheses without '+' ("(351) 936827521"): E.164's length
        // after a code that exists, and only when a phone word labels it.
        let cc = &h[s + 1..s + 1 + lens[0]];
        return at(h, s + 1 + lens[0]) == Some(b')')
            && v::country_code(cc)
            && (8..=15).contains(&digits.len())
            && !national_number_not_phone(&h[s..end])
            && labelled();
    }
    // Three groups of three joined by '-' ("967-278-959" ES, "601-789-595" CZ): amounts
    // are not written with dashes; with spaces the same digits are as often an amount.
    if lens == [3, 3, 3] && h[s..end].iter().filter(|&&b| b == b'-').count() == 2 {
        return true;
    }
    let nanp_shape = first == b'('
        || (d.len() == 10 && matches!(lens.as_slice(), [1, 3, 3, 4] | [3, 3, 4] | [10] | [11]));
    if !nanp_shape {
        return other_national();
    }
    // Ten bare digits are as often an order number or an id as a phone: they must be a
    // valid NANP number ([1] NXX NXX XXXX, no N11 service code) with a phone word shortly
    // before ("call 4155552671", "Tel: 4155552671", "mobile 14155552671"), or another
    // country's number after a phone word ("mobile 3500268466", "Phone: 18730792440").
    let nanp = d.len() == 10
        && !(bare && (&d[1..3] == b"11" || d[0] < b'2' || d[3] < b'2' || !phone_word()));
    nanp || (bare && other_national())
}

/// The separators between the digit groups of `span` (parentheses aside) are all one kind:
/// "(02239) 09960 308", not "0171 1234567 01.02".
fn one_separator_kind(span: &[u8]) -> bool {
    let mut seps = span
        .iter()
        .filter(|b| !b.is_ascii_digit() && !matches!(b, b'(' | b')'));
    let first = seps.next();
    seps.all(|b| Some(b) == first)
}

/// Digit groups that are not phones: mixed separators (`01.01.1971 05/19`) and dates
/// (`01.02.2024 1030`, `2024-01-15`).
fn national_number_not_phone(span: &[u8]) -> bool {
    let mut seps = span
        .iter()
        .filter(|b| matches!(b, b'.' | b'-' | b'/'))
        .copied()
        .collect::<Vec<u8>>();
    seps.dedup();
    let mixed = seps.len() > 1;
    // (digits, separator before the group); the first group's separator is 0.
    let mut groups: Vec<(usize, u8)> = Vec::new();
    let mut sep = 0;
    for chunk in span.split_inclusive(|b| !b.is_ascii_digit()) {
        let digits = chunk.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 {
            groups.push((digits, sep));
        }
        if let Some(&last) = chunk.last().filter(|b| !b.is_ascii_digit()) {
            sep = last;
        }
    }
    // A date in any three consecutive groups ("44 2024-01-15", not only at the start).
    let digits: Vec<u8> = span.iter().copied().filter(u8::is_ascii_digit).collect();
    let date = |lens: [usize; 3], year_group: usize| {
        (0..groups.len().saturating_sub(2)).any(|i| {
            let w = &groups[i..i + 3];
            let year_at: usize = groups[..i + year_group].iter().map(|g| g.0).sum();
            w.iter().map(|g| g.0).eq(lens)
                && matches!(w[1].1, b'.' | b'-' | b'/')
                && w[1].1 == w[2].1
                && matches!(digits.get(year_at), Some(b'1' | b'2'))
        })
    };
    mixed || date([2, 2, 4], 2) || date([4, 2, 2], 0)
}

/// End of the number proper inside a phone candidate: before an `x` / `ext` / `#` extension.
fn phone_core_end(h: &[u8], s: usize, e: usize) -> usize {
    let mut end = h[s..e]
        .iter()
        .position(|&b| matches!(b, b'x' | b'e' | b'#'))
        .map_or(e, |p| s + p);
    while end > s && h[end - 1] == b' ' {
        end -= 1;
    }
    end
}

/// `+` numbers that are not phones: signed decimals (`+1441497364.649`) and ISO 8601
/// expanded-year dates (`+12345-03-04`, `+2024-01-15`).
fn plus_number_not_phone(span: &[u8]) -> bool {
    let mut groups: Vec<(usize, u8)> = Vec::new(); // (digits, separator before the group)
    let mut sep = b'+';
    let mut run = 0;
    for &b in span.iter().skip(1) {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if run > 0 {
                groups.push((run, sep));
            }
            run = 0;
            sep = b;
        }
    }
    if run > 0 {
        groups.push((run, sep));
    }
    let decimal = groups.windows(2).any(|w| w[0].0 >= 6 && w[1].1 == b'.');
    let date = groups.len() >= 3
        && groups[0].0 >= 4
        && groups[1..3].iter().all(|&(n, sep)| n <= 2 && sep == b'-');
    decimal || date
}

fn credit_card(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let joiner = matches!(before(h, s, 1), Some(b'-' | b'.'));
    if is_digit(before(h, s, 1)) || (joiner && is_digit(before(h, s, 2))) {
        return None;
    }
    let groups = digit_groups(h, s, e);
    let check = |end: usize| -> bool {
        let digits: Vec<u8> = h[s..end]
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .collect();
        (12..=19).contains(&digits.len())
            && v::luhn(&digits)
            && v::plausible_iin(&digits)
            && !is_digit(at(h, end))
            && !(matches!(at(h, end), Some(b'-' | b'.')) && is_digit(at(h, end + 1)))
    };
    // An unseparated number, possibly followed by an unrelated one ("4111…1111 7").
    if groups.len() == 1 || groups[0].1 >= 12 {
        return check(groups[0].0).then_some((s, groups[0].0));
    }
    // Four groups of four with mixed single separators ("4111 1111-1111 1111",
    // "4111.1111 1111.1111"): the card shape itself, so only that shape; otherwise the
    // one-separator prefixes below ("6711-6823-5552 1999" is a 12-digit Maestro and a year).
    if groups.len() >= 4 && group_lens(&groups[..4]).all(|len| len == 4) {
        let end = groups[3].0;
        let seps: Vec<u8> = h[s..end]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_digit())
            .collect();
        if seps.len() == 3 && seps.iter().any(|&b| b != seps[0]) && check(end) {
            return Some((s, end));
        }
    }
    // Separated: one separator kind, groups of 3-6 digits (4-4-4-4, 4-6-5, 4-4-4-4-3 ...),
    // or a last group of 1-2 digits after three or more groups of four (4-4-4-1, 4-4-4-2,
    // 4-4-4-4-2). Try the longest such group-aligned prefix first, so that a following
    // unrelated number ("4111 1111 1111 1111 2024") is not swallowed and does not hide the
    // card.
    let sep = h[groups[0].0];
    let mut prev = 0;
    let mut start = s;
    let mut usable = 0;
    let mut all_fours = true;
    for (k, &(end, n)) in groups.iter().enumerate() {
        let len = n - prev;
        prev = n;
        let sep_ok = k == 0 || (end - len - start == 1 && h[start] == sep);
        let short_tail = (1..=2).contains(&len) && k >= 3 && all_fours;
        if !((3..=6).contains(&len) || short_tail) || !sep_ok {
            break;
        }
        all_fours &= len == 4;
        usable += 1;
        start = end;
        if len < 3 {
            break;
        }
    }
    groups[..usable]
        .iter()
        .rev()
        .find(|&&(end, _)| check(end))
        .map(|&(end, _)| (s, end))
}

/// The area, group and serial of a 3-2-4 candidate (nine bare digits, or three groups with one
/// separator kind) whose digits are not part of a longer number.
fn three_two_four(h: &[u8], s: usize, e: usize) -> Option<(&[u8], &[u8], &[u8])> {
    let span = &h[s..e];
    if !digits_isolated(h, s, e) {
        return None;
    }
    if span.len() == 9 {
        Some((&span[..3], &span[3..5], &span[5..]))
    } else if span[3] == span[6] {
        Some((&span[..3], &span[4..6], &span[7..]))
    } else {
        None
    }
}

fn us_ssn(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let (area, group, serial) = three_two_four(h, s, e)?;
    // Nine bare digits are as often an id, an amount or a routing number, and dotted groups
    // a version: they need an SSN keyword shortly before ("SSN: 748538820").
    let shaped = span.len() == 11 && span[3] != b'.';
    let keyword = || {
        keyword_before(h, s, SSN_CONTEXT, &SSN_WORDS, true)
            || word_adjacent(h, s, SSN_CONTEXT, b"social", false, SSN_FILLERS)
    };
    (v::ssn_parts_valid(area, group, serial) && (shaped || keyword())).then_some((s, e))
}

fn us_itin(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let (area, group, serial) = three_two_four(h, s, e)?;
    // Like an SSN: nine bare digits or dotted groups need a keyword shortly before.
    let shaped = span.len() == 11 && span[3] != b'.';
    (v::itin_parts_valid(area, group, serial)
        && (shaped || keyword_before(h, s, SSN_CONTEXT, &ITIN_WORDS, true)))
    .then_some((s, e))
}

/// Bytes of a glued prefix in front of an IBAN candidate: the word "IBAN" ("IBANDE89…") or
/// the last letter of a lowercase word before an uppercase country code ("kontoDE89…").
fn iban_prefix(span: &[u8]) -> usize {
    let digits_at = |i: usize| {
        span.get(i..i + 2)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    if digits_at(2) {
        0
    } else if span[0].is_ascii_lowercase() && digits_at(3) {
        1
    } else {
        4
    }
}

/// End of an IBAN in groups separated by no-break spaces (U+00A0) that starts with the
/// four characters ending at `e`: through the last group of 1-4 characters after a
/// separator, at most 34 characters in all.
fn iban_nbsp_end(h: &[u8], e: usize) -> Option<usize> {
    const NBSP: &[u8] = b"\xC2\xA0";
    let mut end = e;
    let mut chars = 4;
    while h[end..].starts_with(NBSP) {
        let group = h[end + 2..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if group == 0
            || chars + group > 34
            || at(h, end + 2 + group).is_some_and(|b| b.is_ascii_alphanumeric())
        {
            break;
        }
        chars += group;
        end += 2 + group;
        if group < 4 {
            break;
        }
    }
    (end > e).then_some(end)
}

fn iban(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let s = s + iban_prefix(&h[s..e]);
    let country = h.get(s..s + 2)?.to_ascii_uppercase();
    let want = v::iban_length(&country)?;
    // Only the country and check digits: groups separated by no-break spaces follow, or
    // this is no IBAN.
    let e = if e - s == 4 { iban_nbsp_end(h, e)? } else { e };
    // (separator kind, or 0 for an IBAN character; byte end) of each unit: a space, a dash or
    // a no-break space (U+00A0, two bytes) separates.
    let mut units: Vec<(u8, usize)> = Vec::with_capacity(e - s);
    let mut i = s;
    while i < e {
        let (kind, len) = match h[i] {
            b' ' | b'-' => (h[i], 1),
            0xC2 if at(h, i + 1) == Some(0xA0) => (0xA0, 2),
            _ => (0, 1),
        };
        i += len;
        units.push((kind, i));
    }
    // One separator kind: a group after another separator is not part of this IBAN.
    let sep = units.iter().map(|u| u.0).find(|&k| k != 0);
    if let Some(p) = units.iter().position(|&(k, _)| k != 0 && Some(k) != sep) {
        units.truncate(p);
    }
    let e = units.last()?.1;
    // A compact lowercase run is as likely a hash or an id: "IBAN" shortly before it.
    if sep.is_none()
        && h[s..e].iter().any(u8::is_ascii_lowercase)
        && !keyword_before(h, s, IBAN_CONTEXT, &[b"iban"], false)
    {
        return None;
    }
    let mut compact = Vec::with_capacity(34);
    for (k, &(kind, end)) in units.iter().enumerate() {
        if kind == 0 {
            compact.push(h[end - 1].to_ascii_uppercase());
            if compact.len() == want {
                // Must end on a group boundary (separated) or at the candidate end (compact).
                let boundary = units.get(k + 1).is_none_or(|u| u.0 != 0);
                if boundary && v::iban_valid(&compact) {
                    return Some((s, end));
                }
            }
        }
    }
    // Not the country's length: the longest group-aligned prefix whose check digits hold
    // still counts ("MT75 … 2403 C++" ends before " C").
    let mut kept = compact.len();
    let mut k = units.len();
    loop {
        if v::iban_checksummed(compact.get(..kept)?) {
            return Some((s, units[k - 1].1));
        }
        // back to the end of the previous group
        let sep_at = units[..k].iter().rposition(|u| u.0 != 0)?;
        kept -= k - sep_at - 1;
        k = sep_at;
    }
}

fn ipv4(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let dotted_before = before(h, s, 1) == Some(b'.');
    let dotted_after =
        at(h, e) == Some(b'.') && at(h, e + 1).is_some_and(|b| b.is_ascii_alphanumeric());
    (!dotted_before && !dotted_after && digits_isolated(h, s, e)).then_some((s, e))
}

fn ipv6(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = std::str::from_utf8(&h[s..e]).ok()?;
    let glue =
        |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    // Glued to more address-like text on either side: part of something longer. A lone
    // ':' next to the address (`2001:db8::1: next`) is punctuation, and so is one after a
    // label that is not hex digits (`ip:2001:db8::1`, `IPv6:…`, `addr:fe80::1`); after
    // hex digits it joins a longer run (`1:2:3:4:5:6:7:8:9`, `00:1A:2B:3C:4D:5E`).
    let prev = before(h, s, 1);
    let colon_before = prev == Some(b':') && {
        let label = h[..s - 1]
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let word = &h[s - 1 - label..s - 1];
        before(h, s, label + 2) != Some(b':')
            && (label == 0 || word.iter().any(|b| !b.is_ascii_hexdigit()))
    };
    if glue(prev) && !colon_before {
        return None;
    }
    let next = at(h, e);
    let colon_after = next == Some(b':') && !glue(at(h, e + 1));
    if glue(next) && !colon_after {
        return None;
    }
    if (prev == Some(b'.') && is_digit(before(h, s, 2)))
        || (next == Some(b'.') && is_digit(at(h, e + 1)))
    {
        return None;
    }
    // Hex-only words joined by '::' (C++ `Foo::Bar`, `dead::beef`) are not addresses.
    if !span.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    span.parse::<std::net::Ipv6Addr>().ok()?;
    Some((s, ipv6_zone_end(h, e)?))
}

/// End of an IPv6 address at `e` with its zone id, if one follows (`fe80::1%eth0`,
/// `%25eth0` in a URL, `%eth0.100`; not a sentence's final '.'). None when the zone runs on
/// past [`IPV6_ZONE_MAX`] (part of something longer).
fn ipv6_zone_end(h: &[u8], e: usize) -> Option<usize> {
    if at(h, e) != Some(b'%') || !at(h, e + 1).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Some(e);
    }
    let zone_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let len = h[e + 1..].iter().take_while(|b| zone_char(b)).count();
    if len > IPV6_ZONE_MAX {
        return None;
    }
    let mut end = e + 1 + len;
    while matches!(h[end - 1], b'.' | b'-') {
        end -= 1;
    }
    Some(end)
}

fn us_bank_routing(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if !digits_isolated(h, s, e) || !v::aba_valid(&h[s..e]) {
        return None;
    }
    // Any 9-digit number passes the ABA checksum 1 time in 10: require a keyword nearby.
    const KEYWORDS: [&[u8]; 4] = [b"routing", b"aba", b"rtn", b"transit"];
    keyword_before(h, s, ROUTING_CONTEXT, &KEYWORDS, true).then_some((s, e))
}

/// Whether one of `keywords` (lowercase) starts a word in the `window` bytes before `s`,
/// case-insensitively; with `whole_word` it must also end one ("aba" but not "abacus").
fn keyword_before(h: &[u8], s: usize, window: usize, keywords: &[&[u8]], whole_word: bool) -> bool {
    let ctx: Vec<u8> = h[s.saturating_sub(window)..s]
        .iter()
        .map(u8::to_ascii_lowercase)
        .collect();
    keywords.iter().any(|kw| {
        ctx.windows(kw.len()).enumerate().any(|(i, w)| {
            w == *kw
                && !(i > 0 && ctx[i - 1].is_ascii_alphabetic())
                && !(whole_word && ctx.get(i + kw.len()).is_some_and(u8::is_ascii_alphabetic))
        })
    })
}

fn crypto_wallet(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let ok = if let Some(hex) = span.strip_prefix(b"0x") {
        v::eth_address_valid(hex)
    } else if [&b"bc1"[..], b"tb1", b"ltc1"]
        .iter()
        .any(|p| span.len() > p.len() && span[..p.len()].eq_ignore_ascii_case(p))
    {
        v::segwit_address_valid(span, &[b"bc", b"tb", b"ltc"])
    } else {
        v::base58check_address(span, &v::WALLET_VERSIONS)
    };
    ok.then_some((s, e))
}

fn openai_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    if span.starts_with(b"sk-ant-") || !key_ends(h, e, b"_-") {
        return None;
    }
    let body = [&b"sk-proj-"[..], b"sk-svcacct-", b"sk-admin-", b"sk-"]
        .iter()
        .find_map(|p| span.strip_prefix(*p))?;
    looks_random(body).then_some((s, e))
}

fn anthropic_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let body = h[s..e].strip_prefix(b"sk-ant-")?;
    (key_ends(h, e, b"_-") && looks_random(body)).then_some((s, e))
}

fn aws_access_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let body = &h[s + 4..e];
    let distinct = {
        let mut seen = [false; 128];
        body.iter()
            .filter(|&&b| !std::mem::replace(&mut seen[(b & 127) as usize], true))
            .count()
    };
    (distinct >= 6).then_some((s, e))
}

fn aws_secret_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let start = e.checked_sub(40).filter(|&x| x >= s)?;
    let secret = &h[start..e];
    let has_lower = secret.iter().any(u8::is_ascii_lowercase);
    let has_upper = secret.iter().any(u8::is_ascii_uppercase);
    let has_other = secret
        .iter()
        .any(|b| b.is_ascii_digit() || *b == b'/' || *b == b'+');
    (key_ends(h, e, b"/+=") && has_lower && has_upper && has_other).then_some((start, e))
}

fn github_token(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let body = span
        .strip_prefix(b"github_pat_")
        .unwrap_or(span.get(4..).unwrap_or_default());
    looks_random(body).then_some((s, e))
}

fn slack_token(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    if let Some(path) = span.strip_prefix(b"https://hooks.slack.com/") {
        return slack_webhook(path).then_some((s, e));
    }
    let dash = span.iter().position(|&b| b == b'-')?;
    let body = &span[dash + 1..];
    (key_ends(h, e, b"-") && body.iter().any(u8::is_ascii_digit) && looks_random(body))
        .then_some((s, e))
}

/// The path of a Slack webhook URL after the host: `services/T…/B…/secret` (incoming
/// webhooks) or `workflows|triggers/T…/A…/id/secret`; the last segment is the secret and
/// must look random (documentation placeholders such as `XXXXXXXX` do not).
fn slack_webhook(path: &[u8]) -> bool {
    let segments: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let (Some(kind), Some(team), Some(secret)) =
        (segments.first(), segments.get(1), segments.last())
    else {
        return false;
    };
    let team_ok = team.first() == Some(&b'T') && team.len() >= 8;
    let services_ok =
        *kind != b"services" || segments.get(2).is_some_and(|b| b.first() == Some(&b'B'));
    segments.len() >= 4 && team_ok && services_ok && secret.len() >= 16 && looks_random(secret)
}

fn google_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let body = h[s..e].strip_prefix(b"GOCSPX-").unwrap_or(&h[s + 4..e]);
    (key_ends(h, e, b"_-") && looks_random(body)).then_some((s, e))
}

fn stripe_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let span = &h[s..e];
    let body = span
        .strip_prefix(b"whsec_")
        .unwrap_or(&span[span.len().min(8)..]);
    looks_random(body).then_some((s, e))
}

/// Extends a `BEGIN … PRIVATE KEY` header to its matching END line (≤ [`PEM_MAX_BODY`]).
/// Without an END line (truncated paste, or a stream window that has not seen it yet) the
/// finding covers the header plus the base64 lines that follow it.
fn private_key(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    let header = &h[s..e];
    let label = header
        .strip_prefix(b"-----BEGIN ")?
        .strip_suffix(b"-----")?;
    let limit = (e + PEM_MAX_BODY).min(h.len());
    let body_char = |b: &u8| b.is_ascii_alphanumeric() || b" \t\r\n+/=:,.-\\()".contains(b);
    let mut i = e;
    while i < limit {
        if h[i..].starts_with(b"-----END ") {
            let rest = &h[i + 9..];
            if rest.starts_with(label) && rest[label.len()..].starts_with(b"-----") {
                return Some((s, i + 9 + label.len() + 5));
            }
            break;
        }
        // Another armor line ("-----BEGIN ...") ends the search: keeps repeated headers linear.
        if !body_char(&h[i]) || h[i..].starts_with(b"-----") {
            break;
        }
        i += 1;
    }
    // No END: cover following base64 lines (also JSON-escaped "\n" separators).
    let mut end = e;
    let mut j = e;
    loop {
        let mut k = j;
        if h[k..].starts_with(b"\r\n") {
            k += 2;
        } else if h[k..].starts_with(b"\n") || h[k..].starts_with(b" ") {
            k += 1;
        } else if h[k..].starts_with(b"\\n") {
            k += 2;
        } else if k != e {
            break;
        }
        let run = h[k..limit.max(k)]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            .count();
        if run < 4 {
            break;
        }
        j = k + run;
        end = j;
    }
    Some((s, end))
}

fn jwt(h: &[u8], s: usize, e: usize) -> Option<(usize, usize)> {
    if !key_ends(h, e, b"_-=") {
        return None;
    }
    let span = &h[s..e];
    let mut parts = span.split(|&b| b == b'.');
    let header = parts.next()?;
    let payload = parts.next()?;
    (v::jwt_header_valid(header) && v::b64url_decode(payload).is_some()).then_some((s, e))
}

fn url_credentials(h: &[u8], s: usize, mut e: usize) -> Option<(usize, usize)> {
    // A sentence-ending '.' or '-' is not part of the host.
    while e > s && matches!(h[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let span = &h[s..e];
    let host_start = span.iter().rposition(|&b| b == b'@')? + 1;
    (host_start < span.len()).then_some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_ranks_unique() {
        let mut names: Vec<_> = BUILTINS.iter().map(|b| b.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILTINS.len());
        let mut ranks: Vec<_> = BUILTINS.iter().map(|b| b.rank).collect();
        ranks.sort_unstable();
        ranks.dedup();
        assert_eq!(ranks.len(), BUILTINS.len());
    }

    #[test]
    fn looks_random_rejects_placeholders() {
        assert!(!looks_random(b"xxxxxxxxxxxxxxxxxxxxxxxx"));
        assert!(!looks_random(b"your-api-key-goes-here-now"));
        assert!(looks_random(b"abc123DEF456ghi789JKL012"));
    }
}
