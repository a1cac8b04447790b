//! Checksum and structure validators used by the built-in detectors: Luhn, IBAN mod-97 with a
//! per-country length table, ABA routing checksum, Base58Check (BTC), bech32/bech32m segwit
//! addresses, EIP-55 mixed-case checksums and JWT headers. Pure functions over ASCII bytes.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha3::{Digest, Keccak256};

use super::sha256::double_sha256;

/// Luhn (mod 10) check over ASCII digits; non-digits make it fail.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &b) in digits.iter().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Plausible card issuer (IIN) prefix for the given PAN length.
pub(crate) fn plausible_iin(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| -> u32 {
        d.iter()
            .take(k)
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
    };
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    match d.first() {
        // Maestro's historic 0604 series
        Some(b'0') => p4 == 604 && n >= 12,
        // JCB's 15-digit 1800 / 2131 series
        Some(b'1') => p4 == 1800 && n == 15,
        // Visa
        Some(b'4') => matches!(n, 13 | 16 | 19),
        // Mastercard 51-55, Maestro 50/56-58 (12-19 digits)
        Some(b'5') => {
            ((51..=55).contains(&p2) && n == 16) || (matches!(p2, 50 | 56..=58) && n >= 12)
        }
        // Mastercard 2-series, JCB 2131, Mir 2200-2204 (16-19)
        Some(b'2') => {
            ((2221..=2720).contains(&p4) && n == 16)
                || (p4 == 2131 && n == 15)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&n))
        }
        Some(b'3') => {
            // Amex 34/37 (15), Diners 300-305/36/38/39 (14-19), JCB 35xx (16-19; 3528-3589
            // is assigned, the rest of the 35 range is JCB's and used by test generators)
            (matches!(p2, 34 | 37) && n == 15)
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39))
                    && (14..=19).contains(&n))
                || (p2 == 35 && (16..=19).contains(&n))
        }
        // Discover, UnionPay, Maestro, RuPay, Troy ...: the 6-series is all issuer space.
        Some(b'6') => (16..=19).contains(&n) || (matches!(p2, 63 | 67) && n >= 12),
        // RuPay 81, 82 (RuPay 60, 65 and 508 are in the 6- and 5-series above)
        Some(b'8') => matches!(p2, 81 | 82) && n == 16,
        _ => false,
    }
}

/// US ITIN (IRS Individual Taxpayer Identification Number): `9XX-GG-SSSS` with the group
/// in one of the IRS ranges 50–65, 70–88, 90–92 or 94–99; the serial is not all zeros.
pub(crate) fn itin_parts_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let [b'9', a1, a2] = *area else {
        return false;
    };
    let [g1, g2] = *group else {
        return false;
    };
    let digits = [a1, a2, g1, g2];
    if !digits.iter().chain(serial).all(u8::is_ascii_digit) || serial.len() != 4 {
        return false;
    }
    let g = (g1 - b'0') * 10 + (g2 - b'0');
    matches!(g, 50..=65 | 70..=88 | 90..=92 | 94..=99) && !serial.iter().all(|&b| b == b'0')
}

/// SSN area/group/serial validity (SSA rules; 9xx is ITIN space, 666 never issued).
pub(crate) fn ssn_parts_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let all = |s: &[u8], c: u8| s.iter().all(|&b| b == c);
    let invalid = all(area, b'0')
        || area == b"666"
        || area.first() == Some(&b'9')
        || all(group, b'0')
        || all(serial, b'0');
    !invalid
}

/// Whether `cc` (1-3 ASCII digits, no '+') is an assigned geographic E.164 country code of
/// the ITU list: 1, 7, the 2-digit codes and the 3-digit ranges. Codes are prefix-free.
pub(crate) fn country_code(cc: &[u8]) -> bool {
    if cc.is_empty() || cc.len() > 3 || !cc.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let n = cc
        .iter()
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'));
    match cc.len() {
        1 => matches!(n, 1 | 7),
        2 => matches!(
            n,
            20 | 27
                | 30..=34
                | 36
                | 39..=41
                | 43..=49
                | 51..=58
                | 60..=66
                | 81
                | 82
                | 84
                | 86
                | 90..=95
                | 98
        ),
        _ => matches!(
            n,
            211..=213
                | 216
                | 218
                | 220..=258
                | 260..=269
                | 290
                | 291
                | 297..=299
                | 350..=359
                | 370..=383
                | 385..=387
                | 389
                | 420
                | 421
                | 423
                | 500..=509
                | 590..=599
                | 670
                | 672..=683
                | 685..=692
                | 850
                | 852
                | 853
                | 855
                | 856
                | 880
                | 886
                | 960..=968
                | 970..=977
                | 992..=996
                | 998
        ),
    }
}

