//! What every service shares for the rights of the people called: the `PersonDataService` gRPC
//! API (subject access export, retention purge, purge log) around a service's own [`PersonData`]
//! implementation, the projection of when each campaign closed, the retention settings and the
//! purge schedule.
//!
//! Each service's migrations create the two tables used here (same definition everywhere):
//! `campaign_closures (campaign_id, fund_code, state, closed_at)` and
//! `purge_log (id, campaign_id, table_name, rows, actor, campaign_closed_at, at)`.

use crate::auth::{principal, Role};
use crate::config::parse_var;
use crate::service::Base;
use chrono::{DateTime, Utc};
use cnmas_bus::{BatchHandler, ConsumerSpec, HandlerError, Incoming, Outbox, Verdict};
use cnmas_proto::rights::{self as pb, person_data_service_server::PersonDataService};
use cnmas_proto::scheduler::{CampaignChanged, CampaignState};
use cnmas_proto::support::{from_timestamp, timestamp};
use prost::Message;
use sqlx::{PgConnection, PgPool, Row};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Retention periods and the purge schedule (README configuration table).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `CNMAS_RETENTION_CONTACT_DAYS` (default 1095, three years): contact-level data is purged
    /// this long after its campaign closed (CNIL: prospect data 3 years after the last contact;
    /// a campaign's last contact is at the latest its closure).
    pub contact_days: u32,
    /// `CNMAS_RETENTION_OPT_OUT_DAYS` (default 1095): an opt-out/opt-in entry of the consent
    /// register is kept at least this long after it was last changed.
    pub opt_out_days: u32,
    /// `CNMAS_PURGE_INTERVAL_SECONDS` (default 86400): how often each service runs the purge.
    pub purge_interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            contact_days: 1095,
            opt_out_days: 1095,
            purge_interval: Duration::from_secs(86_400),
        }
    }
}

impl Retention {
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Retention::default();
        let interval: u64 = parse_var("CNMAS_PURGE_INTERVAL_SECONDS", d.purge_interval.as_secs())?;
        if interval == 0 {
            anyhow::bail!("CNMAS_PURGE_INTERVAL_SECONDS must be at least 1");
        }
        Ok(Retention {
            contact_days: parse_var("CNMAS_RETENTION_CONTACT_DAYS", d.contact_days)?,
            opt_out_days: parse_var("CNMAS_RETENTION_OPT_OUT_DAYS", d.opt_out_days)?,
            purge_interval: Duration::from_secs(interval),
        })
    }
}

/// A campaign whose contact-level data has outlived its retention.
#[derive(Debug, Clone)]
pub struct ExpiredCampaign {
    pub campaign_id: Uuid,
    pub fund_code: String,
    pub closed_at: DateTime<Utc>,
}

/// Rows a purge removed from one table (`campaign_id` `None` for person-wide rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub campaign_id: Option<Uuid>,
    pub table: &'static str,
    pub rows: u64,
}

/// One service's share of the rights: what it holds about a person, and how it purges.
#[tonic::async_trait]
pub trait PersonData: Send + Sync + 'static {
    /// Everything held about these contacts (and person key), restricted to `fund` when given.
    async fn export(
        &self,
        pool: &PgPool,
        person_key: &str,
        contact_ids: &[Uuid],
        fund: Option<&str>,
    ) -> Result<Vec<pb::DataItem>, sqlx::Error>;

    /// Deletes (in `tx`) the contact-level rows of one expired campaign; returns the counts.
    async fn purge_campaign(
        &self,
        tx: &mut PgConnection,
        campaign: &ExpiredCampaign,
    ) -> Result<Vec<Purged>, sqlx::Error>;

    /// Deletes person-wide rows past their own retention (the consent register); most services
    /// hold none.
    async fn purge_person_wide(
        &self,
        _tx: &mut PgConnection,
        _now: DateTime<Utc>,
        _retention: &Retention,
    ) -> Result<Vec<Purged>, sqlx::Error> {
        Ok(Vec::new())
    }
}

