//! The personal-data vault: AES-256-GCM sealing of a contact's personal fields, with the key id
//! stored beside each record so keys can rotate.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault keys must be `id:base64(32 bytes)` separated by commas")]
    BadKeySpec,
    #[error("the active vault key id is not among the keys")]
    UnknownActiveKey,
    #[error("no key with the record's key id")]
    UnknownKey,
    #[error("sealing or opening failed")]
    Crypto,
}

/// Keys by id; new records are sealed with the active one, old ones open with theirs.
#[derive(Clone)]
pub struct Vault {
    keys: HashMap<String, Aes256Gcm>,
    active: String,
}

impl Vault {
    /// `keys`: `k1:BASE64,k2:BASE64` (32-byte keys); `active`: the id sealing new records.
    pub fn new(keys: &str, active: &str) -> Result<Self, VaultError> {
        let mut map = HashMap::new();
        for spec in keys.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = spec.split_once(':').ok_or(VaultError::BadKeySpec)?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| VaultError::BadKeySpec)?;
            if raw.len() != 32 || id.trim().is_empty() {
                return Err(VaultError::BadKeySpec);
            }
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| VaultError::BadKeySpec)?;
            map.insert(id.trim().to_string(), cipher);
        }
        if !map.contains_key(active) {
            return Err(VaultError::UnknownActiveKey);
        }
        Ok(Vault {
            keys: map,
            active: active.to_string(),
        })
    }

    /// Seals `plaintext`, bound to `record_id` (as associated data) so a sealed value cannot be
    /// moved to another record. Returns (key id, nonce, ciphertext).
    pub fn seal(
        &self,
        record_id: &[u8],
        plaintext: &[u8],
    ) -> Result<(String, Vec<u8>, Vec<u8>), VaultError> {
        let cipher = self.keys.get(&self.active).ok_or(VaultError::UnknownKey)?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: record_id,
                },
            )
            .map_err(|_| VaultError::Crypto)?;
        Ok((self.active.clone(), nonce.to_vec(), sealed))
    }

    pub fn open(
        &self,
        key_id: &str,
        record_id: &[u8],
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let cipher = self.keys.get(key_id).ok_or(VaultError::UnknownKey)?;
        if nonce.len() != 12 {
            return Err(VaultError::Crypto);
        }
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: record_id,
                },
            )
            .map_err(|_| VaultError::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([b; 32])
    }

    #[test]
    fn seals_and_opens_and_rotates() {
        let old = Vault::new(&format!("k1:{}", key(1)), "k1").unwrap();
        let (kid, nonce, sealed) = old.seal(b"contact-1", b"{\"nir\":\"x\"}").unwrap();
        assert_eq!(kid, "k1");
        assert!(!sealed.windows(3).any(|w| w == b"nir"));
        // After rotation, new records use k2 and old ones still open with k1.
        let new = Vault::new(&format!("k1:{},k2:{}", key(1), key(2)), "k2").unwrap();
        assert_eq!(
            new.open(&kid, b"contact-1", &nonce, &sealed).unwrap(),
            b"{\"nir\":\"x\"}"
        );
        assert_eq!(new.seal(b"c", b"x").unwrap().0, "k2");
    }

    #[test]
    fn a_sealed_value_cannot_move_to_another_record_or_be_altered() {
        let v = Vault::new(&format!("k1:{}", key(1)), "k1").unwrap();
        let (kid, nonce, mut sealed) = v.seal(b"contact-1", b"secret").unwrap();
        assert!(v.open(&kid, b"contact-2", &nonce, &sealed).is_err());
        sealed[0] ^= 1;
        assert!(v.open(&kid, b"contact-1", &nonce, &sealed).is_err());
        assert!(v.open("k9", b"contact-1", &nonce, &sealed).is_err());
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(Vault::new("k1:short", "k1").is_err());
        assert!(Vault::new(&format!("k1:{}", key(1)), "k2").is_err());
        assert!(Vault::new("nonsense", "k1").is_err());
    }
}
