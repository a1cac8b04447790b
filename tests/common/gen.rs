//! Generated test inputs shared by the end-to-end suites: random words, emails and keys, so the
//! tests prove behaviour on varied values rather than on a few fixed examples.
#![allow(dead_code)]

use rand::Rng;

pub fn rand_lower(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

pub fn rand_alnum(n: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

/// Random words (no digits, no `@`): nothing a detector fires on.
pub fn words(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| rand_lower(rng.random_range(3..9)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A random OpenAI-style project key (always matches `api_key.openai`).
pub fn openai_key() -> String {
    format!("sk-proj-{}Aa9{}", rand_alnum(30), rand_alnum(12))
}

pub fn random_email() -> String {
    let mut rng = rand::rng();
    let tld = ["com", "org", "net", "io", "de"][rng.random_range(0..5)];
    format!(
        "{}.{}{}@{}-{}.{tld}",
        rand_lower(5),
        rand_lower(4),
        rng.random_range(1..999),
        rand_lower(6),
        rand_lower(3)
    )
}
