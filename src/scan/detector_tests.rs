//! Per-detector true-positive and false-positive tables for the built-in detectors, run
//! through the full matcher (all built-ins at once, so priority and rejection handling are
//! exercised too), plus custom regex/keyword specs and error cases.

use std::sync::OnceLock;

use super::detectors;
use super::*;

fn builtin() -> &'static Matcher {
    static M: OnceLock<Matcher> = OnceLock::new();
    M.get_or_init(|| Matcher::builtin().expect("built-ins compile"))
}

/// (label, matched text) of every finding.
fn found(text: &str) -> Vec<(String, String)> {
    let m = builtin();
    m.find(text)
        .into_iter()
        .map(|f| {
            (
                m.labels()[f.pattern].clone(),
                text[f.start..f.end].to_string(),
            )
        })
        .collect()
}

/// Each `(text, expected)` must yield exactly one finding of `label` covering `expected`.
fn assert_tp(label: &str, cases: &[(&str, &str)]) {
    for (text, want) in cases {
        let got = found(text);
        assert_eq!(
            got,
            vec![(label.to_string(), want.to_string())],
            "true positive for {label} in {text:?}"
        );
    }
}

/// None of the texts may yield a finding of `label`.
fn assert_fp(label: &str, texts: &[&str]) {
    for text in texts {
        let got = found(text);
        assert!(
            got.iter().all(|(l, _)| l != label),
            "false positive for {label} in {text:?}: {got:?}"
        );
    }
}

/// Same as `assert_tp` with the whole value embedded in a sentence.
fn tp_embedded(label: &str, values: &[&str]) {
    for v in values {
        let text = format!("Note: the value {v} was in the log.");
        assert_tp(label, &[(text.as_str(), v)]);
    }
}

#[test]
fn table_matches_builtin_list() {
    let names: Vec<&str> = detectors::builtins().iter().map(|b| b.name).collect();
    let mut a = names.clone();
    let mut b = BUILTIN_DETECTORS.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert_eq!(builtin().labels().len(), BUILTIN_DETECTORS.len());
    for (i, l) in builtin().labels().iter().enumerate() {
        assert_eq!(l, BUILTIN_DETECTORS[i]);
        assert!(builtin().pattern_bound(i).is_some(), "{l} must be bounded");
    }
}

#[test]
fn email() {
    tp_embedded(
        "email",
        &[
            "john.doe@example.com",
            "a_b+tag@sub.domain.co.uk",
            "x@y.io",
            "first.last@xn--bcher-kva.de",
            "UPPER@EXAMPLE.COM",
            "user%name@example.org",
            "test-1@my-domain.net",
            "o.k_99@mail.example.travel",
            "müller@example.de",
            "josé.garcía@example.es",
            "Łukasz.Żółć@example.pl",
            "jürgen.weiß@gmx.de",
            "zoë@bücher.de",
            "Ünal@example.com.tr",
            "nguyễn.văn@example.vn",
            "o'brien@example.ie",
            "иван.петров@пример.рф",
            "boleslav98@deineko.укр",
            "αλέξης@example.gr",
        ],
    );
    // Scripts without word spaces: the glued text is not part of the address.
    assert_tp(
        "email",
        &[
            ("请联系zhang@example.com获取", "zhang@example.com"),
            ("メールはtaro@example.jpまで", "taro@example.jp"),
            ("'quoted@example.com'", "quoted@example.com"),
        ],
    );
    assert_tp(
        "email",
        &[("mail me: someone@example.com.", "someone@example.com")],
    );
    assert_tp("email", &[("(bob@example.com)", "bob@example.com")]);
    assert_fp(
        "email",
        &[
            "foo@bar",
            "user@localhost",
            "@example.com",
            "name@.com",
            "name@-example.com",
            "version@1.2.3",
            "x@y.c",
            "email me at user at example dot com",
            "name@example-.com",
            "a@b@c.com",
            "retina image logo@2x.png and icon@3x.jpg",
            "sprite@2x.WEBP, bg@1.5x.jpeg, a@3x.gif, b@2x.svg, fav@2x.ico, c@2x.bmp",
        ],
    );
}