/// A number written without '+' whose digits start with a country code: the shortest code
/// that `digits` starts with (codes are prefix-free), when the whole length fits it: 11 digits
/// for NANP (1) and Russia/Kazakhstan (7), 9 to 15 (E.164) for the rest.
pub(crate) fn msisdn_plausible(digits: &[u8]) -> bool {
    let Some(k) = (1..=3).find(|&k| digits.len() > k && country_code(&digits[..k])) else {
        return false;
    };
    match k {
        1 => digits.len() == 11,
        _ => (9..=15).contains(&digits.len()),
    }
}

/// IBAN total length per country (SWIFT IBAN registry). `None` = unknown country.
pub(crate) fn iban_length(country: &[u8]) -> Option<usize> {
    let len = match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BI" => 27,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DJ" => 27,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FK" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"LY" => 25,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MN" => 20,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NI" => 28,
        b"NL" => 18,
        b"NO" => 15,
        b"OM" => 23,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"RU" => 33,
        b"SA" => 24,
        b"SC" => 31,
        b"SD" => 18,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"SO" => 23,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        b"YE" => 30,
        _ => return None,
    };
    Some(len)
}

/// ISO 13616 mod-97 check on a compact (space-free) uppercase IBAN.
pub(crate) fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(b - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    rem == 1
}

/// Full IBAN check: known country, exact length, digits at 2..4, mod-97 == 1.
pub(crate) fn iban_valid(iban: &[u8]) -> bool {
    iban.len() >= 5 && iban_length(&iban[..2]) == Some(iban.len()) && iban_checksummed(iban)
}

/// An account number in IBAN form whose length is off for its country (a typo, a generator
/// that gets a BBAN format wrong) but whose mod-97 check digits still hold: known country,
/// 15-34 characters, digits at 2..4, mod-97 == 1. Checksum-valid is the evidence that it is
/// an account number; the detector redacts it rather than leak it on a length technicality.
pub(crate) fn iban_checksummed(iban: &[u8]) -> bool {
    (15..=34).contains(&iban.len())
        && iban_length(&iban[..2]).is_some()
        && iban[2..4].iter().all(u8::is_ascii_digit)
        && iban_mod97(iban)
}

/// ABA routing number: valid Federal Reserve prefix and 3-7-1 weighted checksum.
pub(crate) fn aba_valid(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) || d.iter().all(|&b| b == b'0') {
        return false;
    }
    let v: Vec<u32> = d.iter().map(|&b| u32::from(b - b'0')).collect();
    let prefix = v[0] * 10 + v[1];
    let prefix_ok = matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80);
    let sum = 3 * (v[0] + v[3] + v[6]) + 7 * (v[1] + v[4] + v[7]) + (v[2] + v[5] + v[8]);
    prefix_ok && sum.is_multiple_of(10)
}

const B58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn b58_value(c: u8) -> Option<u32> {
    B58_ALPHABET
        .iter()
        .position(|&a| a == c)
        .and_then(|p| u32::try_from(p).ok())
}

/// Base58 decode (big-endian); leading '1's become leading zero bytes. Bounded to 64 bytes.
pub(crate) fn base58_decode(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() > 90 {
        return None;
    }
    let zeros = s.iter().take_while(|&&c| c == b'1').count();
    // Little-endian base-256 accumulator.
    let mut acc: Vec<u8> = Vec::with_capacity(s.len());
    for &c in &s[zeros..] {
        let mut carry = b58_value(c)?;
        for byte in acc.iter_mut() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            acc.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(acc.iter().rev());
    Some(out)
}

/// Base58Check BTC mainnet address: 25 bytes, version 0x00 (P2PKH) or 0x05 (P2SH),
/// checksum = first 4 bytes of SHA-256(SHA-256(version ‖ hash160)).
#[cfg(test)]
pub(crate) fn btc_base58check(s: &[u8]) -> bool {
    base58check_address(s, &[0x00, 0x05])
}

/// Address version bytes of the Base58Check wallets the `crypto_wallet` detector knows:
/// Bitcoin 0x00 (`1…`) and 0x05 (`3…`, also Litecoin's legacy P2SH), Bitcoin testnet P2SH
/// 0xc4 (`2…`), Litecoin 0x30 (`L…`) and 0x32 (`M…`), Dogecoin 0x1e (`D…`).
pub(crate) const WALLET_VERSIONS: [u8; 6] = [0x00, 0x05, 0xc4, 0x30, 0x32, 0x1e];

/// Base58Check address: 25 bytes, a version byte from `versions`, checksum = first 4 bytes
/// of SHA-256(SHA-256(version ‖ hash160)).
pub(crate) fn base58check_address(s: &[u8], versions: &[u8]) -> bool {
    let Some(raw) = base58_decode(s) else {
        return false;
    };
    if raw.len() != 25 || !versions.contains(&raw[0]) {
        return false;
    }
    let sum = double_sha256(&raw[..21]);
    sum[..4] == raw[21..]
}

const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32_CONST: u32 = 1;
const BECH32M_CONST: u32 = 0x2bc8_30a3;

pub(crate) fn bech32_polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// Which checksum variant a bech32 string carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bech32Variant {
    Bech32,
    Bech32m,
}

