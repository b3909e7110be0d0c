//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value.
//!
//! A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag). The associated
//! data binds a value to where it is stored (e.g. the channel account's public
//! id), so a ciphertext copied onto another row does not decrypt.
//!
//! The [`MasterKey`] is a keyring: one primary key seals and opens; the
//! others only open. The primary comes from `security.master_key`, or from
//! `DATA_DIR/master.key`, generated there with mode 0600 on first run. Keys
//! that only open: `security.previous_master_keys`, and for a key kept in a
//! file, `master.key.previous` (the key before the last rotation) and
//! `master.key.new` (the key of a rotation in progress). A keyring held in
//! files re-reads them when a value does not open, so a running node follows
//! a `frontdesk keys rotate` made beside it without a restart.
//!
//! [`KeyFiles`] is the file side of a rotation: the new key is written to
//! `master.key.new` before the database is re-sealed, and promoted to
//! `master.key` only after the commit, so a crash at any step leaves a key
//! that opens the database. `Secret` keeps plaintext out of logs: its `Debug`
//! prints `[redacted]` and it has no `Display`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

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
        /// `read`, `create`, `lock`, `replace`…
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

/// Where a key came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `security.master_key`.
    Config,
    /// `security.previous_master_keys[i]`.
    ConfigPrevious(usize),
    /// An existing key file (`master.key`, `.previous` or `.new`).
    File(PathBuf),
    /// A key file generated just now.
    Generated(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// Generated in memory, not stored yet.
    Random,
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config => f.write_str("security.master_key"),
            Self::ConfigPrevious(i) => write!(f, "security.previous_master_keys[{i}]"),
            Self::File(p) => write!(f, "key file {}", p.display()),
            Self::Generated(p) => write!(f, "newly generated key file {}", p.display()),
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::Random => f.write_str("a newly generated key"),
        }
    }
}

/// What a key of the ring may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Seals and opens.
    Primary,
    /// Opens only: `security.previous_master_keys` or `master.key.previous`.
    Previous,
    /// Opens only: `master.key.new`, the key of a rotation not finished.
    Pending,
}

/// A value opened by the ring, and which key opened it.
#[derive(Debug)]
pub struct Opened {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// The opening key's role.
    pub role: KeyRole,
    /// Where the opening key came from.
    pub origin: KeyOrigin,
}

/// One AES-256-GCM key.
#[derive(Clone)]
struct OneKey {
    cipher: Aes256Gcm,
    /// A key check value (the tag of an empty message under a fixed nonce):
    /// tells keys apart without keeping or showing their bytes.
    check: [u8; 16],
    origin: KeyOrigin,
    role: KeyRole,
}

impl OneKey {
    fn parse(text: &str, origin: KeyOrigin, role: KeyRole) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex_decode(text)
        } else {
            B64.decode(text).ok()
        };
        match bytes {
            Some(bytes) if bytes.len() == 32 => Ok(Self::new(
                Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
                origin,
                role,
            )),
            _ => Err(CryptoError::BadKey {
                origin: origin.to_string(),
            }),
        }
    }

    fn new(cipher: Aes256Gcm, origin: KeyOrigin, role: KeyRole) -> Self {
        let tag = cipher
            .encrypt(
                Nonce::from_slice(&[0; NONCE_LEN]),
                Payload {
                    msg: b"",
                    aad: b"frontdesk key check",
                },
            )
            .unwrap_or_default();
        let mut check = [0; 16];
        check.copy_from_slice(tag.get(..16).unwrap_or(&[0; 16]));
        Self {
            cipher,
            check,
            origin,
            role,
        }
    }

    fn seal(&self, plaintext: &[u8], context: &str) -> String {
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

    fn open(&self, raw: &[u8], context: &str) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .ok()
    }
}