#[test]
fn phone() {
    tp_embedded(
        "phone",
        &[
            "+1 (415) 555-2671",
            "+14155552671",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "1-800-555-0199",
            "123-456-7890",
            "811-190-0568",
            "(351) 050-2171",
            "+44 20 7946 0958",
            "+49 30 1234567",
            "+33 1 23 45 67 89",
            "020 7946 0958",
            "+91 98765 43210",
            "+86 138 0013 8000",
            "01 23 45 67 89",
            "07700 900123",
            "1-415-555-2671",
            "08-811 78 75",
            "(0578) 696723",
            "0317-60 26 85",
            "01164960634",
            "030/1234567",
            "0171 1234567",
            // the 00 international prefix, like '+'
            "001-541-872-1106",
            "001 541 872 1106",
            "00420 604 913 909",
            "0044 7072 554917",
            "0033 1 23 45 67 89",
            "(+44) 20 7946 0958",
            // trunk-prefixed, up to 15 digits (AT)
            "(02239) 09960 308",
            "0316 123 456 7890",
            // trunk 8 with an (area code) (RU)
            "8 (529) 170-34-23",
            "8 (8452) 12-34-56",
            "8 (712) 844-8740",
            // a two-digit (area code) and 4-4 or 5-4 digits (BR, MX, AR)
            "(11) 98765-4321",
            "(55) 1234-5678",
            "(79)8893-8811",
            // three groups of three with dashes (ES, CZ)
            "967-278-959",
        ],
    );
    // International numbers: the whole number, never a partial one.
    assert_tp(
        "phone",
        &[
            ("call 001-584-514-8525x38885 now", "001-584-514-8525x38885"),
            ("Reach me on 001-541-872-1106 tomorrow.", "001-541-872-1106"),
            ("Tel: 001 541 872 1106", "001 541 872 1106"),
            ("Tel. 00420 604 913 909", "00420 604 913 909"),
            ("Numéro : 0044 7072 554917", "0044 7072 554917"),
            ("Phone: (02239) 09960 308", "(02239) 09960 308"),
            ("Tel (+44 20 7946 0958)", "+44 20 7946 0958"),
            ("tel(+44) 20 7946 0958", "(+44) 20 7946 0958"),
            ("Tel 0171 1234567 01.02.2024", "0171 1234567"),
            ("Tel: 004915112345678", "004915112345678"),
        ],
    );
    // Extensions are redacted with the number.
    assert_tp(
        "phone",
        &[
            ("call 733-796-1720x522 now", "733-796-1720x522"),
            ("call 875.271.9387 ext. 418 now", "875.271.9387 ext. 418"),
            ("call +1-415-555-2671x99 now", "+1-415-555-2671x99"),
        ],
    );
    // Ten bare digits only next to a phone word.
    assert_tp(
        "phone",
        &[
            ("call me at 7472977692 today", "7472977692"),
            ("Tel: 14155552671", "14155552671"),
            ("my mobile number is (unchanged) 4155552671.", "4155552671"),
            ("Telephone 4155552671", "4155552671"),
            ("Phone: 574 850 767", "574 850 767"),
            ("Telefone: 45 2755-9746", "45 2755-9746"),
            ("call me at 323815609", "323815609"),
            ("whatsapp +-> 0732 66 07 55", "0732 66 07 55"),
            // after a phone word, other countries' bare numbers (CN, IT, IL) and trunk 8
            ("Phone: 18730792440", "18730792440"),
            ("mobile 3500268466", "3500268466"),
            ("Phone: 039093786", "039093786"),
            ("call me at 8 (529) 170-34-23", "8 (529) 170-34-23"),
            ("call 8 800 555-35-35", "8 800 555-35-35"),
        ],
    );
    assert_fp(
        "phone",
        &[
            "call me on 2024-01-15 or 15.01.2024",
            "call me at 10:30:45",
            "574 850 767",
            "the cell count was 12 345 units",
            "call 1234567",
            "API calls: 12 000 000 per day",
            "calls 1.500.000 last month",
            "the text 2024 1234 5678 says",
            "reach 120 000 000 users",
            "call volume 40 500 000",
            "API calls: 1500000000 per month",
            "order 3500268466 shipped",
            "ref 039093786",
            "id 18730792440",
            "id 0014155552671",
            "sizes 8 800 555 35 35",
        ],
    );
    // A trailing unrelated number is not swallowed.
    assert_tp(
        "phone",
        &[("call +44 20 7946 0958 2024 ok", "+44 20 7946 0958")],
    );
    // International numbers without '+' after a phone word: MSISDN-style runs (the country
    // code must fit the length) and a country code in front of groups (the phone word is
    // not part of the finding).
    assert_tp(
        "phone",
        &[
            ("phone: 447911123456", "447911123456"),
            ("tel 14155550134", "14155550134"),
            ("call 4917612345678", "4917612345678"),
            ("Mobile: 8613800138000 (CN)", "8613800138000"),
            ("whatsapp 971501234567", "971501234567"),
            ("phone 44 20 7946 0958", "44 20 7946 0958"),
            ("Tel: 49 151 12345678", "49 151 12345678"),
            ("mobile 33 6 12 34 56 78", "33 6 12 34 56 78"),
            ("whatsapp: 91 98765 43210", "91 98765 43210"),
            ("Phone number: 44 7911 123456", "44 7911 123456"),
            ("TELEPHONE 7 912 345-67-89", "7 912 345-67-89"),
            ("call 1 415 555 2671", "1 415 555 2671"),
            ("tel 44 20 7946 0958 2024 ok", "44 20 7946 0958"),
            ("Tel 353 87 123 4567 x12", "353 87 123 4567 x12"),
        ],
    );
    // A number labelled as one (a phone word right before it, fillers between) is taken at any length of 7-15 digits and whatever its country code (Faker's msisdn is
    // random digits).
    assert_tp(
        "phone",
        &[
            ("phone 1234567890123", "1234567890123"),
            ("Phone: 0864941566144", "0864941566144"),
            ("Call me at 7147412596461.", "7147412596461"),
            ("Please contact me at 08-49 15 27 tomorrow.", "08-49 15 27"),
            ("Phone: 8026.4790", "8026.4790"),
            ("My phone number is 9538-0646.", "9538-0646"),
            ("Please contact me at 8058-3505 tomorrow.", "8058-3505"),
            ("tel 555 1234 x12", "555 1234 x12"),
            ("Tel: 020 7946 0958", "020 7946 0958"),
            ("call me at 555-123-4567", "555-123-4567"),
            ("Phone: +44 20 7946 0958", "+44 20 7946 0958"),
            ("Tel.: 905 09 486", "905 09 486"),
            ("mobile 98 61 48 10", "98 61 48 10"),
            ("Please contact me at 42 08 26 10 tomorrow.", "42 08 26 10"),
            ("Phone: 299 2 945", "299 2 945"),
            ("Phone: (351) 936827521", "(351) 936827521"),
            ("Call me at (351) 917 167 159.", "(351) 917 167 159"),
            ("reach me: (415) 555-2671", "(415) 555-2671"),
            ("Phone: (68) 93864-9270", "(68) 93864-9270"),
            ("call me on 0768332 tonight", "0768332"),
            ("contact: 0224208; name: Anna", "0224208"),
            ("Phone: 314-26-8550-2741", "314-26-8550-2741"),
            ("Tel: 372 6 7628 5130", "372 6 7628 5130"),
            ("call me on 120-19543839 tonight", "120-19543839"),
            ("Phone: 8 (712) 844-8740", "8 (712) 844-8740"),
            ("mobile 8 (033) 848-1042", "8 (033) 848-1042"),
            ("Tel 8 800 555 1234", "8 800 555 1234"),
        ],
    );
    assert_fp(
        "phone",
        &[
            "id 0864941566144 shipped",
            "7147412596461 items",
            "ref 22 797 03 27 applies",
            "the phone bill came to 0864941566144",
            "call stack 08-49 15 27",
            "call stack depth 1234 5678",
            "see note (351) 936827521",
            "(12) 345 678 901",
            "(12) 1990-2000",
            "(3) 1234-5678",
            "(12) 3456-789012",
            "total 967 278 959",
            "part 967-278-959-1",
            "the phone bill was 8026.4790",
            "phone 000-0000",
            "tel 12 3456",
            "Phone: 8026.479012",
            "contact 2024-01-15 1030",
            // context after a number does not count (a stream releases it before that)
            "3613510012 is my number",
        ],
    );
    // A 13-digit run that passes Luhn with a Visa prefix is reported as the card it may be
    // (redacted either way).
    assert_tp("credit_card", &[("call 4915112345678", "4915112345678")]);
    assert_fp(
        "phone",
        &[
            // "call"/"contact"/"dial" count only right before the number
            "call stack depth 1234567890",
            "the call count was 1234567890",
            "contact id 1234567890",
            "dial tone after 4155552671",
            // an amount, a date, too short, not after a phone word
            "tel 7 1234 5678",
            "call 44 000 000 000",
            "call 44 100 000 000",
            "000 000 000",
            "call 12 345 678 901",
            "tel 44 2024-01-15",
            "phone 1 2 3 4 5 6 7 8 9",
            "phone 44 20",
            "id 4915112345678",
            "call 99 123 456 789 0",
            "sms 0 44 20 7946",
        ],
    );
    assert_fp(
        "phone",
        &[
            "in 2023 and 2024",
            "version 1.2.3 and 10.2.3.4",
            "12345678901234567890",
            "on 2024-01-15 at 10:30:45",
            "order 4111111111111112 shipped",
            "+1 2 3 4 5 6 7 8",
            "pi is 3.14159265358",
            "ISBN 978-3-16-148410-0",
            "ip 192.168.100.200",
            "555-1234",
            "5551234567",
            "x+14155552671",
            "415-555-2671-99",
            "t=+1441497364.649s",
            "year +12345-03-04 and +2024-01-15",
            "at +10000-09-09 01:00 or +70000-2-18",
            "on 01.02.2024 and 05/12/2024",
            "ts 1764150000 and 1234567890",
            "v0.12.345",
            "0 12 34 56",
            "4155552671x",
            "order 6298689189 shipped",
            "id 4155552671",
            "born 01.01.1971 05/19",
            "on 01.02.2024 1030 ok",
            "0604 1234",
            "00 1 2 3 4 5 6 7 8",
            "+44) 20 7946 0958",
            "$1.001 234 567",
            "v00.1.2.3",
        ],
    );
}

