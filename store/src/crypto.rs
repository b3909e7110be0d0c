//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value.
//!
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag). The associated
//! data binds a value to where it is stored (e.g. the channel account's public
//! id), so a ciphertext copied onto another row does not decrypt.
//!
//! The key comes from `security.master_key` or from `DATA_DIR/master.key`,
//! generated there with mode 0600 on first run. `Secret` keeps plaintext out of
//! logs: its `Debug` prints `[redacted]` and it has no `Display`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const VERSION_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

/// Errors of key handling and sealing.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The configured or stored key is not 32 bytes of hex or base64.
    #[error("{origin}: a master key must be 32 bytes written as 64 hex characters or base64")]
    BadKey {
        /// Where the key came from.
        origin: String,
    },
    /// The key file could not be read or created.
    #[error("cannot {action} master key file {}: {source}", path.display())]
    KeyFile {
        /// `read` or `create`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sealed value did not decrypt: wrong key, or tampered data.
    #[error("cannot decrypt a stored secret: wrong master key or damaged data")]
    Decrypt,
    /// A sealed value is not in the `v1:` format.
    #[error("a stored secret is not in a known format")]
    Format,
}

/// A plaintext secret (a token, an app secret). Never printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the master key came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `security.master_key`.
    Config,
    /// An existing key file.
    File(PathBuf),
    /// A key file generated just now.
    Generated(PathBuf),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("security.master_key"),
            Self::File(p) => write!(f, "key file {}", p.display()),
            Self::Generated(p) => write!(f, "newly generated key file {}", p.display()),
        }
    }
}

/// The master key. Cheap to clone.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    origin: KeyOrigin,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// From `security.master_key` when set, else from `key_file`, which is
    /// generated (mode 0600, parent created) when it does not exist.
    pub fn load(configured: Option<&str>, key_file: &Path) -> Result<Self, CryptoError> {
        if let Some(text) = configured {
            return Self::parse(text, KeyOrigin::Config);
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                warn_if_readable_by_others(key_file);
                Self::parse(&text, KeyOrigin::File(key_file.to_path_buf()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::generate(key_file),
            Err(e) => Err(CryptoError::KeyFile {
                action: "read",
                path: key_file.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Where the key came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    fn parse(text: &str, origin: KeyOrigin) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex_decode(text)
        } else {
            B64.decode(text).ok()
        };
        match bytes {
            Some(bytes) if bytes.len() == 32 => Ok(Self {
                cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
                origin,
            }),
            _ => Err(CryptoError::BadKey {
                origin: origin.to_string(),
            }),
        }
    }

    fn generate(path: &Path) -> Result<Self, CryptoError> {
        let key = Aes256Gcm::generate_key(OsRng);
        let encoded = B64.encode(key);
        let fail = |source| CryptoError::KeyFile {
            action: "create",
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        // create_new: two processes starting at once never overwrite each
        // other's key; the loser reads the winner's.
        let mut file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load(None, path);
            }
            Err(e) => return Err(fail(e)),
        };
        let written = file
            .write_all(format!("{encoded}\n").as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(path);
            return Err(fail(e));
        }
        tracing::warn!(
            path = %path.display(),
            "generated a new master key for channel credentials; back it up with the database"
        );
        Ok(Self {
            cipher: Aes256Gcm::new(&key),
            origin: KeyOrigin::Generated(path.to_path_buf()),
        })
    }

    /// Encrypts `plaintext`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext,
            aad: context.as_bytes(),
        };
        // AES-GCM encryption only fails for inputs beyond 64 GiB.
        let ciphertext = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{VERSION_PREFIX}{}", B64.encode(out))
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, CryptoError> {
        let encoded = sealed
            .strip_prefix(VERSION_PREFIX)
            .ok_or(CryptoError::Format)?;
        let raw = B64.decode(encoded).map_err(|_| CryptoError::Format)?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Format);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "master key file is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("master.key");
        let key = MasterKey::load(None, &path).expect("generate");
        assert!(matches!(key.origin(), KeyOrigin::Generated(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = key.seal(b"token", "acct");
        let again = MasterKey::load(None, &path).expect("read back");
        assert!(matches!(again.origin(), KeyOrigin::File(_)));
        assert_eq!(again.open(&sealed, "acct").expect("open"), b"token");
    }

    #[test]
    fn seal_is_randomised_and_bound_to_context() {
        let key = MasterKey::parse(&"ab".repeat(32), KeyOrigin::Config).expect("hex key");
        let a = key.seal(b"secret", "acct-1");
        let b = key.seal(b"secret", "acct-1");
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.contains("secret"));
        assert_eq!(key.open(&a, "acct-1").expect("open"), b"secret");
        assert!(matches!(key.open(&a, "acct-2"), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn wrong_key_and_tampering_are_detected() {
        let k1 = MasterKey::parse(&B64.encode([1u8; 32]), KeyOrigin::Config).expect("k1");
        let k2 = MasterKey::parse(&B64.encode([2u8; 32]), KeyOrigin::Config).expect("k2");
        let sealed = k1.seal(b"x", "c");
        assert!(matches!(k2.open(&sealed, "c"), Err(CryptoError::Decrypt)));
        let mut raw = B64
            .decode(sealed.trim_start_matches(VERSION_PREFIX))
            .expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{VERSION_PREFIX}{}", B64.encode(raw));
        assert!(matches!(k1.open(&tampered, "c"), Err(CryptoError::Decrypt)));
        assert!(matches!(k1.open("plain", "c"), Err(CryptoError::Format)));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "short", &"zz".repeat(32), &B64.encode([0u8; 16])] {
            let err = MasterKey::parse(bad, KeyOrigin::Config).expect_err("bad key");
            assert!(err.to_string().starts_with("security.master_key:"), "{err}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }
}
