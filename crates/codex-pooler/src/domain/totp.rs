//! The optional second factor of operators: TOTP (RFC 6238 with HMAC-SHA1, a
//! 20-byte secret, 30-second steps, 6 digits, one step of clock skew either
//! way), the `otpauth://` URI authenticator apps read, and one-time recovery
//! codes (10 random bytes each, shown as base32 in four groups; only their
//! SHA-256 is stored). Nothing here does I/O or keeps state: which step was
//! used last lives in the store.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

/// Length of a TOTP secret in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Seconds per TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// Digits of a TOTP code.
pub const DIGITS: usize = 6;
/// How many recovery codes enrolment hands out.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes behind one recovery code.
pub const RECOVERY_CODE_BYTES: usize = 10;
/// The issuer authenticator apps show next to the account.
pub const ISSUER: &str = "Codex Pooler";

/// Characters escaped in the label and issuer of an `otpauth://` URI: all but
/// letters, digits and the few that make an email readable.
const LABEL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

const BASE32: base32::Alphabet = base32::Alphabet::Rfc4648 { padding: false };

/// A fresh random TOTP secret.
pub fn new_secret() -> [u8; SECRET_BYTES] {
    rand::random()
}

/// The secret as authenticator apps take it when typed in (base32, no padding).
pub fn secret_base32(secret: &[u8]) -> String {
    base32::encode(BASE32, secret)
}

/// The `otpauth://totp/…` URI for `account` (the operator's email).
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    let issuer = utf8_percent_encode(ISSUER, LABEL);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        utf8_percent_encode(account, LABEL),
        secret_base32(secret),
    )
}

/// What the sign-in form's single field holds once spaces and dashes are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedCode {
    /// Six digits from the authenticator app.
    Totp(String),
    /// A recovery code, upper-cased without separators.
    Recovery(String),
    /// Neither shape.
    Malformed,
}

/// Sorts a typed code into a TOTP code or a recovery code.
pub fn classify(input: &str) -> PresentedCode {
    let compact: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    if compact.len() == DIGITS && compact.bytes().all(|b| b.is_ascii_digit()) {
        return PresentedCode::Totp(compact);
    }
    let upper = compact.to_ascii_uppercase();
    let recovery_len = (RECOVERY_CODE_BYTES * 8).div_ceil(5);
    if upper.len() == recovery_len && base32::decode(BASE32, &upper).is_some() {
        return PresentedCode::Recovery(upper);
    }
    PresentedCode::Malformed
}

/// The outcome of checking a six-digit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Valid in this step, which is newer than the last one used.
    Valid(i64),
    /// Valid, but for a step already used: a replayed (observed) code.
    Reused,
    /// Not the code of any step within the allowed skew.
    Wrong,
}

/// Checks `code` against `secret` at `now_secs`, accepting the previous,
/// current and next step. A step at or before `last_used_step` is refused so
/// a code seen over someone's shoulder (or in a log) cannot be used again.
pub fn check_code(
    secret: &[u8],
    code: &str,
    now_secs: i64,
    last_used_step: Option<i64>,
) -> CodeCheck {
    let Ok(totp) = TOTP::new(Algorithm::SHA1, DIGITS, 1, STEP_SECONDS, secret.to_vec()) else {
        return CodeCheck::Wrong;
    };
    let current = now_secs.max(0) / STEP_SECONDS as i64;
    let mut reused = false;
    // Newest first, so a code valid in two steps counts for the newer one.
    for step in [current + 1, current, current - 1] {
        if step < 0 {
            continue;
        }
        let expected = totp.generate(step as u64 * STEP_SECONDS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            if last_used_step.is_some_and(|last| step <= last) {
                reused = true;
            } else {
                return CodeCheck::Valid(step);
            }
        }
    }
    if reused {
        CodeCheck::Reused
    } else {
        CodeCheck::Wrong
    }
}

/// Fresh recovery codes, formatted for people (`ABCD-EFGH-IJKL-MNOP`).
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes: [u8; RECOVERY_CODE_BYTES] = rand::random();
            let text = base32::encode(BASE32, &bytes);
            text.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        })
        .collect()
}

/// SHA-256 (hex) of a recovery code, as typed or as shown: separators and
/// case do not matter. `None` when it is not shaped like a recovery code.
pub fn recovery_code_hash(code: &str) -> Option<String> {
    match classify(code) {
        PresentedCode::Recovery(normalized) => {
            Some(hex::encode(Sha256::digest(normalized.as_bytes())))
        }
        PresentedCode::Totp(_) | PresentedCode::Malformed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 here).
    #[test]
    fn codes_match_the_rfc_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                check_code(secret, code, time, None),
                CodeCheck::Valid(time / 30)
            );
        }
        assert_eq!(check_code(secret, "287083", 59, None), CodeCheck::Wrong);
    }

    #[test]
    fn one_step_of_skew_is_accepted_and_used_steps_are_not() {
        let secret = new_secret();
        let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, secret.to_vec()).expect("totp");
        let now = 1_800_000_015;
        let step = now / 30;
        let previous = totp.generate(((step - 1) * 30) as u64);
        let far = totp.generate(((step - 2) * 30) as u64);
        assert_eq!(
            check_code(&secret, &previous, now, None),
            CodeCheck::Valid(step - 1)
        );
        assert_ne!(
            check_code(&secret, &far, now, None),
            CodeCheck::Valid(step - 2)
        );
        assert_eq!(
            check_code(&secret, &previous, now, Some(step - 1)),
            CodeCheck::Reused
        );
    }

    #[test]
    fn recovery_codes_are_ten_distinct_80_bit_codes_in_groups() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 19, "{code}");
            assert_eq!(code.split('-').count(), 4);
            let typed = code.to_lowercase().replace('-', " ");
            assert_eq!(recovery_code_hash(&typed), recovery_code_hash(code));
        }
    }

    #[test]
    fn typed_codes_are_sorted_by_shape() {
        assert_eq!(classify(" 123 456 "), PresentedCode::Totp("123456".into()));
        assert_eq!(
            classify("abcd-efgh-ijkl-mnop"),
            PresentedCode::Recovery("ABCDEFGHIJKLMNOP".into())
        );
        assert_eq!(classify("12345"), PresentedCode::Malformed);
        assert_eq!(classify("ABCD-EFGH-IJKL-MNO1"), PresentedCode::Malformed);
    }

    #[test]
    fn the_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri(&[0u8; 20], "ops+1@example.test");
        assert_eq!(
            uri,
            "otpauth://totp/Codex%20Pooler:ops%2B1@example.test?secret=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&issuer=Codex%20Pooler&algorithm=SHA1&digits=6&period=30"
        );
    }
}