#[test]
fn phone_trailing_number_trimmed() {
    // 12 + 4 + 2 digits > 15: trimmed back to the phone
    let got = found("tel +44 20 7946 0958 2024 12 end");
    assert_eq!(
        got,
        vec![("phone".to_string(), "+44 20 7946 0958".to_string())]
    );
}

#[test]
fn credit_card() {
    tp_embedded(
        "credit_card",
        &[
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5555 5555 5555 4444",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "4012888888881881",
            "2223 0031 2200 3222",
            "3530111333300000",
            "4222222222222",
            "3507610729105815",
            "676334040174",
            "5664 7150 3755",
            "213190158657744",
            "180001234567899",
            "060416369936",
            // a short last group after groups of four
            "4417 7763 1706 9",
            "3830-7217-1027-27",
            "6251 8788 0345 5033 65",
            "6209 0633 7106 2848 7",
            // Mir, RuPay
            "2200730250843360",
            "2204 5729 3631 1206",
            "2202 1234 5678 9012 347",
            "8112 3456 7890 1239",
            "8220123456789012",
            "6070 1234 5678 9017",
            "5085 1234 5678 9012",
        ],
    );
    assert_tp(
        "credit_card",
        &[
            ("[6209 0633 7106 2848 7]", "6209 0633 7106 2848 7"),
            ("4111 1111 1111 1111 20 ok", "4111 1111 1111 1111"),
        ],
    );
    assert_tp(
        "credit_card",
        &[("card: 4242424242424242.", "4242424242424242")],
    );
    // Dots, and mixed separators in the 4-4-4-4 shape (Luhn still required).
    tp_embedded(
        "credit_card",
        &[
            "4111.1111.1111.1111",
            "3782.822463.10005",
            "4111 1111-1111 1111",
            "4111-1111 1111-1111",
            "5555.5555 5555-4444",
        ],
    );
    assert_tp(
        "credit_card",
        &[
            ("2024 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
            ("4111 1111 1111 1111 2024 ok", "4111 1111 1111 1111"),
        ],
    );
    assert_fp(
        "credit_card",
        &[
            "4111 1111 1111 1112",
            "order 1234567890123456",
            "0000 0000 0000 0000",
            "4111.1111.1111.1112",
            "4111 1111-1111 1112",
            "4111 1111-1111.111",
            "9999999999999995",
            "41111111111111111111111",
            "x4111111111111111",
            "4111111111111111y",
            "ts 1700000000000",
            "4111-1111-1111-1111-2222",
            "id 123456789015",
            "5111 1111 1114",
            "3400 0000 0000 0000",
            "4417 7763 1706 8",
            "4417 776 3170 69",
            "4417 7763-1706 9",
            "3782 822463-10005",
            "2205 7302 5084 3365",
            "8312 3456 7890 1237",
        ],
    );
}

#[test]
fn short_maestro_inside_a_longer_run_is_redacted() {
    // After the 16-digit run fails, its Luhn-valid 12-digit 56… tail is a Maestro number as
    // far as anyone can tell: Jimini errs towards redaction rather than leak a real one
    // that follows a year or a quantity ("1999 6739 7601 4575").
    assert_tp(
        "credit_card",
        &[
            ("1234 5678 9012 3456", "5678 9012 3456"),
            ("1999 6739 7601 4575", "6739 7601 4575"),
        ],
    );
    assert_fp("credit_card", &["1234 5678 9012 3457"]);
}

#[test]
fn non_luhn_order_number_hides_no_phone() {
    // 16 digits failing Luhn: skipped whole, nothing found inside.
    assert_eq!(found("order 1234567890123456 shipped"), vec![]);
    assert_eq!(found("id 4155552671415555 x"), vec![]);
}

#[test]
fn us_ssn() {
    tp_embedded(
        "us_ssn",
        &[
            "123-45-6789",
            "078-05-1120",
            "219-09-9999",
            "536 90 4399",
            "001-01-0001",
        ],
    );
    assert_tp("us_ssn", &[("ssn 123-45-6789 2024", "123-45-6789")]);
    // Nine bare digits or dotted groups after an SSN keyword.
    assert_tp(
        "us_ssn",
        &[
            ("SSN: 748538820", "748538820"),
            ("Social Security Number: 328990359", "328990359"),
            ("SSN: 328.99.0359", "328.99.0359"),
            ("my ssn is 219099999.", "219099999"),
            // "social" right before the number
            ("my social is 813741321.", "813741321"),
            ("Social: 328.99.0359", "328.99.0359"),
            ("social security no. 748538820", "748538820"),
            ("social 123-45-6789", "123-45-6789"),
            ("social security no. 123 45 6789", "123 45 6789"),
        ],
    );
    assert_fp(
        "us_ssn",
        &[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45-67890",
            "123-45-6789-0",
            "123 45-6789",
            "12-345-6789",
            "5123-45-6789",
            "order 748538820",
            "version 328.99.0359",
            "SSN: 666123456",
            "SSN: 900123456",
            "SSN: 1748538820",
            "ssn: 748538820.5",
            "lessn 748538820",
            "social media followers 748538820",
            "antisocial 748538820",
            "social 2024 budget 748538820",
        ],
    );
}

#[test]
fn us_itin() {
    tp_embedded(
        "us_itin",
        &[
            "912-70-1234",
            "900-50-0001",
            "999 88 9999",
            "923-65-4321",
            "987-90-1234",
            "955-94-1234",
        ],
    );
    assert_tp(
        "us_itin",
        &[
            ("ITIN: 912701234", "912701234"),
            ("TIN 912.70.1234", "912.70.1234"),
            ("SSN: 981781234", "981781234"),
            ("taxpayer id 912-70-1234 ok", "912-70-1234"),
        ],
    );
    assert_fp(
        "us_itin",
        &[
            "912-69-1234",
            "912-93-1234",
            "912-89-1234",
            "912-49-1234",
            "912-70-0000",
            "912 70-1234",
            "812-70-1234",
            "order 912701234",
            "version 912.70.1234",
            "9912-70-1234",
            "912-70-12345",
            "ITIN: 912691234",
        ],
    );
    // An ITIN is not an SSN (9XX is not an SSN area).
    assert_fp("us_ssn", &["912-70-1234", "ITIN: 912701234"]);
}

#[test]
fn iban() {
    tp_embedded(
        "iban",
        &[
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91ABNA0417164300",
            "BE68 5390 0754 7034",
            "CH93 0076 2011 6238 5295 7",
            "NO93 8601 1117 947",
            // wrong length for GB (21, not 22) but check digits hold
            "GB97EFGC7017862607145",
            // lowercase in groups, dashed
            "de63 0256 7796 3778 4925 97",
            "NL29-GKTD-0636-0340-47",
            "DE89-3704-0044-0532-0130-00",
        ],
    );
    assert_tp(
        "iban",
        &[
            ("IBAN: de89370400440532013000", "de89370400440532013000"),
            ("Iban de89370400440532013000.", "de89370400440532013000"),
        ],
    );
    assert_tp(
        "iban",
        &[("BE68 5390 0754 7034 2024", "BE68 5390 0754 7034")],
    );
    // Glued to the word IBAN or to a lowercase word; no-break spaces between groups.
    assert_tp(
        "iban",
        &[
            ("IBANDE89370400440532013000", "DE89370400440532013000"),
            ("ibanDE89370400440532013000.", "DE89370400440532013000"),
            ("IBANde89370400440532013000", "de89370400440532013000"),
            ("KontoDE89370400440532013000", "DE89370400440532013000"),
            ("IBAN:GB82WEST12345698765432", "GB82WEST12345698765432"),
            (
                "IBAN DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00 ok",
                "DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}00",
            ),
            (
                "GB82\u{a0}WEST\u{a0}1234\u{a0}5698\u{a0}7654\u{a0}32",
                "GB82\u{a0}WEST\u{a0}1234\u{a0}5698\u{a0}7654\u{a0}32",
            ),
            (
                "BE68\u{a0}5390\u{a0}0754\u{a0}7034 2024",
                "BE68\u{a0}5390\u{a0}0754\u{a0}7034",
            ),
        ],
    );
    assert_fp(
        "iban",
        &[
            "DE89 3704 0044 0532 0130 01",
            "XX89370400440532013000",
            "DE8937040044053201300",
            "GB82 WEST 1234 5698 7654",
            "AB12 CDEF GHIJ KLMN",
            "US12345678901234",
            "de89370400440532013000",
            "XDE89370400440532013000",
            "id de89370400440532013000",
            "de63 0256 7796 3778 4925 98",
            "NL29-GKTD-0636-0340-48",
            "KontoDE89370400440532013001",
            "IBANXX89370400440532013000",
            "KONTODE89370400440532013000",
            "kontode89370400440532013000",
            "DE89\u{a0}3704\u{a0}0044\u{a0}0532\u{a0}0130\u{a0}01",
            "camelCaseDE12xyzabcdefghijkl",
        ],
    );
}

#[test]
fn ipv4() {
    tp_embedded(
        "ipv4",
        &[
            "192.168.1.1",
            "10.0.0.255",
            "8.8.8.8",
            "255.255.255.255",
            "0.0.0.0",
            "172.16.254.1",
        ],
    );
    assert_tp(
        "ipv4",
        &[
            ("host 1.2.3.4:8080", "1.2.3.4"),
            ("(127.0.0.1)", "127.0.0.1"),
            ("ip=10.1.2.3;", "10.1.2.3"),
            ("at 10.0.0.1.", "10.0.0.1"),
        ],
    );
    assert_fp(
        "ipv4",
        &[
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3",
            "version 10.2.3.4.1",
            "01.02.03.04",
            "192.168.1.300",
            "1.2.3.4a",
            "v1.2.3.4",
        ],
    );
}

#[test]
fn ipv6() {
    tp_embedded(
        "ipv6",
        &[
            "2001:db8::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "fe80::1ff:fe23:4567:890a",
            "::1",
            "::ffff:192.168.1.1",
            "2001:db8:0:0:1:0:0:1",
            "FE80::0202:B3FF:FE1E:8329",
        ],
    );
    assert_tp(
        "ipv6",
        &[
            ("[2001:db8::8a2e:370:7334]:443", "2001:db8::8a2e:370:7334"),
            ("ip:2001:db8::1", "2001:db8::1"),
            (
                "IPv6:2001:db8:85a3:0:0:8a2e:370:7334",
                "2001:db8:85a3:0:0:8a2e:370:7334",
            ),
            ("addr:fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
            ("ip: 2001:db8::1", "2001:db8::1"),
            // a zone id belongs to the address
            ("ping fe80::1%eth0 now", "fe80::1%eth0"),
            (
                "fe80::1ff:fe23:4567:890a%en0.",
                "fe80::1ff:fe23:4567:890a%en0",
            ),
            ("http://[fe80::1%25eth0]:8080/", "fe80::1%25eth0"),
            ("ff02::1%3", "ff02::1%3"),
            ("at fe80::1% load", "fe80::1"),
        ],
    );
    assert_fp(
        "ipv6",
        &[
            "12:30:45",
            "std::vector<int>",
            "dead::beef",
            "Foo::Bar::baz",
            "a:b:c:d",
            "00:1A:2B:3C:4D:5E",
            "1::2::3",
            "::",
            "2001:db8:::1",
            "1:2:3:4:5:6:7:8:9",
            "id:1:2:3:4:5:6:7:8:9",
            "x:y:1:2:3:4:5:6:7:8",
            "mac 00:1A:2B:3C:4D:5E:6F:70:81",
            "dead::beef%eth0",
            "fe80::1%eth0toolonginterfacename",
        ],
    );
}

#[test]
fn us_bank_routing() {
    assert_tp(
        "us_bank_routing",
        &[
            ("routing number 021000021", "021000021"),
            ("ABA: 011000015", "011000015"),
            ("RTN 121000358 for wires", "121000358"),
            ("Routing #: 026009593", "026009593"),
            ("routing_number=322271627", "322271627"),
            ("bank transit no. 111000025", "111000025"),
        ],
    );
    assert_fp(
        "us_bank_routing",
        &[
            "021000021",
            "order 021000021",
            "routing number 021000022",
            "database 021000021",
            "routing number 0210000210",
            "routing number: see below. Lorem ipsum dolor sit amet 021000021",
            "routing 000000000",
            "abacus 021000021",
        ],
    );
}

#[test]
fn crypto_wallet() {
    tp_embedded(
        "crypto_wallet",
        &[
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            "0x52908400098527886E0F7030069857D2E4169EE7",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xde709f2102306220921060314715629080e2fb77",
            // Litecoin (L, M, ltc1), Dogecoin (D), Bitcoin testnet (2, tb1)
            "LVuDpNCSSj6pQ7t9Pv6d6sUkLKoqDEVUnJ",
            "MJaRnao1s62a2zAKSkmG582KbLKianqb7v",
            "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9",
            "ltc1p587wgd3c2nlc3r8lfw88sawkqrpxsgusgy4geaumxlgtzy2gkraq5lfvr3",
            "DFpN6QqFfUm3gKNaxN6tNcab1FArL9cZLE",
            "DDtVZs8ytb9yDScaQQdJ3Nrzhwu3xfieJm",
            "2N3vVYSK5XRgVSGWy21PnsRmBUywSQNdCsf",
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        ],
    );
    assert_fp(
        "crypto_wallet",
        &[
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "0x1234abcd",
            "1111111111111111111111111111",
            "0x52908400098527886E0F7030069857D2E4169EE",
            "31415926535897932384626433832795",
            // one character off: checksums fail
            "LVuDpNCSSj6pQ7t9Pv6d6sUkLKoqDEVUnK",
            "MJaRnao1s62a2zAKSkmG582KbLKianqb7w",
            "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n8",
            "DFpN6QqFfUm3gKNaxN6tNcab1FArL9cZLF",
            "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8s",
            // testnet P2PKH (m/n) is not looked for (a base58 run from every m/n word costs
            // scan throughput; testnet coins have no value)
            "mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r",
            "2N3vVYSK5XRgVSGWy21PnsRmBUywSQNdCsg",
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsy",
            // a valid hash160 under a version byte no wallet here uses (Dogecoin P2SH,
            // Litecoin testnet): not reported
            "A37YDYSwz3438rFtm1SLVcQHyD7JeueC9H",
            "QXHFfTBKYXjaaTH1e7Rox8CcdNPGHVhM59",
            // a wrong hrp with a valid checksum
            "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
            // long identifiers and words with wallet first letters
            "MaximumLengthOfConfigurationKeys",
            "DefaultNetworkInterfaceProvider",
            "mySuperLongVariableNameForTesting",
        ],
    );
}

fn rand_alnum(seed: u64, n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            A[(x % A.len() as u64) as usize] as char
        })
        .collect()
}

