//! The SHA3-256 hash chain: `hash = SHA3-256(prev ‖ canonical bytes)`, the genesis value, and the keyed
//! hashes the records carry instead of raw identities (caller hash, subject commitment).

use sha3::{Digest, Sha3_256};

/// A chain hash (raw bytes; records carry it as 64 lowercase hex digits).
pub type Hash = [u8; 32];

/// `prev` of the genesis record: 32 zero bytes.
pub const GENESIS_PREV: Hash = [0u8; 32];

/// Domain separation for caller hashes, so a caller hash can never collide with another keyed hash.
const CALLER_DOMAIN: &[u8] = b"jimini.audit.caller.v1\0";

/// Chain link. `canonical_open` is the canonical record bytes WITHOUT their final `}` (that is how the
/// writer holds them and how they appear at the start of a stored line); the `}` is hashed here so the
/// hashed bytes are exactly the canonical JSON object.
pub fn link(prev: &Hash, canonical_open: &[u8]) -> Hash {
    let mut h = Sha3_256::new();
    h.update(prev);
    h.update(canonical_open);
    h.update(b"}");
    h.finalize().into()
}

/// Keyed, non-reversible caller identity: `"sha3:" + hex(SHA3-256(domain ‖ key ‖ name))`. The key is
/// per log directory, so hashes are stable within a deployment but cannot be reversed by hashing a
/// dictionary of names without the key. (SHA3 has no length-extension weakness, so prefix keying is a
/// sound MAC construction.)
pub fn caller_hash(key: &[u8; 32], caller: &str) -> String {
    let mut h = Sha3_256::new();
    h.update(CALLER_DOMAIN);
    h.update(key);
    h.update(caller.as_bytes());
    let d: Hash = h.finalize().into();
    let mut s = String::with_capacity(5 + 64);
    s.push_str("sha3:");
    s.push_str(&hex::encode(d));
    s
}

/// Salted commitment to a data-subject id: `SHA3-256(salt ‖ utf8(id))`. The chain covers only this;
/// erasing the id and salt leaves a value that can no longer be linked to the person.
pub fn commitment(salt: &[u8], id: &str) -> Hash {
    let mut h = Sha3_256::new();
    h.update(salt);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// Plain SHA3-256 (torn-tail evidence in seal records).
pub fn sha3(bytes: &[u8]) -> Hash {
    Sha3_256::digest(bytes).into()
}

/// Append 64 lowercase hex digits.
pub(crate) fn push_hex(out: &mut Vec<u8>, h: &Hash) {
    let mut buf = [0u8; 64];
    // Infallible: the buffer is exactly twice the input length.
    if hex::encode_to_slice(h, &mut buf).is_ok() {
        out.extend_from_slice(&buf);
    }
}

/// Parse 64 hex digits (either case) into a hash.
pub(crate) fn parse_hex(s: &[u8]) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    hex::decode_to_slice(s, &mut h).ok()?;
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha3_known_answer() {
        // FIPS 202 test vector: SHA3-256("abc").
        assert_eq!(
            hex::encode(sha3(b"abc")),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
    }

    #[test]
    fn link_hashes_prev_then_object() {
        let prev = [7u8; 32];
        let mut whole = prev.to_vec();
        whole.extend_from_slice(b"{\"a\":1}");
        assert_eq!(link(&prev, b"{\"a\":1"), sha3(&whole));
        assert_ne!(link(&GENESIS_PREV, b"{\"a\":1"), link(&prev, b"{\"a\":1"));
    }

    #[test]
    fn keyed_hashes_differ_by_key_and_are_stable() {
        let a = caller_hash(&[1; 32], "team-a");
        assert!(a.starts_with("sha3:") && a.len() == 69);
        assert_eq!(a, caller_hash(&[1; 32], "team-a"));
        assert_ne!(a, caller_hash(&[2; 32], "team-a"));
        assert_ne!(a, caller_hash(&[1; 32], "team-b"));
        assert_ne!(commitment(b"s1", "alice"), commitment(b"s2", "alice"));
    }

    #[test]
    fn hex_round_trip() {
        let h = sha3(b"x");
        let mut v = Vec::new();
        push_hex(&mut v, &h);
        assert_eq!(parse_hex(&v), Some(h));
        assert_eq!(parse_hex(&v[..63]), None);
        assert_eq!(parse_hex(&[b'g'; 64]), None);
    }
}
