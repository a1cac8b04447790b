//! JSON text primitives shared by the body rewriter (`openai::json`), the audit record encoder
//! and span attributes: the canonical string encoding, a fast scan for the end of a plain string
//! run, and cutting a string at a character boundary.

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Canonical JSON string: `"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t` escaped by name, other control
/// characters (< 0x20) as `\u00xx` (lowercase), everything else (DEL and non-ASCII included) raw.
/// The same bytes as serde_json, but owned here: the audit chain hashes this encoding, so it must
/// not drift with a dependency.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    loop {
        i = plain_run_end(bytes, i);
        let Some(&c) = bytes.get(i) else { break };
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Index of the first byte at or after `from` that ends a plain run inside a JSON string: `"`,
/// `\\` or a control character. Eight bytes per step (SWAR): strings are most of a body.
pub(crate) fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while i + 8 <= b.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // Bytes < 0x20 (exact for ASCII; a byte >= 0x80 never sets its flag), then `"`, `\`.
        let special = (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')));
        if special != 0 {
            // The lowest flagged byte is exact (borrows only run upwards).
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_json_str_matches_serde() {
        let samples = [
            "",
            "plain",
            "q\"\\/\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é😀",
            "a long plain run before the quote at the end of it: \"",
        ];
        for s in samples {
            let mut out = Vec::new();
            push_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn plain_run_end_matches_a_byte_scan() {
        let special = |c: u8| matches!(c, b'"' | b'\\' | 0..=0x1f);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let len = (rng % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Mostly plain text and UTF-8 lead/continuation bytes, some specials.
                    [
                        b'a', 0xc3, 0xa9, 0xff, 0x7f, 0x20, b'"', b'\\', 0x00, 0x1f, 0x21, 0x5b,
                    ][(rng % 12) as usize]
                })
                .collect();
            for from in 0..=len {
                let expected = (from..len).find(|&i| special(bytes[i])).unwrap_or(len);
                assert_eq!(
                    plain_run_end(&bytes, from),
                    expected,
                    "{bytes:?} from {from}"
                );
            }
        }
    }
}