#[test]
fn api_keys() {
    let openai_legacy = format!("sk-{}T3BlbkFJ{}", rand_alnum(1, 20), rand_alnum(2, 20));
    let openai_proj = format!("sk-proj-{}", rand_alnum(3, 120));
    let openai_svc = format!("sk-svcacct-{}", rand_alnum(4, 60));
    tp_embedded(
        "api_key.openai",
        &[&openai_legacy, &openai_proj, &openai_svc],
    );
    let anthropic = format!("sk-ant-api03-{}-{}AA", rand_alnum(5, 40), rand_alnum(6, 50));
    tp_embedded("api_key.anthropic", &[&anthropic]);
    tp_embedded(
        "api_key.aws_access_key",
        &["AKIAIOSFODNN7EXAMPLE", "ASIAY34FZKBOKMUTVV7A"],
    );
    let gh = format!("ghp_{}", rand_alnum(7, 36));
    let gho = format!("gho_{}", rand_alnum(8, 36));
    let pat = format!("github_pat_11{}_{}", rand_alnum(9, 20), rand_alnum(10, 59));
    tp_embedded("api_key.github", &[&gh, &gho, &pat]);
    tp_embedded(
        "api_key.slack",
        &[
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-1234-5678-9012-abcdef0123456789",
        ],
    );
    let oauth = format!("GOCSPX-{}", rand_alnum(18, 28));
    tp_embedded(
        "api_key.google",
        &["AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", &oauth],
    );
    let stripe = format!("sk_live_{}", rand_alnum(11, 24));
    let stripe_r = format!("rk_live_{}", rand_alnum(12, 24));
    let whsec = format!("whsec_{}", rand_alnum(17, 32));
    tp_embedded(
        "api_key.stripe",
        &[
            &stripe,
            &stripe_r,
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            &whsec,
        ],
    );
    let webhook = format!(
        "https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H/{}",
        rand_alnum(18, 24)
    );
    let workflow = format!(
        "https://hooks.slack.com/workflows/T0A1B2C3D/A04J5K6L7M8/123456789012345678/{}",
        rand_alnum(19, 24)
    );
    tp_embedded("api_key.slack", &[&webhook, &workflow]);
    assert_tp(
        "api_key.slack",
        &[(
            format!("curl -X POST {webhook} -d @payload.json").as_str(),
            webhook.as_str(),
        )],
    );

    for (label, texts) in [
        (
            "api_key.openai",
            vec![
                "pip install sk-learn".to_string(),
                "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
                "task-1234567890abcdefghijklmnop".to_string(),
                "sk-your-api-key-goes-here-now".to_string(),
                anthropic.clone(),
            ],
        ),
        (
            "api_key.aws_access_key",
            vec![
                "AKIA1234".to_string(),
                "AKIAAAAAAAAAAAAAAAAA".to_string(),
                "XAKIAIOSFODNN7EXAMPLE".to_string(),
                "AKIAIOSFODNN7EXAMPLE1".to_string(),
            ],
        ),
        (
            "api_key.github",
            vec![
                "ghp_short".to_string(),
                format!("ghp_{}", "x".repeat(36)),
                format!("ghx_{}", rand_alnum(13, 36)),
            ],
        ),
        (
            "api_key.slack",
            vec![
                "xoxb-test".to_string(),
                "xoxo-1234567890-abcdef".to_string(),
            ],
        ),
        (
            "api_key.google",
            vec![
                format!("AIza{}", rand_alnum(14, 34)),
                format!("AIza{}", rand_alnum(15, 40)),
                format!("GOCSPX-{}", rand_alnum(19, 27)),
                format!("GOCSPX-{}", rand_alnum(20, 30)),
                "GOCSPX-xxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
            ],
        ),
        (
            "api_key.slack",
            vec![
                // documentation placeholders and bare endpoints
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
                    .to_string(),
                "https://hooks.slack.com/services/".to_string(),
                "https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H".to_string(),
                "https://api.slack.com/messaging/webhooks".to_string(),
            ],
        ),
        (
            "api_key.stripe",
            vec![
                // Publishable keys are public by design (they ship in every checkout page):
                // not secrets, not redacted.
                format!("pk_live_{}", rand_alnum(16, 24)),
                format!("pk_test_{}", rand_alnum(20, 24)),
                "sk_live_short".to_string(),
                "whsec_short".to_string(),
                format!("whsec_{}", "x".repeat(32)),
            ],
        ),
    ] {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_fp(label, &refs);
    }
}

