//! The provisional AMELI code is a credential: once its campaign is completed or cancelled
//! nobody may call with it, so it is erased from the vault. Each sealed record is opened, the
//! code removed and the rest sealed again under a fresh nonce (and the active key); the contact
//! keeps everything else. Campaigns still holding codes are found from the projection, so a
//! contact stored late, or a failure half-way, is caught on the next pass. How many codes each
//! campaign had erased is recorded in `ameli_code_erasures`.

use crate::State;
use cnmas_domain::theme::Field;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records re-sealed per transaction.
const CHUNK: i64 = 500;
/// How often closed campaigns are looked for.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ErasureError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("vault: {0}")]
    Vault(#[from] crate::vault::VaultError),
    #[error("sealed record is not a field map")]
    Format,
}

/// Erases the codes of closed campaigns until shutdown.
pub(crate) async fn run(state: Arc<State>, shutdown: CancellationToken) {
    loop {
        match erase_closed_campaigns(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(contacts = n, "provisional AMELI codes erased"),
            Err(e) => tracing::warn!(error = %e, "erasing AMELI codes failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass over every completed or cancelled campaign that still holds codes.
pub(crate) async fn erase_closed_campaigns(state: &State) -> Result<u64, ErasureError> {
    let campaigns = sqlx::query(
        "SELECT k.campaign_id, k.state FROM campaigns k
         WHERE k.state IN ('completed', 'cancelled') AND EXISTS (
             SELECT 1 FROM contacts c WHERE c.campaign_id = k.campaign_id
               AND c.theme = 'ameli_activation' AND c.ameli_code_erased_at IS NULL)",
    )
    .fetch_all(&state.base.pool)
    .await?;
    let mut total = 0;
    for c in campaigns {
        let (id, campaign_state): (Uuid, String) = (c.get("campaign_id"), c.get("state"));
        loop {
            let (seen, erased) = erase_chunk(state, id, &campaign_state).await?;
            total += erased;
            if seen < CHUNK as u64 || erased == 0 {
                break;
            }
        }
    }
    Ok(total)
}

/// Re-seals up to [`CHUNK`] contacts of a campaign without their code, in one transaction.
/// Returns (records looked at, records erased).
async fn erase_chunk(
    state: &State,
    campaign_id: Uuid,
    campaign_state: &str,
) -> Result<(u64, u64), ErasureError> {
    let mut tx = state.base.pool.begin().await?;
    let rows = sqlx::query(
        "SELECT contact_id, key_id, nonce, sealed FROM contacts
         WHERE campaign_id = $1 AND theme = 'ameli_activation' AND ameli_code_erased_at IS NULL
         LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(campaign_id)
    .bind(CHUNK)
    .fetch_all(&mut *tx)
    .await?;
    let seen = rows.len() as u64;
    let (mut ids, mut key_ids, mut nonces, mut sealed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let contact_id: Uuid = r.get("contact_id");
        match reseal_without_code(state, contact_id, &r) {
            Ok((k, n, s)) => {
                ids.push(contact_id);
                key_ids.push(k);
                nonces.push(n);
                sealed.push(s);
            }
            // Left for the next pass and counted; never the content in the log.
            Err(e) => {
                metrics::counter!("cnmas_intake_ameli_erasure_failures_total").increment(1);
                tracing::warn!(%contact_id, error = %e, "cannot erase this contact's AMELI code");
            }
        }
    }
    let erased = ids.len() as u64;
    if erased > 0 {
        sqlx::query(
            "UPDATE contacts c SET key_id = x.k, nonce = x.n, sealed = x.s,
                 ameli_code_erased_at = now()
             FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[]) AS x(id, k, n, s)
             WHERE c.contact_id = x.id",
        )
        .bind(&ids)
        .bind(&key_ids)
        .bind(&nonces)
        .bind(&sealed)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ameli_code_erasures (campaign_id, campaign_state, contacts)
             VALUES ($1, $2, $3)
             ON CONFLICT (campaign_id) DO UPDATE SET
                 contacts = ameli_code_erasures.contacts + EXCLUDED.contacts,
                 campaign_state = EXCLUDED.campaign_state, last_at = now()",
        )
        .bind(campaign_id)
        .bind(campaign_state)
        .bind(erased as i64)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    metrics::counter!("cnmas_intake_ameli_codes_erased_total").increment(erased);
    Ok((seen, erased))
}

fn reseal_without_code(
    state: &State,
    contact_id: Uuid,
    r: &sqlx::postgres::PgRow,
) -> Result<(String, Vec<u8>, Vec<u8>), ErasureError> {
    let plain = state.vault.open(
        r.get("key_id"),
        contact_id.as_bytes(),
        r.get("nonce"),
        r.get("sealed"),
    )?;
    let mut fields: HashMap<String, String> =
        serde_json::from_slice(&plain).map_err(|_| ErasureError::Format)?;
    fields.remove(Field::AmeliProvisionalCode.code());
    let plain = serde_json::to_vec(&fields).map_err(|_| ErasureError::Format)?;
    Ok(state.vault.seal(contact_id.as_bytes(), &plain)?)
}
