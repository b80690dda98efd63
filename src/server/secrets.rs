//! Secrets at rest: the secret access keys of the `credentials` table and
//! the values of `server_secrets` (the trigger signing key) are sealed
//! with ChaCha20-Poly1305 (ring) under a key kept outside the database, so
//! that a dump or a backup of the database alone reveals none of them.
//!
//! The keys (a keyring: the first seals, every one opens) come from
//! [`KEY_ENV`] (hex keys separated by commas, the same on every replica)
//! or else from `DATA_DIR/secrets-key` (one hex key per line, mode 0600,
//! made on first start). A sealed value reads
//! `enc1:<key id>:<base64 of nonce, ciphertext and tag>`; the associated
//! data names the row, so a value cannot be moved to another row. At
//! start, every value that is in plain text (older versions) or sealed
//! with another key of the ring is sealed again with the first key
//! ([`reseal_all`]). Rotation: `docs/security.md`.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use sha2::{Digest, Sha256};

/// Environment variable with the keys (hex, 64 digits each; comma-separated, first seals).
pub const KEY_ENV: &str = "EDGEDEPLOY_SECRETS_KEY";
/// The key file in the data directory, used when [`KEY_ENV`] is not set.
pub const KEY_FILE: &str = "secrets-key";
/// Prefix of a sealed value.
const SEALED: &str = "enc1:";

/// Why a secret could not be sealed or opened, or the keys read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// The keys given are unusable (where, and why).
    BadKey(String),
    /// A value is sealed with a key this server does not have.
    UnknownKey {
        /// What the value is.
        what: String,
        /// The id of the key that sealed it.
        key_id: String,
        /// The ids of the keys this server has.
        known: Vec<String>,
    },
    /// A sealed value does not open: damaged, or moved from another row.
    Corrupt(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::BadKey(m) => write!(f, "secrets key: {m}"),
            SecretError::UnknownKey { what, key_id, known } => write!(
                f,
                "{what} is sealed with secrets key {key_id}, which this server does not have (it has {}): \
                 every replica needs the same keys ({KEY_ENV} or DATA_DIR/{KEY_FILE})",
                known.join(", ")
            ),
            SecretError::Corrupt(what) => write!(f, "{what}: the sealed value does not open (damaged or moved)"),
        }
    }
}

impl std::error::Error for SecretError {}

/// One key and its id.
struct Key {
    id: String,
    sealer: LessSafeKey,
}

/// The keys secrets are sealed with (first) and opened with (any).
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({:?})", self.ids())
    }
}

/// The id of a key: 16 hex digits of a hash of it (it reveals nothing of the key).
pub fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new().chain_update(b"edgedeploy secrets key id\0").chain_update(key).finalize();
    crate::protocol::sigv4::hex(&digest[..8])
}