#[test]
fn aws_secret_key_needs_context() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for text in [
        format!("aws_secret_access_key = {secret}"),
        format!("AWS_SECRET_ACCESS_KEY={secret}"),
        format!("export MY_AWS_SECRET_ACCESS_KEY=\"{secret}\""),
        format!("{{\"SecretAccessKey\": \"{secret}\"}}"),
        format!("the aws secret key is {secret}"),
    ] {
        assert_tp("api_key.aws_secret_key", &[(text.as_str(), secret)]);
    }
    assert_fp(
        "api_key.aws_secret_key",
        &[
            secret,
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYX",
            "aws_secret_access_key = <your secret key here>",
            "aws_secret_access_key = abcdefghijklmnopqrstuvwxyzabcdefghijklmn",
        ],
    );
}

const PEM_BODY: &str = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yZ6ZK7p4N+1bG5m5Jx3bZbq3zYp3k9qS3iU8L1oO2n0W8h6mJ7b=";

#[test]
fn private_key_blocks() {
    for kind in [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ] {
        let block = format!("-----BEGIN {kind}-----\n{PEM_BODY}\n-----END {kind}-----");
        let text = format!("here is my key:\n{block}\nthanks");
        assert_tp("private_key", &[(text.as_str(), block.as_str())]);
    }
    let pgp = format!(
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PEM_BODY}\n-----END PGP PRIVATE KEY BLOCK-----"
    );
    assert_tp("private_key", &[(pgp.as_str(), pgp.as_str())]);
    // JSON-escaped newlines
    let esc = format!(
        "-----BEGIN RSA PRIVATE KEY-----\\n{}\\n-----END RSA PRIVATE KEY-----",
        PEM_BODY.replace('\n', "\\n")
    );
    assert_tp("private_key", &[(esc.as_str(), esc.as_str())]);
    // Truncated: header plus the base64 lines that follow.
    let truncated = format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}");
    let text = format!("{truncated}\nand then some prose.");
    assert_tp("private_key", &[(text.as_str(), truncated.as_str())]);
    assert_fp(
        "private_key",
        &[
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIBIjANBg\n-----END CERTIFICATE-----",
            "BEGIN RSA PRIVATE KEY",
        ],
    );
}

