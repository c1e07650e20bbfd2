//! Campaign reports: counts by final status, reach and acceptance rates.

use cnmas_proto::common::{FinalStatus, OfferDecision};
use cnmas_proto::results::{self as pb, results_service_server::ResultsService};
use cnmas_runtime::auth::{principal, Role};
use cnmas_runtime::service::Base;
use sqlx::Row;
use tonic::{Request, Response, Status};
use uuid::Uuid;

pub struct ReportApi {
    pub base: Base,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "results API failure");
    Status::internal("internal error")
}

#[tonic::async_trait]
impl ResultsService for ReportApi {
    async fn get_campaign_report(
        &self,
        req: Request<pb::GetCampaignReportRequest>,
    ) -> Result<Response<pb::CampaignReport>, Status> {
        let who = principal(&req)?;
        who.require(&[Role::Fund, Role::Supervisor, Role::Admin])?;
        let campaign_id = Uuid::parse_str(req.get_ref().campaign_id.trim())
            .map_err(|_| Status::invalid_argument("campaign_id: uuid: not a campaign id"))?;
        let pool = &self.base.pool;
        let rows = sqlx::query(
            "SELECT fund_code, final_status, count(*) AS n,
                    count(*) FILTER (WHERE offer_decision = $2) AS accepted,
                    sum(attempts) AS attempts
             FROM results WHERE campaign_id = $1 GROUP BY fund_code, final_status
             ORDER BY final_status",
        )
        .bind(campaign_id)
        .bind(OfferDecision::Accepted as i32)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
        let Some(fund) = rows.first().map(|r| r.get::<String, _>("fund_code")) else {
            return Err(Status::not_found("no result for this campaign yet"));
        };
        if !who.may_see_fund(&fund) {
            return Err(Status::not_found("no result for this campaign yet"));
        }
        let mut report = pb::CampaignReport {
            campaign_id: campaign_id.to_string(),
            fund_code: fund,
            ..Default::default()
        };
        let (mut held, mut refused, mut accepted, mut contacts) = (0u64, 0u64, 0u64, 0u64);
        for r in rows {
            let status: i32 = r.get("final_status");
            let n = r.get::<i64, _>("n") as u64;
            contacts += n;
            report.attempts += r.get::<Option<i64>, _>("attempts").unwrap_or(0) as u64;
            if status == FinalStatus::InterviewHeld as i32 {
                held += n;
                accepted += r.get::<i64, _>("accepted") as u64;
            }
            if status == FinalStatus::InterviewRefused as i32 {
                refused += n;
            }
            report.by_final_status.push(pb::StatusCount {
                final_status: status,
                count: n,
            });
        }
        report.contacts_closed = contacts;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        report.reach_rate = ratio(held + refused, contacts);
        report.acceptance_rate = ratio(accepted, held);
        Ok(Response::new(report))
    }
}