/// The master keyring. Cheap to clone; clones share the ring, so a reload
/// by one is seen by all.
#[derive(Clone)]
pub struct MasterKey {
    ring: Arc<RwLock<Arc<Ring>>>,
    /// Set when the primary is kept in a file: the ring can be re-read.
    files: Option<KeyFiles>,
    /// `security.previous_master_keys`, kept across reloads.
    configured_previous: Arc<[OneKey]>,
}

/// The primary, then the keys that only open, in the order they are tried.
struct Ring {
    primary: OneKey,
    others: Vec<OneKey>,
}

impl Ring {
    fn iter(&self) -> impl Iterator<Item = &OneKey> {
        std::iter::once(&self.primary).chain(&self.others)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: Vec<String> = self.keys().iter().map(|k| k.origin.to_string()).collect();
        f.debug_struct("MasterKey")
            .field("keys", &origins)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// The primary from `security.master_key` when set, else from
    /// `key_file`, which is generated (mode 0600, parent created) when it does
    /// not exist. `previous` (`security.previous_master_keys`) only open; so
    /// do `master.key.previous` and `master.key.new` beside a key file.
    pub fn load(
        configured: Option<&str>,
        previous: &[String],
        key_file: &Path,
    ) -> Result<Self, CryptoError> {
        let configured_previous: Arc<[OneKey]> = previous
            .iter()
            .enumerate()
            .map(|(i, text)| OneKey::parse(text, KeyOrigin::ConfigPrevious(i), KeyRole::Previous))
            .collect::<Result<_, _>>()?;
        if let Some(text) = configured {
            let ring = Ring {
                primary: OneKey::parse(text, KeyOrigin::Config, KeyRole::Primary)?,
                others: configured_previous.to_vec(),
            };
            return Ok(Self {
                ring: Arc::new(RwLock::new(Arc::new(ring))),
                files: None,
                configured_previous,
            });
        }
        let files = KeyFiles::beside(key_file);
        let primary = match read_key_file(&files.current, KeyRole::Primary)? {
            Some(key) => key,
            // A rotation renames master.key.new over master.key, never
            // removes master.key: a missing file is a first run.
            None => generate(&files.current)?,
        };
        let ring = files.ring(primary, &configured_previous)?;
        Ok(Self {
            ring: Arc::new(RwLock::new(Arc::new(ring))),
            files: Some(files),
            configured_previous,
        })
    }

    /// Where the primary key came from.
    pub fn origin(&self) -> KeyOrigin {
        self.keys().primary.origin.clone()
    }

    /// The key files, when the primary is kept in one.
    pub fn files(&self) -> Option<&KeyFiles> {
        self.files.as_ref()
    }

    /// The origins of the keys that only open, with their roles.
    pub fn others(&self) -> Vec<(KeyRole, KeyOrigin)> {
        self.keys()
            .others
            .iter()
            .map(|k| (k.role, k.origin.clone()))
            .collect()
    }

    /// Whether `key` is the primary key of this ring.
    pub fn is_primary(&self, key: &NewMasterKey) -> bool {
        self.keys().primary.check == key.key.check
    }

    /// Whether this ring opens what `key` seals (any of its keys is `key`).
    pub fn holds(&self, key: &NewMasterKey) -> bool {
        self.keys().iter().any(|k| k.check == key.key.check)
    }

    fn keys(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Encrypts `plaintext` with the primary key, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        self.keys().primary.seal(plaintext, context)
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same
    /// `context`, under any key of the ring.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, CryptoError> {
        self.open_with_role(sealed, context).map(|o| o.plaintext)
    }

    /// Like [`open`](Self::open), and says which key opened the value. A
    /// ring kept in files re-reads them once when no key opens it (a
    /// rotation made by another process).
    pub fn open_with_role(&self, sealed: &str, context: &str) -> Result<Opened, CryptoError> {
        let raw = decode(sealed)?;
        if let Some(opened) = open_raw(&self.keys(), &raw, context) {
            return Ok(opened);
        }
        match self.reload() {
            Ok(true) => open_raw(&self.keys(), &raw, context).ok_or(CryptoError::Decrypt),
            Ok(false) => Err(CryptoError::Decrypt),
            Err(error) => {
                tracing::warn!(%error, "cannot re-read the master key files");
                Err(CryptoError::Decrypt)
            }
        }
    }

    /// Re-reads the key files (a ring kept in files only); `true` when the
    /// keys changed. A missing `master.key` keeps the ring as it is.
    pub fn reload(&self) -> Result<bool, CryptoError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let Some(primary) = read_key_file(&files.current, KeyRole::Primary)? else {
            return Ok(false);
        };
        let fresh = files.ring(primary, &self.configured_previous)?;
        let current = self.keys();
        let same = fresh.others.len() == current.others.len()
            && fresh
                .iter()
                .zip(current.iter())
                .all(|(a, b)| a.check == b.check && a.role == b.role);
        if same {
            return Ok(false);
        }
        let origins: Vec<String> = fresh.iter().map(|k| k.origin.to_string()).collect();
        tracing::info!(keys = ?origins, "master key files changed; the keyring was re-read");
        let fresh = Arc::new(fresh);
        match self.ring.write() {
            Ok(mut ring) => *ring = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(true)
    }
}

fn decode(sealed: &str) -> Result<Vec<u8>, CryptoError> {
    let encoded = sealed
        .strip_prefix(VERSION_PREFIX)
        .ok_or(CryptoError::Format)?;
    let raw = B64.decode(encoded).map_err(|_| CryptoError::Format)?;
    if raw.len() < NONCE_LEN + 16 {
        return Err(CryptoError::Format);
    }
    Ok(raw)
}

fn open_raw(keys: &Ring, raw: &[u8], context: &str) -> Option<Opened> {
    keys.iter().find_map(|key| {
        key.open(raw, context).map(|plaintext| Opened {
            plaintext,
            role: key.role,
            origin: key.origin.clone(),
        })
    })
}

/// The key a rotation seals with. Its text is shown or written once.
pub struct NewMasterKey {
    key: OneKey,
    text: Secret,
}

impl fmt::Debug for NewMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMasterKey")
            .field("origin", &self.key.origin)
            .finish_non_exhaustive()
    }
}