#[test]
fn jwt() {
    tp_embedded(
        "jwt",
        &[
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
        ],
    );
    assert_fp(
        "jwt",
        &[
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "eyJhbGciOiJIUzI1NiJ9",
            "eyJhbGciOiJIUzI1NiJ9.e.x",
            "eyJhbGci!!.eyJzdWIiOiIxIn0.abc",
            "eyJub3Rqc29u.eyJzdWIiOiIxIn0.abc",
        ],
    );
}

#[test]
fn url_credentials() {
    assert_tp(
        "url_credentials",
        &[
            (
                "db: postgres://admin:s3cr3t@db.internal:5432/app",
                "postgres://admin:s3cr3t@db.internal",
            ),
            (
                "see https://user:pass@example.com/path.",
                "https://user:pass@example.com",
            ),
            (
                "redis://:hunter2@cache.local",
                "redis://:hunter2@cache.local",
            ),
            (
                "mongodb+srv://app:p%40ss@cluster0.example.net/db",
                "mongodb+srv://app:p%40ss@cluster0.example.net",
            ),
            (
                "ftp://me:p@ss@files.example.org",
                "ftp://me:p@ss@files.example.org",
            ),
            (
                "amqp://guest:guest@[2001:db8::1]:5672",
                "amqp://guest:guest@[2001:db8::1]",
            ),
        ],
    );
    assert_fp(
        "url_credentials",
        &[
            "https://example.com",
            "https://user@example.com/x",
            "mailto:a@b.com",
            "https://example.com:8080/path",
            "http://:@host",
        ],
    );
}

