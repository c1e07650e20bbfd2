//! Console passwords: argon2id hashes, checked with the same cost whether or not the identifier
//! exists, and consecutive failures lock the identifier for a while.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use sqlx::{PgPool, Row};
use std::sync::OnceLock;
use tonic::Status;

/// The one answer to every refused sign-in: it says nothing of which part was wrong.
pub const REFUSED: &str = "sign_in: credentials.refused: identifier or password incorrect, or too many attempts; try again later";

/// Consecutive failures that lock an identifier, and for how long.
pub const MAX_FAILURES: i32 = 5;
pub const LOCK_MINUTES: i32 = 15;

const MIN_LEN: usize = 12;
const MAX_LEN: usize = 128;

pub fn check_password_rules(password: &str) -> Result<(), Status> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) || password.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "password: password.length: {MIN_LEN} to {MAX_LEN} characters, no control characters"
        )));
    }
    Ok(())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "credentials failure");
    Status::internal("internal error")
}

fn hash_blocking(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password, &salt)?
        .to_string())
}

/// Hashes off the async threads: argon2 is deliberately slow.
pub async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || hash_blocking(password.as_bytes()))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// A hash of nothing anyone knows, verified when the identifier has no password, so unknown
/// identifiers cost as much as wrong passwords.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let secret = uuid::Uuid::new_v4();
        hash_blocking(secret.as_bytes()).unwrap_or_default()
    })
}

async fn matches(hash: Option<String>, password: String) -> Result<bool, Status> {
    tokio::task::spawn_blocking(move || {
        let real = hash.is_some();
        let stored = hash.unwrap_or_else(|| decoy_hash().to_string());
        let ok = PasswordHash::new(&stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        real && ok
    })
    .await
    .map_err(internal)
}

/// Whether `password` is the agent's; counts failures and honours the lock.
pub async fn verify(pool: &PgPool, agent_id: &str, password: String) -> Result<bool, Status> {
    let row = if agent_id.is_empty() {
        None
    } else {
        sqlx::query(
            "SELECT password_hash, coalesce(sign_in_locked_until > now(), false) AS locked
             FROM agents WHERE agent_id = $1",
        )
        .bind(agent_id)
        .fetch_optional(pool)
        .await
        .map_err(internal)?
    };
    let (hash, locked) = match &row {
        Some(r) => (r.get::<Option<String>, _>("password_hash"), r.get("locked")),
        None => (None, false),
    };
    // A locked identifier still pays the verification, so the lock is not observable by timing.
    let ok = matches(if locked { None } else { hash }, password).await? && !locked;
    if row.is_some() && !locked {
        let sql = if ok {
            "UPDATE agents SET failed_sign_ins = 0, sign_in_locked_until = NULL WHERE agent_id = $1"
        } else {
            "UPDATE agents SET
                 failed_sign_ins = CASE WHEN failed_sign_ins + 1 >= $2 THEN 0
                                        ELSE failed_sign_ins + 1 END,
                 sign_in_locked_until = CASE WHEN failed_sign_ins + 1 >= $2
                                             THEN now() + make_interval(mins => $3) END
             WHERE agent_id = $1"
        };
        sqlx::query(sql)
            .bind(agent_id)
            .bind(MAX_FAILURES)
            .bind(LOCK_MINUTES)
            .execute(pool)
            .await
            .map_err(internal)?;
    }
    metrics::counter!("cnmas_dialer_sign_ins_total", "result" => if ok { "accepted" } else { "refused" })
        .increment(1);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(check_password_rules("short").is_err());
        assert!(check_password_rules("a long enough passphrase").is_ok());
        assert!(check_password_rules("with a\ncontrol char").is_err());
        assert!(check_password_rules(&"x".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let h = hash_password("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(matches(Some(h.clone()), "correct horse battery".into())
            .await
            .unwrap());
        assert!(!matches(Some(h), "wrong horse battery".into())
            .await
            .unwrap());
        assert!(!matches(None, "anything at all".into()).await.unwrap());
    }
}
