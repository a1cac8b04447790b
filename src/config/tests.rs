use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

const MINIMAL: &str = "upstreams:\n  - name: a\n    base_url: http://127.0.0.1:9\n";

#[test]
fn shipped_config_parses_and_names_the_embedded_mock() {
    let cfg = Config::parse_with_env(EMBEDDED_CONFIG, "conf/jimini.yaml", &no_env).unwrap();
    assert_eq!(cfg.listen, "127.0.0.1:8080");
    assert!(cfg.runs_embedded_mock());
    assert_eq!(cfg.upstreams[0].base_url, "http://127.0.0.1:18080");
}

#[test]
fn env_overrides_apply() {
    let env = |k: &str| match k {
        "JIMINI_LISTEN" => Some("0.0.0.0:9999".to_string()),
        "JIMINI_ADMIN_LISTEN" => Some("127.0.0.1:9902".to_string()),
        "JIMINI_UPSTREAM_URL" => Some("https://api.openai.com".to_string()),
        "JIMINI_RULES_DIR" => Some("/etc/jimini/rules".to_string()),
        "JIMINI_SHADOW" => Some("1".to_string()),
        "JIMINI_AUDIT_DIR" => Some("/var/lib/jimini/audit".to_string()),
        _ => None,
    };
    let cfg = Config::parse_with_env(EMBEDDED_CONFIG, "c.yaml", &env).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:9999");
    assert_eq!(cfg.admin.listen, "127.0.0.1:9902");
    assert_eq!(cfg.upstreams[0].base_url, "https://api.openai.com");
    assert_eq!(cfg.rules.dir, PathBuf::from("/etc/jimini/rules"));
    assert_eq!(cfg.rules.mode, crate::rules::Mode::Shadow);
    assert_eq!(cfg.audit.dir, PathBuf::from("/var/lib/jimini/audit"));
    // pointing away from the mock turns the in-process mock off
    assert!(!cfg.runs_embedded_mock());
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let text = format!("{MINIMAL}body:\n  max_bytez: 3\n");
    let err = Config::parse_with_env(&text, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.yaml"), "{err}");
    assert!(err.contains("body"), "{err}");
    assert!(err.contains("max_bytez"), "{err}");
}

#[test]
fn nested_unknown_key_in_list_names_index() {
    let text = "upstreams:\n  - name: a\n    base_url: http://127.0.0.1:9\n    colour: red\n";
    let err = Config::parse_with_env(text, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("upstreams[0]"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn wrong_type_names_the_key() {
    let text = format!("{MINIMAL}body:\n  max_bytes: lots\n");
    let err = Config::parse_with_env(&text, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("body.max_bytes"), "{err}");
}

#[test]
fn invalid_listen_address_names_the_key() {
    let text = format!("listen: not-an-address\n{MINIMAL}");
    let err = Config::parse_with_env(&text, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`listen`"), "{err}");
}

#[test]
fn admin_on_the_proxy_port_is_an_error() {
    for (listen, admin) in [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("0.0.0.0:8080", "127.0.0.1:8080"),
        ("127.0.0.1:8080", "0.0.0.0:8080"),
    ] {
        let text = format!("listen: {listen}\nadmin:\n  listen: {admin}\n{MINIMAL}");
        let err = Config::parse_with_env(&text, "c.yaml", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.listen"), "{listen} / {admin}: {err}");
    }
    for (listen, admin) in [
        ("127.0.0.1:8080", "127.0.0.1:9901"),
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let text = format!("listen: {listen}\nadmin:\n  listen: {admin}\n{MINIMAL}");
        assert!(
            Config::parse_with_env(&text, "c.yaml", &no_env).is_ok(),
            "{listen} / {admin}"
        );
    }
}

#[test]
fn missing_upstreams_is_an_error() {
    let err = Config::parse_with_env("listen: 127.0.0.1:1\n", "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("upstreams"), "{err}");
}

#[test]
fn interpolation_error_names_the_variable() {
    let text = "listen: ${NOT_SET_ANYWHERE}\nupstreams: []\n";
    let err = Config::parse_with_env(text, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
}

#[test]
fn masked_config_hides_secrets() {
    let env = |k: &str| match k {
        "JIMINI_ADMIN_JWT_SECRET" => Some("super-secret-value".to_string()),
        "JIMINI_REDIS_URL" => Some("redis://user:hunter2@redis:6379".to_string()),
        _ => None,
    };
    let cfg = Config::parse_with_env(EMBEDDED_CONFIG, "c.yaml", &env).unwrap();
    let shown = cfg.masked_json().to_string();
    assert!(!shown.contains("super-secret-value"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn read_buffer_defaults_and_is_bounded() {
    let cfg = Config::parse_with_env(MINIMAL, "c.yaml", &no_env).unwrap();
    assert_eq!(cfg.server.read_buffer_bytes, DEFAULT_READ_BUFFER_BYTES);
    let unbuffered = format!("{MINIMAL}server: {{ read_buffer_bytes: 0 }}\n");
    let cfg = Config::parse_with_env(&unbuffered, "c.yaml", &no_env).unwrap();
    assert_eq!(cfg.server.read_buffer_bytes, 0);
    let huge = format!("{MINIMAL}server: {{ read_buffer_bytes: 2000000 }}\n");
    let err = Config::parse_with_env(&huge, "c.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.read_buffer_bytes"), "{err}");
}
