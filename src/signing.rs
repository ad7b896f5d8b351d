//! The publisher's ed25519 key: generating, storing and loading it, and signing bytes.
//!
//! A key file is text, so it can be inspected and backed up:
//!
//! ```text
//! # seedpool publisher key (ed25519). Keep this file secret.
//! public: <64 hex digits>
//! secret: <64 hex digits: the 32-byte seed>
//! ```
//!
//! Only `secret:` is needed; `public:` is checked against it when present, which catches
//! a key file that was edited or mixed up.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read key file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write key file `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file `{path}` already exists; pass --force to replace it (the old key is then lost)"
    )]
    Exists { path: PathBuf },
    #[error("key file `{path}` is not a seedpool key: {problem}")]
    Malformed { path: PathBuf, problem: String },
    #[error("no publisher key at `{path}`: create one with `seedpool key generate` or pass --key")]
    NoKey { path: PathBuf },
    #[error("the operating system gave no random bytes for a new key: {0}")]
    Random(String),
}

pub struct PublisherKey {
    signing: SigningKey,
}

/// Where the publisher key lives when `--key` is not given, from the environment
/// variables `var` returns.
pub fn default_key_path(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("seedpool").join("publisher.key")
}

impl PublisherKey {
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }

    /// Writes the key with owner-only permissions, refusing to replace one unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() && !force {
            return Err(KeyError::Exists {
                path: path.to_path_buf(),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let text = format!(
            "# seedpool publisher key (ed25519). Keep this file secret.\npublic: {}\nsecret: {}\n",
            self.public_hex(),
            hex::encode(self.signing.to_bytes())
        );
        let tmp = path.with_extension("key.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(write_err)?;
        file.write_all(text.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NoKey {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let malformed = |problem: &str| KeyError::Malformed {
            path: path.to_path_buf(),
            problem: problem.into(),
        };
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(name))
                .map(str::trim)
                .next()
        };
        let secret = field("secret:").ok_or_else(|| malformed("no `secret:` line"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(secret, &mut seed)
            .map_err(|_| malformed("`secret:` is not 64 hex digits"))?;
        let key = Self::from_seed(seed);
        if let Some(public) = field("public:") {
            if public != key.public_hex() {
                return Err(malformed("`public:` does not belong to `secret:`"));
            }
        }
        Ok(key)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("public key `{0}` is not a valid ed25519 key")]
    BadPublicKey(String),
    #[error("signature is not 128 hex digits")]
    BadEncoding,
    #[error("signature does not match the content (signed by `{0}`)")]
    Mismatch(String),
}

/// Checks an ed25519 signature given as hex, with the public key as hex.
pub fn verify(public_hex: &str, message: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let mut public = [0u8; 32];
    hex::decode_to_slice(public_hex, &mut public)
        .map_err(|_| SignatureError::BadPublicKey(public_hex.into()))?;
    let key = VerifyingKey::from_bytes(&public)
        .map_err(|_| SignatureError::BadPublicKey(public_hex.into()))?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut sig).map_err(|_| SignatureError::BadEncoding)?;
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Mismatch(public_hex.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/publisher.key");
        let key = PublisherKey::generate().unwrap();
        key.save(&path, false).unwrap();
        let loaded = PublisherKey::load(&path).unwrap();
        assert_eq!(loaded.public_hex(), key.public_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            key.save(&path, false),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let key = PublisherKey::from_seed([7; 32]);
        let sig = key.sign(b"hello");
        verify(&key.public_hex(), b"hello", &sig).unwrap();
        assert!(matches!(
            verify(&key.public_hex(), b"hellp", &sig),
            Err(SignatureError::Mismatch(_))
        ));
    }

    #[test]
    fn edited_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(
            &path,
            format!("public: {}\nsecret: {}\n", "00".repeat(32), "11".repeat(32)),
        )
        .unwrap();
        let err = PublisherKey::load(&path).err().unwrap().to_string();
        assert!(
            err.contains("`public:` does not belong to `secret:`"),
            "{err}"
        );
    }
}