/// Decode a bech32/bech32m string (BIP-173/BIP-350): returns (lowercase hrp, 5-bit data
/// without checksum, variant). Mixed case, bad characters or a bad checksum give None.
pub(crate) fn bech32_decode(s: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Bech32Variant)> {
    if s.len() < 8 || s.len() > 90 {
        return None;
    }
    let has_lower = s.iter().any(u8::is_ascii_lowercase);
    let has_upper = s.iter().any(u8::is_ascii_uppercase);
    if has_lower && has_upper || s.iter().any(|&c| !(33..=126).contains(&c)) {
        return None;
    }
    let lower: Vec<u8> = s.iter().map(u8::to_ascii_lowercase).collect();
    let sep = lower.iter().rposition(|&c| c == b'1')?;
    if sep == 0 || sep + 7 > lower.len() {
        return None;
    }
    let hrp = &lower[..sep];
    let mut data = Vec::with_capacity(lower.len() - sep - 1);
    for &c in &lower[sep + 1..] {
        let v = BECH32_CHARSET.iter().position(|&x| x == c)?;
        data.push(u8::try_from(v).ok()?);
    }
    let expanded = hrp
        .iter()
        .map(|&c| c >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.iter().map(|&c| c & 31))
        .chain(data.iter().copied());
    let variant = match bech32_polymod(expanded) {
        BECH32_CONST => Bech32Variant::Bech32,
        BECH32M_CONST => Bech32Variant::Bech32m,
        _ => return None,
    };
    data.truncate(data.len() - 6);
    Some((hrp.to_vec(), data, variant))
}