#[test]
fn mixed_text_priorities() {
    let text = "Mail bob@example.com, call (415) 555-2671, card 4111 1111 1111 1111, \
                ssn 123-45-6789, ip 10.0.0.1 and 2001:db8::1, key AKIAIOSFODNN7EXAMPLE, \
                url https://u:p4ss@example.com. 漢字 é 🎉";
    let labels: Vec<String> = found(text).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        vec![
            "email",
            "phone",
            "credit_card",
            "us_ssn",
            "ipv4",
            "ipv6",
            "api_key.aws_access_key",
            "url_credentials"
        ]
    );
}

#[test]
fn find_from_uses_context_only() {
    let m = builtin();
    let text = "aaa bob@example.com 4111 1111 1111 1111";
    let card_at = text.find("4111").unwrap();
    let all = m.find(text);
    assert_eq!(all.len(), 2);
    // from inside the email: the email starts before `from`, only the card is reported
    let later = m.find_from(text, 6);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].start, card_at);
    // from inside a rejected 16-digit run: nothing is found in its tail
    let t2 = "x 1234567890123456 y";
    assert!(m.find_from(t2, 8).is_empty());
    // from past the end / inside a multi-byte char does not panic
    assert!(m.find_from("é", 1).is_empty());
    assert!(m.find_from("abc", 99).is_empty());
}