/// Deletes a campaign's rows from each of `tables` (each has a `campaign_id` column), in the
/// order given (children before parents), and says how many went from each.
pub async fn delete_campaign_rows(
    tx: &mut PgConnection,
    campaign_id: Uuid,
    tables: &[&'static str],
) -> Result<Vec<Purged>, sqlx::Error> {
    let mut out = Vec::with_capacity(tables.len());
    for &table in tables {
        let rows = sqlx::query(&format!("DELETE FROM {table} WHERE campaign_id = $1"))
            .bind(campaign_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        out.push(Purged {
            campaign_id: Some(campaign_id),
            table,
            rows,
        });
    }
    Ok(out)
}

/// Deletes person-wide rows (no campaign) of each of `tables` whose `column` is before `cutoff`.
pub async fn delete_older_than(
    tx: &mut PgConnection,
    tables: &[&'static str],
    column: &str,
    cutoff: DateTime<Utc>,
) -> Result<Vec<Purged>, sqlx::Error> {
    let mut out = Vec::with_capacity(tables.len());
    for &table in tables {
        let rows = sqlx::query(&format!("DELETE FROM {table} WHERE {column} < $1"))
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        out.push(Purged {
            campaign_id: None,
            table,
            rows,
        });
    }
    Ok(out)
}

/// Builds an export item (`data` is the row as a JSON object). One argument per field of the
/// origin, in the order of `DataItem`, so every call site reads like the item it builds.
#[allow(clippy::too_many_arguments)]
pub fn item(
    service: &str,
    kind: &str,
    campaign_id: Option<Uuid>,
    fund_code: &str,
    contact_id: Option<Uuid>,
    recorded_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    data: serde_json::Value,
) -> pb::DataItem {
    pb::DataItem {
        service: service.to_string(),
        kind: kind.to_string(),
        campaign_id: campaign_id.map(|c| c.to_string()).unwrap_or_default(),
        fund_code: fund_code.to_string(),
        contact_id: contact_id.map(|c| c.to_string()).unwrap_or_default(),
        recorded_at: recorded_at.map(timestamp),
        updated_at: updated_at.map(timestamp),
        data_json: data.to_string(),
    }
}

/// Projects `CampaignChanged` into `campaign_closures`: the first time a campaign is seen
/// completed or cancelled, with the time of that change. Every service runs it (the scheduler
/// too, on its own events) so each knows when its rows expire.
pub struct CampaignClosures;

impl CampaignClosures {
    /// The durable consumer of a service's closure projection.
    pub fn spawn(base: &Base, consumer_name: &'static str) {
        base.spawn_consumer(
            ConsumerSpec::new(
                base.service,
                consumer_name,
                "cnmas.evt.v1.scheduler.campaign_changed",
            ),
            Arc::new(CampaignClosures),
        );
    }
}

impl BatchHandler for CampaignClosures {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming],
        _outbox: &mut Outbox,
    ) -> Result<Vec<Verdict>, HandlerError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for m in batch {
            let Ok(event) = CampaignChanged::decode(m.payload.clone()) else {
                verdicts.push(Verdict::DeadLetter("undecodable CampaignChanged".into()));
                continue;
            };
            verdicts.push(Verdict::Done);
            let Some(c) = event.campaign else { continue };
            let state = match CampaignState::try_from(c.state).unwrap_or_default() {
                CampaignState::Completed => "completed",
                CampaignState::Cancelled => "cancelled",
                _ => continue,
            };
            let Ok(id) = Uuid::parse_str(&c.campaign_id) else {
                continue;
            };
            let closed_at = c
                .updated_at
                .as_ref()
                .and_then(from_timestamp)
                .or_else(|| {
                    event
                        .envelope
                        .as_ref()
                        .and_then(|e| e.occurred_at.as_ref())
                        .and_then(from_timestamp)
                })
                .unwrap_or_else(Utc::now);
            // A closed campaign never reopens: the first closure seen is the one that counts.
            sqlx::query(
                "INSERT INTO campaign_closures (campaign_id, fund_code, state, closed_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (campaign_id) DO NOTHING",
            )
            .bind(id)
            .bind(&c.fund_code)
            .bind(state)
            .bind(closed_at)
            .execute(&mut *tx)
            .await?;
        }
        Ok(verdicts)
    }
}

