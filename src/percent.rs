//! `%XX` decoding (RFC 3986), shared by endpoint classification (lenient: a path is classified
//! whatever it holds) and the `OTEL_EXPORTER_OTLP_HEADERS` parser (strict: a bad escape is a
//! configuration error).

/// The bytes of `s` with every valid `%XX` escape decoded, and whether every `%` began one
/// (an invalid escape is kept as it is).
pub(crate) fn decode(s: &str) -> (Vec<u8>, bool) {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut all_valid = true;
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 0xFF.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                all_valid &= c != b'%';
                out.push(c);
                i += 1;
            }
        }
    }
    (out, all_valid)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_valid_escapes_and_keeps_the_rest() {
        assert_eq!(decode("a%2Fb%2fc"), (b"a/b/c".to_vec(), true));
        assert_eq!(
            decode("s%3Dcr%C3%A9t"),
            ("s=crét".as_bytes().to_vec(), true)
        );
        assert_eq!(decode("%zz%4"), (b"%zz%4".to_vec(), false));
        assert_eq!(decode("%+1"), (b"%+1".to_vec(), false));
        assert_eq!(decode("%FF"), (vec![0xFF], true));
        assert_eq!(decode(""), (Vec::new(), true));
    }
}