#[test]
fn custom_specs_and_errors() {
    let specs = vec![
        PatternSpec {
            label: "ticket".into(),
            kind: PatternKind::Regex(r"\bTCK-\d{6}\b".into()),
        },
        PatternSpec {
            label: "words".into(),
            kind: PatternKind::Keywords(vec![
                "Ignore previous instructions".into(),
                "jailbreak".into(),
            ]),
        },
        PatternSpec::builtin("email"),
    ];
    let m = Matcher::new(&specs).unwrap();
    let text =
        "TCK-123456 then IGNORE  previous\ninstructions, jailbreaking no, jailbreak yes, a@b.io";
    let got: Vec<(usize, &str)> = m
        .find(text)
        .iter()
        .map(|f| (f.pattern, &text[f.start..f.end]))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "TCK-123456"),
            (1, "IGNORE  previous\ninstructions"),
            (1, "jailbreak"),
            (2, "a@b.io")
        ]
    );
    // Unicode \d may match 4-byte digits: the bound is in bytes, worst case.
    assert_eq!(m.pattern_max_len(0), Some(4 + 6 * 4));
    // unbounded custom regex: capped
    let m2 = Matcher::new_with_cap(
        &[PatternSpec {
            label: "long".into(),
            kind: PatternKind::Regex(r"x+".into()),
        }],
        100,
    )
    .unwrap();
    assert_eq!(m2.max_match_len(), 100);
    assert_eq!(m2.pattern_bound(0), None);

    let bad = Matcher::new(&[PatternSpec {
        label: "broken".into(),
        kind: PatternKind::Regex("(unclosed".into()),
    }]);
    match bad {
        Err(ScanError::BadRegex { label, message }) => {
            assert_eq!(label, "broken");
            assert!(!message.is_empty());
        }
        other => panic!("expected BadRegex, got {other:?}"),
    }
    assert!(matches!(
        Matcher::new(&[PatternSpec::builtin("emial")]),
        Err(ScanError::UnknownDetector(n)) if n == "emial"
    ));
    assert!(matches!(
        Matcher::new(&[PatternSpec { label: "kw".into(), kind: PatternKind::Keywords(vec![" ".into()]) }]),
        Err(ScanError::EmptyKeywords(l)) if l == "kw"
    ));
    let e = ScanError::BadRegex {
        label: "x".into(),
        message: "y".into(),
    };
    assert_eq!(e.to_string(), "invalid regex for 'x': y");
}

#[test]
fn unicode_boundary_custom_regex_on_non_ascii_text() {
    let specs = vec![PatternSpec {
        label: "cafe".into(),
        kind: PatternKind::Regex(r"\bcafé\b".into()),
    }];
    let m = Matcher::new(&specs).unwrap();
    let text = "un café noir, pas cafés";
    let got: Vec<&str> = m.find(text).iter().map(|f| &text[f.start..f.end]).collect();
    assert_eq!(got, vec!["café"]);
}

#[test]
fn matcher_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Matcher>();
}
