//! The intake gRPC API: the call cards of leased calls, for the dialer only, audited.

use crate::State;
use chrono::{DateTime, Utc};
use cnmas_domain::geo::Territory;
use cnmas_domain::phone::FrenchPhone;
use cnmas_domain::theme::{Field, Theme};
use cnmas_proto::intake::{self as pb, intake_service_server::IntakeService};
use cnmas_proto::support::{theme_to_proto, timestamp};
use cnmas_runtime::auth::{principal, Role};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct IntakeApi {
    pub state: Arc<State>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "intake API failure");
    Status::internal("internal error")
}

/// French labels shown to agents.
pub(crate) fn label(field: Field) -> &'static str {
    match field {
        Field::Nir => "NIR",
        Field::LastName => "Nom",
        Field::FirstName => "Prénom",
        Field::BirthDate => "Date de naissance",
        Field::PostalAddress => "Adresse postale",
        Field::Postcode => "Code postal",
        Field::Phone => "Téléphone",
        Field::Email => "Courriel",
        Field::ChildLastName => "Nom de l'enfant",
        Field::ChildFirstName => "Prénom de l'enfant",
        Field::ChildAge => "Âge de l'enfant",
        Field::ChildBirthDate => "Date de naissance de l'enfant",
        Field::FluVaccinated => "Déjà vacciné(e) contre la grippe",
        Field::EbdEntitlementEnd => "Fin de droit à l'examen bucco-dentaire",
        Field::AmeliProvisionalCode => "Code provisoire ameli",
        Field::PsNumber => "Numéro de professionnel de santé",
        Field::PracticeSoftware => "Logiciel métier",
        Field::TeleservicesUsageRate => "Taux d'usage des téléservices",
        Field::CompanyName => "Raison sociale",
        Field::Siret => "SIRET",
        Field::CorrespondentName => "Correspondant",
    }
}

/// What the card shows once the provisional AMELI code was erased at the campaign's end.
pub const AMELI_CODE_ERASED: &str = "effacé à la fin de la campagne";

fn erased_on_card(field: Field, code_erased: bool) -> bool {
    code_erased && field == Field::AmeliProvisionalCode
}

/// Fields an agent never sees on the card: the identifiers serve matching, not the call.
fn shown_on_card(field: Field) -> bool {
    !matches!(field, Field::Nir | Field::Phone)
}

const ALL_FIELDS: [Field; 21] = [
    Field::LastName,
    Field::FirstName,
    Field::BirthDate,
    Field::CompanyName,
    Field::CorrespondentName,
    Field::Siret,
    Field::PsNumber,
    Field::PracticeSoftware,
    Field::TeleservicesUsageRate,
    Field::ChildFirstName,
    Field::ChildLastName,
    Field::ChildBirthDate,
    Field::ChildAge,
    Field::EbdEntitlementEnd,
    Field::FluVaccinated,
    Field::AmeliProvisionalCode,
    Field::Email,
    Field::PostalAddress,
    Field::Postcode,
    Field::Nir,
    Field::Phone,
];

/// The most cards one request may ask for: a lease batch of the dialer.
const MAX_CARDS: usize = 256;

#[derive(Default)]
struct CardColumns<'a> {
    contacts: Vec<Uuid>,
    campaigns: Vec<Uuid>,
    agents: Vec<&'a str>,
    leases: Vec<&'a str>,
}

impl IntakeApi {
    /// The card of one contact row: its sealed details opened, only what its theme needs.
    fn card(&self, row: &PgRow, viewed_at: DateTime<Utc>) -> Result<pb::CallCard, Status> {
        let contact_id: Uuid = row.get("contact_id");
        let theme = Theme::from_code(row.get("theme")).ok_or_else(|| internal("stored theme"))?;
        let plain = self
            .state
            .vault
            .open(
                row.get("key_id"),
                contact_id.as_bytes(),
                row.get("nonce"),
                row.get("sealed"),
            )
            .map_err(internal)?;
        let stored: HashMap<String, String> = serde_json::from_slice(&plain).map_err(internal)?;

        let code_erased: bool = row.get("erased");
        let spec = theme.spec();
        let get = |f: Field| stored.get(f.code()).cloned().unwrap_or_default();
        let display_name = match theme.population() {
            cnmas_domain::theme::Population::Employer => get(Field::CompanyName),
            _ => format!("{} {}", get(Field::FirstName), get(Field::LastName))
                .trim()
                .to_string(),
        };
        let phone = get(Field::Phone);
        let home: Option<Territory> = row.get::<String, _>("territory").parse().ok();
        let phone_territory = FrenchPhone::parse(&phone, home)
            .map(|p| p.territory().code().to_string())
            .unwrap_or_default();
        let fields = ALL_FIELDS
            .into_iter()
            .filter(|f| {
                spec.allows(*f)
                    && shown_on_card(*f)
                    && (stored.contains_key(f.code()) || erased_on_card(*f, code_erased))
            })
            .map(|f| {
                // The agent learns the code is gone rather than meeting an empty field.
                if erased_on_card(f, code_erased) {
                    return pb::CardField {
                        field: f.code().to_string(),
                        label: label(f).to_string(),
                        value: AMELI_CODE_ERASED.into(),
                        masked: false,
                    };
                }
                let masked = f == Field::AmeliProvisionalCode;
                pb::CardField {
                    field: f.code().to_string(),
                    label: label(f).to_string(),
                    value: if masked {
                        "••••••".into()
                    } else {
                        get(f)
                    },
                    masked,
                }
            })
            .collect();
        Ok(pb::CallCard {
            contact_id: contact_id.to_string(),
            theme: theme_to_proto(theme) as i32,
            display_name,
            phone,
            phone_territory,
            fields,
            viewed_at: Some(timestamp(viewed_at)),
        })
    }
}