impl NewMasterKey {
    /// 32 random bytes.
    pub fn generate() -> Self {
        let bytes = Aes256Gcm::generate_key(OsRng);
        Self {
            key: OneKey::new(Aes256Gcm::new(&bytes), KeyOrigin::Random, KeyRole::Primary),
            text: Secret::new(B64.encode(bytes)),
        }
    }

    /// A key written as 64 hex characters or base64.
    pub fn parse(text: &str, origin: KeyOrigin) -> Result<Self, CryptoError> {
        Ok(Self {
            key: OneKey::parse(text, origin, KeyRole::Primary)?,
            text: Secret::new(text.trim()),
        })
    }

    /// Where it came from.
    pub fn origin(&self) -> &KeyOrigin {
        &self.key.origin
    }

    /// The key's text, for the one place that stores or shows it.
    pub fn text(&self) -> &Secret {
        &self.text
    }

    /// Encrypts `plaintext` with this key, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        self.key.seal(plaintext, context)
    }
}

/// The files of a master key kept in `DATA_DIR`: `master.key`, and around
/// a rotation `master.key.new` and `master.key.previous`.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    /// `master.key`: the primary.
    pub current: PathBuf,
    /// `master.key.new`: the key of a rotation, until it is promoted.
    pub new: PathBuf,
    /// `master.key.previous`: the key before the last rotation.
    pub previous: PathBuf,
    /// `master.key.lock`: held by whoever writes these files.
    lock: PathBuf,
}

/// Held while the key files change; released when dropped.
#[derive(Debug)]
pub struct KeyFilesLock {
    _file: std::fs::File,
}

