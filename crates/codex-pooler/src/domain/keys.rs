//! Pool API keys and operator tokens: `<kind>-<12 lowercase hex>-<base64url secret>`.
//! Only the prefix (`<kind>-<hex>`) and the SHA-256 of the secret are stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Pool API keys start with this.
pub const API_KEY_KIND: &str = "sk-cxp";
/// Operator tokens (admin JSON API) start with this.
pub const OPERATOR_TOKEN_KIND: &str = "op-cxp";

/// A freshly generated secret credential: the raw value is shown exactly once.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub raw: String,
    pub prefix: String,
    pub secret_hash: String,
}

/// The parts of a presented credential, validated for shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedCredential {
    pub prefix: String,
    pub secret_hash: String,
}

/// Generates a new credential of the given kind.
pub fn generate(kind: &str) -> NewCredential {
    let mut rng = rand::rng();
    let mut public = [0u8; 6];
    rng.fill_bytes(&mut public);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let prefix = format!("{kind}-{}", hex::encode(public));
    let secret_text = URL_SAFE_NO_PAD.encode(secret);
    NewCredential {
        raw: format!("{prefix}-{secret_text}"),
        prefix,
        secret_hash: hash_secret(&secret_text),
    }
}

/// SHA-256 of the secret part, hex encoded.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented credential into prefix and secret hash, rejecting anything
/// that is not exactly `<kind>-<12 hex>-<43 base64url chars>`.
pub fn parse(kind: &str, raw: &str) -> Option<PresentedCredential> {
    let rest = raw.strip_prefix(kind)?.strip_prefix('-')?;
    let (public, secret) = rest.split_once('-')?;
    let public_ok = public.len() == 12
        && public
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !public_ok || !secret_ok {
        return None;
    }
    Some(PresentedCredential {
        prefix: format!("{kind}-{public}"),
        secret_hash: hash_secret(secret),
    })
}

/// Constant-time comparison of two hex hashes.
pub fn hashes_match(stored: &str, presented: &str) -> bool {
    stored.as_bytes().ct_eq(presented.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_their_prefix_and_hash() {
        let key = generate(API_KEY_KIND);
        assert!(key.raw.starts_with("sk-cxp-"));
        let parsed = parse(API_KEY_KIND, &key.raw).expect("parses");
        assert_eq!(parsed.prefix, key.prefix);
        assert!(hashes_match(&key.secret_hash, &parsed.secret_hash));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "sk-cxp-",
            "sk-cxp-0123456789ab",
            "sk-cxp-0123456789AB-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "sk-cxp-0123456789ab-short",
            "op-cxp-0123456789ab-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(parse(API_KEY_KIND, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_wrong_secret_does_not_match() {
        let key = generate(API_KEY_KIND);
        let other = generate(API_KEY_KIND);
        let forged = format!("{}-{}", key.prefix, &other.raw[other.prefix.len() + 1..]);
        let parsed = parse(API_KEY_KIND, &forged).expect("shape is valid");
        assert!(!hashes_match(&key.secret_hash, &parsed.secret_hash));
    }
}