#[tonic::async_trait]
impl IntakeService for IntakeApi {
    async fn get_call_cards(
        &self,
        req: Request<pb::GetCallCardsRequest>,
    ) -> Result<Response<pb::GetCallCardsResponse>, Status> {
        let started = Instant::now();
        let who = principal(&req)?;
        who.require(&[Role::Service])?;
        let wanted = req.into_inner().cards;
        if wanted.is_empty() || wanted.len() > MAX_CARDS {
            return Err(Status::invalid_argument(format!(
                "cards: count: 1 to {MAX_CARDS} cards a request"
            )));
        }
        let mut columns = CardColumns::default();
        for (i, r) in wanted.iter().enumerate() {
            let id = |field: &str, value: &str, what: &str| {
                Uuid::parse_str(value).map_err(|_| {
                    Status::invalid_argument(format!("cards[{i}].{field}: uuid: not a {what} id"))
                })
            };
            columns
                .contacts
                .push(id("contact_id", &r.contact_id, "contact")?);
            columns
                .campaigns
                .push(id("campaign_id", &r.campaign_id, "campaign")?);
            if r.agent_id.trim().is_empty() || r.lease_id.trim().is_empty() {
                return Err(Status::invalid_argument(format!(
                    "cards[{i}].agent_id, cards[{i}].lease_id: required: every card view is audited"
                )));
            }
            columns.agents.push(r.agent_id.trim());
            columns.leases.push(r.lease_id.trim());
        }
        // The views are audited by the statement that reads the cards: one round trip, and no
        // card leaves without its audit row committed. Each contact is looked up on its own
        // (the LIMIT keeps the subquery a lookup of the key, whatever the table's statistics).
        let viewed_at = Utc::now();
        let rows = sqlx::query(
            "WITH wanted AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[])
                     WITH ORDINALITY AS w(contact_id, campaign_id, agent_id, lease_id, n)),
             card AS (
                 SELECT w.n, w.contact_id, w.campaign_id, w.agent_id, w.lease_id, c.* FROM wanted w
                 CROSS JOIN LATERAL (
                     SELECT theme, territory, key_id, nonce, sealed,
                            ameli_code_erased_at IS NOT NULL AS erased
                     FROM contacts
                     WHERE contact_id = w.contact_id AND campaign_id = w.campaign_id LIMIT 1) c),
             audit AS (
                 INSERT INTO card_audit (contact_id, campaign_id, agent_id, lease_id, action, at)
                 SELECT contact_id, campaign_id, agent_id, lease_id, 'view', $5 FROM card)
             SELECT n, contact_id, theme, territory, key_id, nonce, sealed, erased FROM card",
        )
        .bind(&columns.contacts)
        .bind(&columns.campaigns)
        .bind(&columns.agents)
        .bind(&columns.leases)
        .bind(viewed_at)
        .fetch_all(&self.state.base.pool)
        .await
        .map_err(internal)?;
        let mut cards = vec![pb::CallCardResult { card: None }; wanted.len()];
        for row in &rows {
            let n: i64 = row.get("n");
            let slot = usize::try_from(n - 1)
                .ok()
                .and_then(|i| cards.get_mut(i))
                .ok_or_else(|| internal("card ordinality"))?;
            slot.card = Some(self.card(row, viewed_at)?);
        }
        metrics::counter!("cnmas_intake_card_views_total").increment(rows.len() as u64);
        metrics::histogram!("cnmas_intake_call_cards_seconds").record(started.elapsed());
        Ok(Response::new(pb::GetCallCardsResponse { cards }))
    }

    async fn reveal_card_field(
        &self,
        req: Request<pb::RevealCardFieldRequest>,
    ) -> Result<Response<pb::RevealedField>, Status> {
        crate::reveal::reveal_card_field(&self.state, req).await
    }

    async fn list_card_views(
        &self,
        req: Request<pb::ListCardViewsRequest>,
    ) -> Result<Response<pb::ListCardViewsResponse>, Status> {
        principal(&req)?.require(&[Role::Auditor, Role::Admin])?;
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        } as i64;
        let (contact, agent): (Option<Uuid>, Option<String>) =
            match r.subject {
                Some(pb::list_card_views_request::Subject::ContactId(c)) => (
                    Some(Uuid::parse_str(c.trim()).map_err(|_| {
                        Status::invalid_argument("contact_id: uuid: not a contact id")
                    })?),
                    None,
                ),
                Some(pb::list_card_views_request::Subject::AgentId(a)) if !a.trim().is_empty() => {
                    (None, Some(a.trim().to_string()))
                }
                _ => {
                    return Err(Status::invalid_argument(
                        "subject: required: a contact_id or an agent_id",
                    ))
                }
            };
        let rows = sqlx::query(
            "SELECT contact_id, campaign_id, agent_id, lease_id, action, field, at FROM card_audit
             WHERE ($1::uuid IS NULL OR contact_id = $1) AND ($2::text IS NULL OR agent_id = $2)
             ORDER BY at DESC, id DESC LIMIT $3",
        )
        .bind(contact)
        .bind(agent)
        .bind(limit)
        .fetch_all(&self.state.base.pool)
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::ListCardViewsResponse {
            views: rows
                .iter()
                .map(|r| pb::CardView {
                    contact_id: r.get::<Uuid, _>("contact_id").to_string(),
                    campaign_id: r.get::<Uuid, _>("campaign_id").to_string(),
                    agent_id: r.get("agent_id"),
                    lease_id: r.get("lease_id"),
                    action: r.get("action"),
                    at: Some(timestamp(r.get("at"))),
                    field: r.get("field"),
                })
                .collect(),
        }))
    }
}
