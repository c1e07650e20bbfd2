//! The pseudonymous person key: a keyed HMAC-SHA256 of a person's normalised identifier, so
//! consent and contact pressure match the same person across campaigns and funds without any
//! service but intake holding the identifier.

use crate::company::{Siret, SiretError};
use crate::nir::{Nir, NirError};
use crate::professional::{PsNumber, PsNumberError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What identifies a person, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The 13-character body of a NIR/NIA (the key is left out, so 13- and 15-character forms
    /// of the same number match).
    Nir(String),
    /// A health professional's RPPS or ADELI / AM number.
    Ps(String),
    /// An employer's establishment.
    Siret(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Nir(#[from] NirError),
    #[error(transparent)]
    Ps(#[from] PsNumberError),
    #[error(transparent)]
    Siret(#[from] SiretError),
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Nir(e) => e.code(),
            IdentityError::Ps(e) => e.code(),
            IdentityError::Siret(e) => e.code(),
        }
    }
}

impl Identity {
    pub fn nir(input: &str) -> Result<Self, IdentityError> {
        Ok(Identity::Nir(Nir::parse(input)?.body().to_string()))
    }

    pub fn ps(input: &str) -> Result<Self, IdentityError> {
        Ok(Identity::Ps(PsNumber::parse(input)?.as_str().to_string()))
    }

    pub fn siret(input: &str) -> Result<Self, IdentityError> {
        Ok(Identity::Siret(Siret::parse(input)?.as_str().to_string()))
    }

    fn parts(&self) -> (&'static str, &str) {
        match self {
            Identity::Nir(s) => ("nir", s),
            Identity::Ps(s) => ("ps", s),
            Identity::Siret(s) => ("siret", s),
        }
    }
}

/// Computes person keys with the shared secret (`CNMAS_PERSON_KEY_SECRET`).
#[derive(Clone)]
pub struct PersonKeyer(Hmac<Sha256>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the person-key secret must be at least 32 bytes")]
pub struct WeakSecret;

impl PersonKeyer {
    pub fn new(secret: &str) -> Result<Self, WeakSecret> {
        if secret.len() < 32 {
            return Err(WeakSecret);
        }
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .map(PersonKeyer)
            .map_err(|_| WeakSecret)
    }

    /// Hex HMAC-SHA256 of `kind:identifier`.
    pub fn key(&self, identity: &Identity) -> String {
        let (kind, id) = identity.parts();
        let mut mac = self.0.clone();
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "person-key-secret-person-key-secret";

    #[test]
    fn the_same_person_has_the_same_key_whatever_the_typing() {
        let k = PersonKeyer::new(SECRET).unwrap();
        let a = k.key(&Identity::nir("2 55 08 14 168 025 38").unwrap());
        let b = k.key(&Identity::nir("2550814168025").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn keys_depend_on_the_secret_and_the_kind() {
        let k = PersonKeyer::new(SECRET).unwrap();
        let other = PersonKeyer::new("another-secret-another-secret-xxxx").unwrap();
        let id = Identity::nir("255081416802538").unwrap();
        assert_ne!(k.key(&id), other.key(&id));
        assert_ne!(
            k.key(&Identity::Ps("123456789".into())),
            k.key(&Identity::Siret("123456789".into()))
        );
        assert!(PersonKeyer::new("short").is_err());
        assert!(Identity::nir("2 55 08 14 168 025 00").is_err());
    }
}
