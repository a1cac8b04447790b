//! `${VAR}` / `${VAR:-default}` interpolation of the raw config text, before YAML parsing, so a
//! value can come from the environment anywhere in the file. `$$` escapes a literal `$`.

/// Expand `${VAR}` and `${VAR:-default}`; a missing variable without default is an error naming
/// the variable and the line. Comment lines (first non-blank character `#`) are copied verbatim,
/// so documentation in the config file may mention `${VAR}`.
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(&interpolate_line(line, n + 1, env)?);
        }
    }
    Ok(out)
}

fn interpolate_line(
    text: &str,
    line: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => {
                out.push_str(&text[literal_start..i]);
                out.push('$');
                i += 2;
                literal_start = i;
            }
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                out.push_str(&text[literal_start..i]);
                let close = text[i + 2..]
                    .find('}')
                    .ok_or_else(|| format!("line {line}: unterminated `${{`"))?;
                let inner = &text[i + 2..i + 2 + close];
                let (name, default) = match inner.find(":-") {
                    Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                    None => (inner, None),
                };
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if !valid {
                    return Err(format!("line {line}: invalid variable name `{name}`"));
                }
                match (env(name), default) {
                    (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                    (_, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Err(format!(
                            "line {line}: environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"
                        ))
                    }
                    (Some(v), None) => out.push_str(&v),
                }
                i += 2 + close + 1;
                literal_start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[literal_start..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOST" => Some("example.org".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        assert_eq!(interpolate("a: ${HOST}", &env).unwrap(), "a: example.org");
        assert_eq!(interpolate("a: ${NOPE:-x y}", &env).unwrap(), "a: x y");
        assert_eq!(interpolate("a: ${EMPTY:-d}", &env).unwrap(), "a: d");
        assert_eq!(interpolate("a: ${EMPTY}", &env).unwrap(), "a: ");
        assert_eq!(
            interpolate("cost: $$5 ${HOST}", &env).unwrap(),
            "cost: $5 example.org"
        );
        assert_eq!(interpolate("plain $ sign", &env).unwrap(), "plain $ sign");
        assert_eq!(
            interpolate("ünï ${HOST} ✓", &env).unwrap(),
            "ünï example.org ✓"
        );
    }

    #[test]
    fn missing_variable_names_line_and_variable() {
        let err = interpolate("a: 1\nb: ${MISSING}\n", &env).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("MISSING"), "{err}");
        assert!(interpolate("a: ${UNCLOSED", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(interpolate("a: ${1BAD}", &env)
            .unwrap_err()
            .contains("invalid variable"));
    }

    #[test]
    fn comment_lines_are_verbatim() {
        let text = "# use ${VAR} here\n  # and ${OTHER}\na: ${HOST} # trailing ${HOST}\n";
        assert_eq!(
            interpolate(text, &env).unwrap(),
            "# use ${VAR} here\n  # and ${OTHER}\na: example.org # trailing example.org\n"
        );
    }
}