fn convert_bits_5_to_8(data: &[u8]) -> Option<Vec<u8>> {
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut out = Vec::with_capacity(data.len() * 5 / 8);
    for &v in data {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // Leftover bits must be fewer than 5 and zero (no non-zero padding).
    if bits >= 5 || (acc << (8 - bits)) & 0xff != 0 {
        return None;
    }
    Some(out)
}

/// Segwit address (BIP-173 + BIP-350) for the given human-readable parts.
pub(crate) fn segwit_address_valid(s: &[u8], hrps: &[&[u8]]) -> bool {
    let Some((hrp, data, variant)) = bech32_decode(s) else {
        return false;
    };
    if !hrps.contains(&hrp.as_slice()) || data.is_empty() {
        return false;
    }
    let version = data[0];
    let Some(program) = convert_bits_5_to_8(&data[1..]) else {
        return false;
    };
    match version {
        0 => variant == Bech32Variant::Bech32 && matches!(program.len(), 20 | 32),
        1..=16 => variant == Bech32Variant::Bech32m && (2..=40).contains(&program.len()),
        _ => false,
    }
}

/// Ethereum address body (40 hex digits, no 0x): all-lower / all-upper accepted,
/// mixed case must satisfy the EIP-55 Keccak-256 checksum.
pub(crate) fn eth_address_valid(hex40: &[u8]) -> bool {
    if hex40.len() != 40 || !hex40.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let has_lower = hex40.iter().any(u8::is_ascii_lowercase);
    let has_upper = hex40.iter().any(u8::is_ascii_uppercase);
    if !(has_lower && has_upper) {
        return true;
    }
    let lower: Vec<u8> = hex40.iter().map(u8::to_ascii_lowercase).collect();
    let hash = Keccak256::digest(&lower);
    hex40.iter().enumerate().all(|(i, &c)| {
        if !c.is_ascii_alphabetic() {
            return true;
        }
        let byte = hash[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
        (nibble >= 8) == c.is_ascii_uppercase()
    })
}

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64url (padding optional) decode.
pub(crate) fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    B64URL.decode(s).ok()
}

/// JWT header segment: base64url of a JSON object carrying a string "alg".
pub(crate) fn jwt_header_valid(seg: &[u8]) -> bool {
    let Some(raw) = b64url_decode(seg) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(map)) => map.get("alg").is_some_and(|v| v.is_string()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_vectors() {
        for ok in [
            "4111111111111111",
            "4012888888881881",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "79927398713",
            "0",
        ] {
            assert!(luhn(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "4111111111111112",
            "79927398710",
            "1234567812345678",
            "",
            "41111x1111111111",
        ] {
            assert!(!luhn(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn iin_table() {
        for ok in [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "36227206271667",
            "3530111333300000",
            "6200000000000005",
        ] {
            assert!(plausible_iin(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "1234567812345670",
            "9111111111111111",
            "7111111111111111",
            "2000000000000000",
            "341111111111111111",
            "4111111111111",
        ] {
            // the last one is 13 digits starting with 4: allowed length, so check the others only
            if bad == "4111111111111" {
                assert!(plausible_iin(bad.as_bytes()));
                continue;
            }
            assert!(!plausible_iin(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn iban_vectors() {
        for ok in [
            "DE89370400440532013000",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "CH9300762011623852957",
            "NO9386011117947",
            "ES9121000418450200051332",
            "IT60X0542811101000000123456",
            "PL61109010140000071219812874",
            "MT84MALT011000012345MTLCAST001S",
        ] {
            assert!(iban_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "DE89370400440532013001", // checksum
            "DE8937040044053201300",  // length
            "GB82WEST1234569876543",  // length
            "XX89370400440532013000", // unknown country
            "DE00370400440532013000", // checksum
            "DEAB370400440532013000", // check digits not digits
        ] {
            assert!(!iban_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn aba_vectors() {
        for ok in [
            "021000021",
            "011000015",
            "121000358",
            "026009593",
            "322271627",
            "111000025",
        ] {
            assert!(aba_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "021000022",
            "123456789",
            "000000000",
            "991000021",
            "02100002",
            "5210000211",
        ] {
            assert!(!aba_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn base58check_real_addresses() {
        for ok in [
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            "1111111111111111111114oLvT2",
            "1CounterpartyXXXXXXXXXXXXXXXUWLpVr",
        ] {
            assert!(btc_base58check(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb",
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLz",
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7Divf0a", // '0' is not base58
            "11111111111111111111111111111111",
        ] {
            assert!(!btc_base58check(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn bech32_bip173_checksums() {
        for ok in [
            "A12UEL5L",
            "a12uel5l",
            "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
            "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
            "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
            "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
            "?1ezyfcl",
        ] {
            let got = bech32_decode(ok.as_bytes());
            assert_eq!(got.map(|g| g.2), Some(Bech32Variant::Bech32), "{ok}");
        }
        for bad in [
            "pzry9x0s0muk",
            "1pzry9x0s0muk",
            "x1b4n0q5v",
            "li1dgmt3",
            "A1G7SGD8",
            "10a06t8",
            "1qzzfhee",
            "a12UEL5L",
        ] {
            assert!(bech32_decode(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn segwit_addresses_bip173_bip350() {
        let hrps: &[&[u8]] = &[b"bc", b"tb"];
        for ok in [
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
            "BC1SW50QGDZ25J",
            "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs",
            "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        ] {
            assert!(segwit_address_valid(ok.as_bytes(), hrps), "{ok}");
        }
        for bad in [
            // BIP-350 invalid: wrong hrp, wrong variant for version, bad padding ...
            "tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh",
            // v1 with plain bech32 (valid under BIP-173, invalid since BIP-350)
            "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T5",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4x",
        ] {
            assert!(!segwit_address_valid(bad.as_bytes(), hrps), "{bad}");
        }
    }

    #[test]
    fn eip55() {
        for ok in [
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "fB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "dbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "D1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
            "52908400098527886e0f7030069857d2e4169ee7",
            "DE709F2102306220921060314715629080E2FB77",
        ] {
            assert!(eth_address_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
            "fb6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
        ] {
            assert!(!eth_address_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn jwt_headers() {
        assert!(jwt_header_valid(b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"));
        assert!(jwt_header_valid(b"eyJhbGciOiJub25lIn0"));
        assert!(!jwt_header_valid(b"eyJ0eXAiOiJKV1QifQ")); // {"typ":"JWT"}: no alg
        assert!(!jwt_header_valid(b"eyJhbGciOjF9")); // alg not a string
        assert!(!jwt_header_valid(b"eyJ!!!"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn_parts_valid(b"123", b"45", b"6789"));
        assert!(!ssn_parts_valid(b"000", b"45", b"6789"));
        assert!(!ssn_parts_valid(b"666", b"45", b"6789"));
        assert!(!ssn_parts_valid(b"900", b"45", b"6789"));
        assert!(!ssn_parts_valid(b"123", b"00", b"6789"));
        assert!(!ssn_parts_valid(b"123", b"45", b"0000"));
    }
}
