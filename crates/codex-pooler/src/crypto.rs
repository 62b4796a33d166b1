//! Encryption of upstream credentials at rest (XChaCha20-Poly1305, random 192-bit
//! nonces, the owning row id as associated data) and loading of the key.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

/// The current key version written next to every ciphertext.
pub const KEY_VERSION: i64 = 1;

/// Errors of the secret box.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the secret key must be 32 bytes, base64 encoded")]
    BadKey,
    #[error(
        "ciphertext could not be decrypted with the configured key (wrong key or tampered row)"
    )]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

/// Encrypts and decrypts secrets bound to a row id.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

/// Where the key came from, so start-up can warn when one was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    ExistingFile,
    GeneratedFile,
}

impl SecretBox {
    pub fn from_key_bytes(key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::BadKey);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| CryptoError::BadKey)?;
        Ok(Self { cipher })
    }

    /// Parses a base64 (standard or URL-safe) 32-byte key.
    pub fn from_encoded(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| CryptoError::BadKey)?;
        Self::from_key_bytes(&bytes)
    }

    /// Loads the key from the environment value if given, else from `key_file`,
    /// generating that file (mode 0600) on first start.
    pub fn load_or_create(
        env_value: Option<&str>,
        key_file: &Path,
    ) -> Result<(Self, KeySource), CryptoError> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            return Ok((Self::from_encoded(value)?, KeySource::Environment));
        }
        let io_err = |source| CryptoError::KeyFile {
            path: key_file.display().to_string(),
            source,
        };
        if key_file.exists() {
            let text = std::fs::read_to_string(key_file).map_err(io_err)?;
            return Ok((Self::from_encoded(&text)?, KeySource::ExistingFile));
        }
        if let Some(parent) = key_file.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let encoded = STANDARD.encode(key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(key_file).map_err(io_err)?;
        file.write_all(encoded.as_bytes()).map_err(io_err)?;
        Ok((Self::from_key_bytes(&key)?, KeySource::GeneratedFile))
    }

    /// Encrypts `plaintext` for the row `row_id`; returns (ciphertext, nonce).
    pub fn seal(&self, row_id: &str, plaintext: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        Ok((ciphertext, nonce.to_vec()))
    }

    /// Decrypts a ciphertext sealed for `row_id`.
    pub fn open(
        &self,
        row_id: &str,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if nonce.len() != 24 {
            return Err(CryptoError::Decrypt);
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row_id.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_row() {
        let secret_box = SecretBox::from_key_bytes(&[7u8; 32]).expect("key");
        let (ct, nonce) = secret_box.seal("row-a", b"refresh-token").expect("seal");
        assert_eq!(
            secret_box.open("row-a", &ct, &nonce).expect("open"),
            b"refresh-token"
        );
        assert!(secret_box.open("row-b", &ct, &nonce).is_err());
        assert!(!ct.windows(7).any(|w| w == b"refresh"));
    }

    #[test]
    fn generated_key_file_is_private_and_reloads() {
        let dir = std::env::temp_dir().join(format!("cxp-key-{}", crate::time::new_id()));
        let path = dir.join("secret.key");
        let (a, source) = SecretBox::load_or_create(None, &path).expect("create");
        assert_eq!(source, KeySource::GeneratedFile);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (b, source) = SecretBox::load_or_create(None, &path).expect("reload");
        assert_eq!(source, KeySource::ExistingFile);
        let (ct, nonce) = a.seal("r", b"x").expect("seal");
        assert_eq!(b.open("r", &ct, &nonce).expect("open"), b"x");
        let _ = std::fs::remove_dir_all(dir);
    }
}