impl KeyFiles {
    /// The files around `key_file` (`DATA_DIR/master.key`).
    pub fn beside(key_file: &Path) -> Self {
        Self {
            current: key_file.to_path_buf(),
            new: with_suffix(key_file, ".new"),
            previous: with_suffix(key_file, ".previous"),
            lock: with_suffix(key_file, ".lock"),
        }
    }

    /// The ring around `primary`: `master.key.new`, `master.key.previous`,
    /// then the configured previous keys; a key already in it is not
    /// repeated.
    fn ring(&self, primary: OneKey, configured_previous: &[OneKey]) -> Result<Ring, CryptoError> {
        let mut others: Vec<OneKey> = Vec::new();
        let pending = read_key_file(&self.new, KeyRole::Pending);
        let pending = match pending {
            // Written and synced before the database changes: a damaged
            // file was never used; it must not stop start-up.
            Err(CryptoError::BadKey { .. }) => {
                tracing::warn!(
                    path = %self.new.display(),
                    "ignoring a damaged master.key.new: it was never used (a rotation stopped while writing it)"
                );
                None
            }
            other => other?,
        };
        let previous = read_key_file(&self.previous, KeyRole::Previous)?;
        for key in pending
            .into_iter()
            .chain(previous)
            .chain(configured_previous.iter().cloned())
        {
            if key.check != primary.check && others.iter().all(|k| k.check != key.check) {
                others.push(key);
            }
        }
        Ok(Ring { primary, others })
    }