fn parse_key(text: &str, origin: &str) -> Result<[u8; 32], SecretError> {
    let text = text.trim();
    let bad = || {
        SecretError::BadKey(format!("{origin}: a key is 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`"))
    };
    if text.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        key[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// A new random key, as hex.
pub fn new_key_hex() -> String {
    let key: [u8; 32] = rand::rng().random();
    crate::protocol::sigv4::hex(&key)
}

impl Keyring {
    /// A keyring of `keys` (hex, the first seals), read from `origin`.
    pub fn parse(keys: &str, origin: &str) -> Result<Keyring, SecretError> {
        let mut ring = Vec::new();
        for text in keys.split([',', '\n']).map(str::trim).filter(|k| !k.is_empty() && !k.starts_with('#')) {
            let key = parse_key(text, origin)?;
            let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
                .map_err(|_| SecretError::BadKey(format!("{origin}: unusable key")))?;
            ring.push(Key { id: key_id(&key), sealer: LessSafeKey::new(unbound) });
        }
        if ring.is_empty() {
            return Err(SecretError::BadKey(format!("{origin}: no key in it")));
        }
        Ok(Keyring { keys: ring })
    }

    /// The keys of this server: [`KEY_ENV`] when set, else
    /// `data_dir/secrets-key`. When neither exists, a new key, and the file
    /// to write it to (with [`write_key_file`]) once [`check_known`] has
    /// found no secret sealed with another key.
    pub fn load(data_dir: &Path) -> Result<(Keyring, Option<(std::path::PathBuf, String)>), SecretError> {
        if let Ok(keys) = std::env::var(KEY_ENV) {
            return Ok((Keyring::parse(&keys, KEY_ENV)?, None));
        }
        let path = data_dir.join(KEY_FILE);
        let origin = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Keyring::parse(&text, &origin)?, None)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = new_key_hex();
                Ok((Keyring::parse(&key, &origin)?, Some((path, format!("{key}\n")))))
            }
            Err(e) => Err(SecretError::BadKey(format!("reading {origin}: {e}"))),
        }
    }

    /// The ids of the keys, the sealing one first.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    /// `plain` sealed with the first key; `what` names the row (associated data).
    pub fn seal(&self, plain: &str, what: &str) -> String {
        let key = &self.keys[0];
        let nonce_bytes: [u8; NONCE_LEN] = rand::rng().random();
        let mut data = plain.as_bytes().to_vec();
        // Sealing fails only for inputs beyond ChaCha20's 256 GiB.
        if key
            .sealer
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(what), &mut data)
            .is_err()
        {
            unreachable!("a secret of {} bytes is within ChaCha20-Poly1305's limit", plain.len());
        }
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED}{}:{}", key.id, STANDARD_NO_PAD.encode(out))
    }

    /// The plain text of `stored` (sealed, or plain text from an older
    /// version); `what` names the row as in [`Keyring::seal`].
    pub fn open(&self, stored: &str, what: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(SEALED) else { return Ok(stored.to_string()) };
        let corrupt = || SecretError::Corrupt(what.to_string());
        let (id, data) = rest.split_once(':').ok_or_else(corrupt)?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| SecretError::UnknownKey {
            what: what.to_string(),
            key_id: id.to_string(),
            known: self.ids(),
        })?;
        let mut raw = STANDARD_NO_PAD.decode(data).map_err(|_| corrupt())?;
        if raw.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let mut data = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| corrupt())?;
        let plain = key.sealer.open_in_place(nonce, Aad::from(what), &mut data).map_err(|_| corrupt())?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
    }

    /// Whether `stored` needs sealing again: plain text, or another key's.
    pub fn needs_reseal(&self, stored: &str) -> bool {
        match stored.strip_prefix(SEALED).and_then(|rest| rest.split_once(':')) {
            Some((id, _)) => id != self.keys[0].id,
            None => true,
        }
    }
}

/// What a `credentials` row's secret is, as associated data.
pub fn credential_aad(access_key_id: &str) -> String {
    format!("credentials/{access_key_id}")
}

/// What a `server_secrets` row's value is, as associated data.
pub fn server_secret_aad(name: &str) -> String {
    format!("server_secrets/{name}")
}

/// Writes a key file (mode 0600) durably.
pub fn write_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    crate::journal::write_atomic_with_mode(path, text.as_bytes(), 0o600)
}

/// Fails, naming the key, when a secret in the store is sealed with a key
/// that is not in `ring` (a replica or command without the shared key).
pub async fn check_known(store: &super::store::Store, ring: &Keyring) -> Result<(), String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT access_key_id, secret_access_key FROM credentials UNION ALL SELECT name, secret FROM server_secrets",
    )
    .fetch_all(&store.pool)
    .await
    .map_err(|e| format!("reading the secrets: {e}"))?;
    for (name, stored) in rows {
        if let Some((id, _)) = stored.strip_prefix(SEALED).and_then(|rest| rest.split_once(':'))
            && !ring.keys.iter().any(|k| k.id == id)
        {
            return Err(SecretError::UnknownKey { what: name, key_id: id.to_string(), known: ring.ids() }.to_string());
        }
    }
    Ok(())
}

/// How many values [`reseal_all`] sealed again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Secret access keys.
    pub credentials: usize,
    /// Values of `server_secrets`.
    pub server_secrets: usize,
}