/// Runs the purge of one service: every campaign closed before `now - contact retention`, then
/// the person-wide rows. Each campaign is purged and logged in its own transaction; a dry run
/// performs the same deletes and rolls them back, so its counts are exact.
pub async fn run_purge<P: PersonData + ?Sized>(
    base: &Base,
    data: &P,
    retention: &Retention,
    now: DateTime<Utc>,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<Purged>, sqlx::Error> {
    let cutoff = now - chrono::Duration::days(i64::from(retention.contact_days));
    let expired: Vec<ExpiredCampaign> = sqlx::query(
        "SELECT campaign_id, fund_code, closed_at FROM campaign_closures
         WHERE closed_at <= $1 ORDER BY closed_at",
    )
    .bind(cutoff)
    .fetch_all(&base.pool)
    .await?
    .into_iter()
    .map(|r| ExpiredCampaign {
        campaign_id: r.get("campaign_id"),
        fund_code: r.get("fund_code"),
        closed_at: r.get("closed_at"),
    })
    .collect();
    let mut all = Vec::new();
    for campaign in &expired {
        let mut tx = base.pool.begin().await?;
        let purged = data.purge_campaign(&mut tx, campaign).await?;
        let purged: Vec<Purged> = purged.into_iter().filter(|p| p.rows > 0).collect();
        if dry_run {
            tx.rollback().await?;
        } else {
            log(&mut tx, &purged, actor, Some(campaign.closed_at)).await?;
            tx.commit().await?;
        }
        all.extend(purged);
    }
    let mut tx = base.pool.begin().await?;
    let purged: Vec<Purged> = data
        .purge_person_wide(&mut tx, now, retention)
        .await?
        .into_iter()
        .filter(|p| p.rows > 0)
        .collect();
    if dry_run {
        tx.rollback().await?;
    } else {
        log(&mut tx, &purged, actor, None).await?;
        tx.commit().await?;
    }
    all.extend(purged);
    if !dry_run {
        let rows: u64 = all.iter().map(|p| p.rows).sum();
        metrics::counter!("cnmas_purged_rows_total").increment(rows);
        if rows > 0 {
            tracing::info!(service = base.service, rows, actor, "retention purge done");
        }
    }
    Ok(all)
}

async fn log(
    tx: &mut PgConnection,
    purged: &[Purged],
    actor: &str,
    closed_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    for p in purged {
        sqlx::query(
            "INSERT INTO purge_log (campaign_id, table_name, rows, actor, campaign_closed_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(p.campaign_id)
        .bind(p.table)
        .bind(p.rows as i64)
        .bind(actor)
        .bind(closed_at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Runs the purge every `retention.purge_interval` until shutdown (the first run one interval
/// after start, so a restart loop cannot purge repeatedly).
pub fn spawn_schedule<P: PersonData>(base: &Base, data: Arc<P>, retention: Retention) {
    let base = base.clone();
    let shutdown = base.shutdown.clone();
    base.tasks.clone().spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(retention.purge_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = run_purge(&base, data.as_ref(), &retention, Utc::now(), "schedule", false).await {
                tracing::warn!(service = base.service, error = %e, "retention purge failed; will retry");
            }
        }
    });
}

/// The `PersonDataService` of a service, around its [`PersonData`].
pub struct PersonDataApi<P> {
    pub base: Base,
    pub data: Arc<P>,
    pub retention: Retention,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "person data API failure");
    Status::internal("internal error")
}

/// Purge counts on the wire.
pub fn purged_to_proto(service: &str, purged: &[Purged]) -> Vec<pb::PurgedRows> {
    purged
        .iter()
        .map(|p| pb::PurgedRows {
            service: service.to_string(),
            campaign_id: p.campaign_id.map(|c| c.to_string()).unwrap_or_default(),
            table: p.table.to_string(),
            rows: p.rows,
        })
        .collect()
}

/// Reads a service's purge log (most recent first).
pub async fn list_purges(
    base: &Base,
    r: &pb::ListPurgesRequest,
) -> Result<Vec<pb::PurgeRecord>, Status> {
    let campaign = match r.campaign_id.trim() {
        "" => None,
        c => Some(
            Uuid::parse_str(c)
                .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?,
        ),
    };
    let limit = match r.limit {
        0 => 100,
        n => n.min(1000),
    } as i64;
    let rows = sqlx::query(
        "SELECT campaign_id, table_name, rows, actor, campaign_closed_at, at FROM purge_log
         WHERE ($1::uuid IS NULL OR campaign_id = $1) ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(campaign)
    .bind(limit)
    .fetch_all(&base.pool)
    .await
    .map_err(internal)?;
    Ok(rows
        .iter()
        .map(|r| pb::PurgeRecord {
            service: base.service.to_string(),
            campaign_id: r
                .get::<Option<Uuid>, _>("campaign_id")
                .map(|c| c.to_string())
                .unwrap_or_default(),
            table: r.get("table_name"),
            rows: r.get::<i64, _>("rows").max(0) as u64,
            at: Some(timestamp(r.get("at"))),
            actor: r.get("actor"),
            campaign_closed_at: r
                .get::<Option<DateTime<Utc>>, _>("campaign_closed_at")
                .map(timestamp),
        })
        .collect())
}

/// Parses the contact ids of an export request.
fn contact_ids(ids: &[String]) -> Result<Vec<Uuid>, Status> {
    ids.iter()
        .map(|c| {
            Uuid::parse_str(c.trim())
                .map_err(|_| Status::invalid_argument("contact_ids: uuid: not a contact id"))
        })
        .collect()
}

#[tonic::async_trait]
impl<P: PersonData> PersonDataService for PersonDataApi<P> {
    async fn export_person_data(
        &self,
        req: Request<pb::ExportPersonDataRequest>,
    ) -> Result<Response<pb::ExportPersonDataResponse>, Status> {
        principal(&req)?.require(&[Role::Service, Role::Admin])?;
        let r = req.into_inner();
        let person_key = r.person_key.trim();
        if person_key.is_empty() {
            return Err(Status::invalid_argument(
                "person_key: required: the person key resolved by intake",
            ));
        }
        let ids = contact_ids(&r.contact_ids)?;
        let fund = Some(r.fund_code.trim()).filter(|f| !f.is_empty());
        let items = self
            .data
            .export(&self.base.pool, person_key, &ids, fund)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ExportPersonDataResponse { items }))
    }

    async fn purge_expired(
        &self,
        req: Request<pb::PurgeExpiredRequest>,
    ) -> Result<Response<pb::PurgeExpiredResponse>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Service, Role::Admin])?;
        let dry_run = req.get_ref().dry_run;
        let now = Utc::now();
        let purged = run_purge(
            &self.base,
            self.data.as_ref(),
            &self.retention,
            now,
            &who.subject,
            dry_run,
        )
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::PurgeExpiredResponse {
            service: self.base.service.to_string(),
            dry_run,
            at: Some(timestamp(now)),
            purged: purged_to_proto(self.base.service, &purged),
        }))
    }

    async fn list_purges(
        &self,
        req: Request<pb::ListPurgesRequest>,
    ) -> Result<Response<pb::ListPurgesResponse>, Status> {
        principal(&req)?.require(&[Role::Auditor, Role::Admin, Role::Service])?;
        let purges = list_purges(&self.base, req.get_ref()).await?;
        Ok(Response::new(pb::ListPurgesResponse { purges }))
    }
}

/// The tonic service of a service's [`PersonData`], behind the bearer-token interceptor.
pub fn server<P: PersonData>(
    base: &Base,
    data: Arc<P>,
    retention: Retention,
) -> tonic::service::interceptor::InterceptedService<
    pb::person_data_service_server::PersonDataServiceServer<PersonDataApi<P>>,
    impl tonic::service::Interceptor + Clone,
> {
    pb::person_data_service_server::PersonDataServiceServer::with_interceptor(
        PersonDataApi {
            base: base.clone(),
            data,
            retention,
        },
        base.auth.interceptor(),
    )
}

/// Starts a service's part of the rights: the closure projection and the purge schedule.
/// Returns the gRPC service to add to its router.
pub fn start<P: PersonData>(
    base: &Base,
    data: Arc<P>,
    retention: Retention,
    closures_consumer: &'static str,
) -> tonic::service::interceptor::InterceptedService<
    pb::person_data_service_server::PersonDataServiceServer<PersonDataApi<P>>,
    impl tonic::service::Interceptor + Clone,
> {
    CampaignClosures::spawn(base, closures_consumer);
    spawn_schedule(base, data.clone(), retention);
    server(base, data, retention)
}