    /// Takes the lock of the key files, waiting for another holder.
    pub fn lock(&self) -> Result<KeyFilesLock, CryptoError> {
        let fail = |source| CryptoError::KeyFile {
            action: "lock",
            path: self.lock.clone(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&self.lock).map_err(fail)?;
        file.lock().map_err(fail)?;
        Ok(KeyFilesLock { _file: file })
    }

    /// Writes `key` to `master.key.new` (mode 0600, synced), replacing the
    /// leftover of a rotation that stopped before its commit. Call with the
    /// lock held.
    pub fn write_new(&self, key: &NewMasterKey) -> Result<(), CryptoError> {
        remove_if_exists(&self.new)?;
        write_private(&self.new, key.text().expose()).map_err(|source| CryptoError::KeyFile {
            action: "create",
            path: self.new.clone(),
            source,
        })?;
        sync_parent(&self.new);
        Ok(())
    }

    /// Removes `master.key.new` after a rotation that did not commit.
    pub fn discard_new(&self) -> Result<(), CryptoError> {
        remove_if_exists(&self.new)?;
        sync_parent(&self.new);
        Ok(())
    }

    /// After the commit: copies `master.key` to `master.key.previous`, then
    /// renames `master.key.new` over `master.key`. Each step is atomic and
    /// may be repeated, and `master.key` exists throughout, so a start-up
    /// finishes what a crash interrupted. Nothing to do without
    /// `master.key.new`. Call with the lock held.
    pub fn promote_new(&self) -> Result<(), CryptoError> {
        if !self.new.try_exists().unwrap_or(true) {
            return Ok(());
        }
        let fail = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CryptoError::KeyFile {
                action,
                path,
                source,
            }
        };
        let old = std::fs::read_to_string(&self.current).map_err(fail("read", &self.current))?;
        let tmp = with_suffix(&self.previous, ".tmp");
        remove_if_exists(&tmp)?;
        write_private(&tmp, old.trim()).map_err(fail("create", &tmp))?;
        std::fs::rename(&tmp, &self.previous).map_err(fail("replace", &self.previous))?;
        std::fs::rename(&self.new, &self.current).map_err(fail("replace", &self.current))?;
        sync_parent(&self.current);
        Ok(())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads a key file; `None` when it does not exist.
fn read_key_file(path: &Path, role: KeyRole) -> Result<Option<OneKey>, CryptoError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            OneKey::parse(&text, KeyOrigin::File(path.to_path_buf()), role).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CryptoError::KeyFile {
            action: "read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn generate(path: &Path) -> Result<OneKey, CryptoError> {
    let key = Aes256Gcm::generate_key(OsRng);
    let fail = |source| CryptoError::KeyFile {
        action: "create",
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    match write_private(path, &B64.encode(key)) {
        Ok(()) => {}
        // Two processes starting at once never overwrite each other's key;
        // the loser reads the winner's.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return read_key_file(path, KeyRole::Primary)?.ok_or(fail(e));
        }
        Err(e) => return Err(fail(e)),
    }
    sync_parent(path);
    tracing::warn!(
        path = %path.display(),
        "generated a new master key for channel credentials; back it up with the database"
    );
    Ok(OneKey::new(
        Aes256Gcm::new(&key),
        KeyOrigin::Generated(path.to_path_buf()),
        KeyRole::Primary,
    ))
}

/// Creates `path` (never over an existing file) with mode 0600 and `text`,
/// synced; removed again when writing fails.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file
        .write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

fn remove_if_exists(path: &Path) -> Result<(), CryptoError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CryptoError::KeyFile {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Makes a rename or a new file in the directory durable (best effort: not
/// every platform opens directories).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
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

/// `security.previous_master_keys` as a TOML list, or as one string of keys
/// separated by commas or whitespace (the form an environment variable
/// gives: `FRONTDESK__SECURITY__PREVIOUS_MASTER_KEYS=k1,k2`).
pub fn deserialize_key_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(
        match <List as serde::Deserialize>::deserialize(deserializer)? {
            List::One(text) => text
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            List::Many(keys) => keys,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(primary: &str, previous: &[&str]) -> MasterKey {
        let previous: Vec<String> = previous.iter().map(|k| (*k).to_owned()).collect();
        MasterKey::load(Some(primary), &previous, Path::new("unused")).expect("ring")
    }

    fn key_text(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("master.key");
        let key = MasterKey::load(None, &[], &path).expect("generate");
        assert!(matches!(key.origin(), KeyOrigin::Generated(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = key.seal(b"token", "acct");
        let again = MasterKey::load(None, &[], &path).expect("read back");
        assert!(matches!(again.origin(), KeyOrigin::File(_)));
        assert_eq!(again.open(&sealed, "acct").expect("open"), b"token");
    }

    #[test]
    fn seal_is_randomised_and_bound_to_context() {
        let key = ring(&"ab".repeat(32), &[]);
        let a = key.seal(b"secret", "acct-1");
        let b = key.seal(b"secret", "acct-1");
        assert_ne!(a, b, "nonces must differ");
        assert!(!a.contains("secret"));
        assert_eq!(key.open(&a, "acct-1").expect("open"), b"secret");
        assert!(matches!(key.open(&a, "acct-2"), Err(CryptoError::Decrypt)));
    }

    #[test]
    fn wrong_key_and_tampering_are_detected() {
        let k1 = ring(&key_text(1), &[]);
        let k2 = ring(&key_text(2), &[]);
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
            let err = MasterKey::load(Some(bad), &[], Path::new("unused")).expect_err("bad key");
            assert!(err.to_string().starts_with("security.master_key:"), "{err}");
            let err = MasterKey::load(Some(&key_text(1)), &[bad.to_owned()], Path::new("unused"))
                .expect_err("bad previous key");
            assert!(
                err.to_string()
                    .starts_with("security.previous_master_keys[0]:"),
                "{err}"
            );
            let err = NewMasterKey::parse(bad, KeyOrigin::Env("NEW_KEY".into())).expect_err("bad");
            assert!(
                err.to_string().starts_with("environment variable NEW_KEY:"),
                "{err}"
            );
        }
    }

    #[test]
    fn ring_opens_with_previous_keys_and_seals_with_the_primary() {
        let old = ring(&key_text(1), &[]);
        let sealed_old = old.seal(b"old", "c");
        let new = ring(&key_text(2), &[&key_text(1)]);
        let opened = new
            .open_with_role(&sealed_old, "c")
            .expect("previous opens");
        assert_eq!(opened.plaintext, b"old");
        assert_eq!(opened.role, KeyRole::Previous);
        assert_eq!(opened.origin, KeyOrigin::ConfigPrevious(0));
        // Sealing uses the primary only: the old key alone cannot open it.
        let sealed_new = new.seal(b"new", "c");
        assert!(matches!(
            old.open(&sealed_new, "c"),
            Err(CryptoError::Decrypt)
        ));
        let opened = new.open_with_role(&sealed_new, "c").expect("primary opens");
        assert_eq!(opened.role, KeyRole::Primary);
        // A rotation's key: recognised by the ring that holds it.
        let target = NewMasterKey::parse(&key_text(2), KeyOrigin::Env("K".into())).expect("k");
        assert!(new.is_primary(&target) && new.holds(&target));
        assert!(!old.holds(&target));
        assert_eq!(old.open(&target.seal(b"t", "c"), "c").ok(), None);
        assert!(!format!("{new:?} {target:?}").contains(&key_text(2)));
    }

    #[test]
    fn rotated_files_are_promoted_and_a_running_ring_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let running = MasterKey::load(None, &[], &path).expect("generate");
        let sealed_old = running.seal(b"old", "c");
        let files = running.files().expect("file-held").clone();
        let _lock = files.lock().expect("lock");

        // Written, not promoted: the new key opens (pending), the old seals.
        let target = NewMasterKey::generate();
        files.write_new(&target).expect("write new");
        let mid = MasterKey::load(None, &[], &path).expect("load mid-rotation");
        let sealed_new = target.seal(b"new", "c");
        assert_eq!(
            mid.open_with_role(&sealed_new, "c").expect("pending").role,
            KeyRole::Pending
        );
        assert!(!mid.is_primary(&target));

        files.promote_new().expect("promote");
        files.promote_new().expect("promoting again is a no-op");
        assert!(!files.new.exists());
        let after = MasterKey::load(None, &[], &path).expect("load after");
        assert!(after.is_primary(&target));
        let opened = after
            .open_with_role(&sealed_old, "c")
            .expect("previous file");
        assert_eq!(opened.role, KeyRole::Previous);
        assert_eq!(opened.origin, KeyOrigin::File(files.previous.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [&files.current, &files.previous] {
                let mode = std::fs::metadata(file).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", file.display());
            }
        }

        // The process that loaded the old key re-reads the files when a
        // value does not open, then seals with the new primary; its clones
        // share the ring.
        let clone = running.clone();
        assert_eq!(running.open(&sealed_new, "c").expect("reloaded"), b"new");
        assert!(clone.is_primary(&target));
        assert_eq!(after.open(&clone.seal(b"x", "c"), "c").expect("open"), b"x");
    }

    #[test]
    fn a_damaged_new_key_file_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let key = MasterKey::load(None, &[], &path).expect("generate");
        let files = key.files().expect("files").clone();
        std::fs::write(&files.new, "half-writ").expect("write");
        let again = MasterKey::load(None, &[], &path).expect("damaged .new is ignored");
        assert!(again.others().is_empty());
    }

    #[test]
    fn key_lists_read_from_lists_and_strings() {
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(deserialize_with = "deserialize_key_list")]
            keys: Vec<String>,
        }
        let list: S = serde_json::from_str(r#"{"keys": ["a", "b"]}"#).expect("list");
        let text: S = serde_json::from_str(r#"{"keys": "a, b"}"#).expect("string");
        assert_eq!(list.keys, ["a", "b"]);
        assert_eq!(text.keys, ["a", "b"]);
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }
}