/// Seals again, with the first key, every secret in plain text or sealed
/// with another key of the ring. Each row is updated only if it still
/// holds the value read (replicas may do this at the same time). A value
/// sealed with a key not in the ring stops it with an error naming it.
pub async fn reseal_all(store: &super::store::Store, ring: &Keyring) -> Result<Resealed, String> {
    let mut done = Resealed::default();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT access_key_id, secret_access_key FROM credentials")
        .fetch_all(&store.pool)
        .await
        .map_err(|e| format!("reading credentials: {e}"))?;
    for (id, stored) in rows.into_iter().filter(|(_, s)| ring.needs_reseal(s)) {
        let what = credential_aad(&id);
        let plain = ring.open(&stored, &what).map_err(|e| e.to_string())?;
        let updated = sqlx::query(
            "UPDATE credentials SET secret_access_key = $1 WHERE access_key_id = $2 AND secret_access_key = $3",
        )
        .bind(ring.seal(&plain, &what))
        .bind(&id)
        .bind(&stored)
        .execute(&store.pool)
        .await
        .map_err(|e| format!("sealing {what}: {e}"))?;
        done.credentials += usize::try_from(updated.rows_affected()).unwrap_or(0);
    }
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, secret FROM server_secrets")
        .fetch_all(&store.pool)
        .await
        .map_err(|e| format!("reading server_secrets: {e}"))?;
    for (name, stored) in rows.into_iter().filter(|(_, s)| ring.needs_reseal(s)) {
        let what = server_secret_aad(&name);
        let plain = ring.open(&stored, &what).map_err(|e| e.to_string())?;
        let updated = sqlx::query("UPDATE server_secrets SET secret = $1 WHERE name = $2 AND secret = $3")
            .bind(ring.seal(&plain, &what))
            .bind(&name)
            .bind(&stored)
            .execute(&store.pool)
            .await
            .map_err(|e| format!("sealing {what}: {e}"))?;
        done.server_secrets += usize::try_from(updated.rows_affected()).unwrap_or(0);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &str) -> Keyring {
        Keyring::parse(keys, "test").unwrap()
    }

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_secret_opens_and_does_not_show() {
        let ring = ring(K1);
        let sealed = ring.seal("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "credentials/AKIA1");
        assert!(sealed.starts_with("enc1:"), "{sealed}");
        assert!(!sealed.contains("wJalr"), "{sealed}");
        assert_eq!(ring.open(&sealed, "credentials/AKIA1").unwrap(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert_ne!(sealed, ring.seal("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "credentials/AKIA1"), "fresh nonces");
    }

    #[test]
    fn a_sealed_secret_moved_to_another_row_or_damaged_does_not_open() {
        let ring = ring(K1);
        let sealed = ring.seal("secret", "credentials/AKIA1");
        assert_eq!(ring.open(&sealed, "credentials/AKIA2"), Err(SecretError::Corrupt("credentials/AKIA2".into())));
        let mut damaged = sealed.clone();
        damaged.replace_range(sealed.len() - 3.., "AAA");
        assert!(matches!(ring.open(&damaged, "credentials/AKIA1"), Err(SecretError::Corrupt(_))));
    }

    #[test]
    fn plain_text_from_older_versions_opens_as_is_and_needs_sealing() {
        let ring = ring(K1);
        assert_eq!(ring.open("oldsecret", "x").unwrap(), "oldsecret");
        assert!(ring.needs_reseal("oldsecret"));
        assert!(!ring.needs_reseal(&ring.seal("s", "x")));
    }

    #[test]
    fn a_keyring_opens_with_every_key_and_seals_with_the_first() {
        let old = ring(K1);
        let rotated = ring(&format!("{K2},{K1}"));
        let sealed_old = old.seal("s", "x");
        assert_eq!(rotated.open(&sealed_old, "x").unwrap(), "s");
        assert!(rotated.needs_reseal(&sealed_old));
        let sealed_new = rotated.seal("s", "x");
        assert!(!rotated.needs_reseal(&sealed_new));
        let error = old.open(&sealed_new, "x").unwrap_err();
        assert!(matches!(error, SecretError::UnknownKey { .. }), "{error}");
        assert!(error.to_string().contains(&key_id(&parse_key(K2, "t").unwrap())), "{error}");
    }

    #[test]
    fn bad_keys_are_refused_with_their_origin() {
        for bad in ["", "abc", &"zz".repeat(32), &format!("{K1}00")] {
            let error = Keyring::parse(bad, "EDGEDEPLOY_SECRETS_KEY").unwrap_err();
            assert!(error.to_string().contains("EDGEDEPLOY_SECRETS_KEY"), "{error}");
        }
    }
}
