//! Reveals a masked card field (the provisional AMELI code) of a leased call, for the dialer
//! only, once it checked the agent holds the lease. Every reveal is written to the card audit
//! trail (action `reveal`, with the field) before the value leaves the vault; the value itself
//! is never logged.

use crate::State;
use chrono::Utc;
use cnmas_domain::theme::{Field, Theme};
use cnmas_proto::intake as pb;
use cnmas_proto::support::timestamp;
use cnmas_runtime::auth::{principal, Role};
use sqlx::Row;
use std::collections::HashMap;
use tonic::{Request, Response, Status};
use uuid::Uuid;

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "card reveal failure");
    Status::internal("internal error")
}

/// The fields masked on the card, hence the only ones that can be revealed.
fn revealable(code: &str) -> Option<Field> {
    match code {
        "ameli_provisional_code" => Some(Field::AmeliProvisionalCode),
        _ => None,
    }
}

pub(crate) async fn reveal_card_field(
    state: &State,
    req: Request<pb::RevealCardFieldRequest>,
) -> Result<Response<pb::RevealedField>, Status> {
    principal(&req)?.require(&[Role::Service])?;
    let r = req.into_inner();
    let contact_id = Uuid::parse_str(r.contact_id.trim())
        .map_err(|_| Status::invalid_argument("contact_id: uuid: not a contact id"))?;
    let campaign_id = Uuid::parse_str(r.campaign_id.trim())
        .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?;
    let (agent_id, lease_id) = (r.agent_id.trim(), r.lease_id.trim());
    if agent_id.is_empty() || lease_id.is_empty() {
        return Err(Status::invalid_argument(
            "agent_id, lease_id: required: every reveal is audited",
        ));
    }
    let field = revealable(r.field.trim()).ok_or_else(|| {
        Status::invalid_argument("field: field.revealable: only ameli_provisional_code is masked")
    })?;
    let pool = &state.base.pool;
    let row = sqlx::query(
        "SELECT theme, key_id, nonce, sealed, ameli_code_erased_at IS NOT NULL AS erased
         FROM contacts WHERE contact_id = $1 AND campaign_id = $2",
    )
    .bind(contact_id)
    .bind(campaign_id)
    .fetch_optional(pool)
    .await
    .map_err(internal)?
    .ok_or_else(|| Status::not_found("no such contact in this campaign"))?;
    let theme = Theme::from_code(row.get("theme")).ok_or_else(|| internal("stored theme"))?;
    if !theme.spec().allows(field) {
        return Err(Status::failed_precondition(
            "field: field.not_in_theme: this campaign's cards have no such field",
        ));
    }
    if field == Field::AmeliProvisionalCode && row.get::<bool, _>("erased") {
        return Err(Status::failed_precondition(
            "field: field.erased: the provisional code was erased when its campaign ended",
        ));
    }
    let plain = state
        .vault
        .open(
            row.get("key_id"),
            contact_id.as_bytes(),
            row.get("nonce"),
            row.get("sealed"),
        )
        .map_err(internal)?;
    let stored: HashMap<String, String> = serde_json::from_slice(&plain).map_err(internal)?;
    let value = stored
        .get(field.code())
        .cloned()
        .ok_or_else(|| Status::not_found("field: field.absent: this contact has no such value"))?;
    let revealed_at = Utc::now();
    // Audited before the value is returned: no reveal without its trace.
    sqlx::query(
        "INSERT INTO card_audit (contact_id, campaign_id, agent_id, lease_id, action, field, at)
         VALUES ($1, $2, $3, $4, 'reveal', $5, $6)",
    )
    .bind(contact_id)
    .bind(campaign_id)
    .bind(agent_id)
    .bind(lease_id)
    .bind(field.code())
    .bind(revealed_at)
    .execute(pool)
    .await
    .map_err(internal)?;
    metrics::counter!("cnmas_intake_card_reveals_total").increment(1);
    Ok(Response::new(pb::RevealedField {
        field: field.code().to_string(),
        label: crate::api::label(field).to_string(),
        value,
        revealed_at: Some(timestamp(revealed_at)),
    }))
}
