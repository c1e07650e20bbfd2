//! Campaign reports: counts by final status, reach and acceptance rates.

use cnmas_proto::common::{FinalStatus, OfferDecision};
use cnmas_proto::results::{self as pb, results_service_server::ResultsService};
use cnmas_runtime::auth::{principal, Role};
use cnmas_runtime::service::Base;
use sqlx::Row;
use std::collections::BTreeMap;
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
        // One pass over the campaign's results (kept, anonymised, after the retention purge, so
        // a report never changes): the finest grouping, folded into every view below.
        let rows = sqlx::query(
            "SELECT fund_code,
                    to_char((published_at AT TIME ZONE 'Europe/Paris')::date, 'YYYY-MM-DD') AS day,
                    final_status, offer_decision, attempts, count(*) AS n
             FROM results WHERE campaign_id = $1
             GROUP BY fund_code, day, final_status, offer_decision, attempts
             ORDER BY day, final_status",
        )
        .bind(campaign_id)
        .fetch_all(&self.base.pool)
        .await
        .map_err(internal)?;
        let Some(fund) = rows.first().map(|r| r.get::<String, _>("fund_code")) else {
            return Err(Status::not_found("no result for this campaign yet"));
        };
        if !who.may_see_fund(&fund) {
            return Err(Status::not_found("no result for this campaign yet"));
        }
        let groups = rows.iter().map(|r| Group {
            day: r.get("day"),
            final_status: r.get("final_status"),
            offer_decision: r.get("offer_decision"),
            attempts: r.get::<i32, _>("attempts").max(0) as u32,
            contacts: r.get::<i64, _>("n") as u64,
        });
        let mut report = build_report(groups);
        report.campaign_id = campaign_id.to_string();
        report.fund_code = fund;
        Ok(Response::new(report))
    }
}

/// Results that share a day, a final status, an offer decision and a number of attempts.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    day: String,
    final_status: i32,
    offer_decision: i32,
    attempts: u32,
    contacts: u64,
}

fn build_report(groups: impl Iterator<Item = Group>) -> pb::CampaignReport {
    let held = FinalStatus::InterviewHeld as i32;
    let refused = FinalStatus::InterviewRefused as i32;
    let accepted = OfferDecision::Accepted as i32;
    let mut by_status: BTreeMap<i32, u64> = BTreeMap::new();
    let mut by_offer: BTreeMap<i32, u64> = BTreeMap::new();
    let mut by_attempts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut by_day: BTreeMap<String, (pb::DayReport, BTreeMap<i32, u64>)> = BTreeMap::new();
    let mut report = pb::CampaignReport::default();
    let (mut interviews, mut reached, mut offers_accepted) = (0u64, 0u64, 0u64);
    for g in groups {
        let attempts = u64::from(g.attempts) * g.contacts;
        report.contacts_closed += g.contacts;
        report.attempts += attempts;
        *by_status.entry(g.final_status).or_default() += g.contacts;
        *by_attempts.entry(g.attempts).or_default() += g.contacts;
        if g.final_status == held {
            interviews += g.contacts;
            *by_offer.entry(g.offer_decision).or_default() += g.contacts;
        }
        if g.final_status == held || g.final_status == refused {
            reached += g.contacts;
        }
        let is_accepted = g.final_status == held && g.offer_decision == accepted;
        if is_accepted {
            offers_accepted += g.contacts;
        }
        let (day, statuses) = by_day.entry(g.day.clone()).or_insert_with(|| {
            (
                pb::DayReport {
                    date: g.day.clone(),
                    ..Default::default()
                },
                BTreeMap::new(),
            )
        });
        day.contacts_closed += g.contacts;
        day.attempts += attempts;
        if is_accepted {
            day.offers_accepted += g.contacts;
        }
        *statuses.entry(g.final_status).or_default() += g.contacts;
    }
    let status_counts = |m: BTreeMap<i32, u64>| {
        m.into_iter()
            .map(|(final_status, count)| pb::StatusCount {
                final_status,
                count,
            })
            .collect::<Vec<_>>()
    };
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    report.reach_rate = ratio(reached, report.contacts_closed);
    report.acceptance_rate = ratio(offers_accepted, interviews);
    report.attempts_per_contact = ratio(report.attempts, report.contacts_closed);
    report.by_final_status = status_counts(by_status);
    report.by_offer_decision = by_offer
        .into_iter()
        .map(|(offer_decision, count)| pb::OfferCount {
            offer_decision,
            count,
        })
        .collect();
    report.by_attempts = by_attempts
        .into_iter()
        .map(|(attempts, contacts)| pb::AttemptsCount { attempts, contacts })
        .collect();
    report.by_day = by_day
        .into_values()
        .map(|(mut day, statuses)| {
            day.by_final_status = status_counts(statuses);
            day
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(day: &str, status: FinalStatus, offer: OfferDecision, attempts: u32, n: u64) -> Group {
        Group {
            day: day.into(),
            final_status: status as i32,
            offer_decision: offer as i32,
            attempts,
            contacts: n,
        }
    }

    #[test]
    fn every_view_adds_up_to_the_same_contacts() {
        use FinalStatus::*;
        use OfferDecision::{Accepted, Refused, Unspecified as NoDecision};
        let r = build_report(
            [
                group("2026-11-27", InterviewHeld, Accepted, 1, 3),
                group("2026-11-27", InterviewHeld, Refused, 2, 1),
                group("2026-11-27", NotReached, NoDecision, 3, 2),
                group("2026-11-28", InterviewHeld, Accepted, 2, 1),
                group("2026-11-28", InterviewRefused, NoDecision, 1, 2),
                group("2026-11-28", CampaignCancelled, NoDecision, 0, 1),
            ]
            .into_iter(),
        );
        assert_eq!(r.contacts_closed, 10);
        assert_eq!(r.attempts, 3 + 2 + 6 + 2 + 2);
        assert!((r.attempts_per_contact - 1.5).abs() < 1e-9);
        // Reached: 5 interviews held + 2 refused, of 10.
        assert!((r.reach_rate - 0.7).abs() < 1e-9);
        // Accepted: 4 of 5 interviews.
        assert!((r.acceptance_rate - 0.8).abs() < 1e-9);
        let status: Vec<(i32, u64)> = r
            .by_final_status
            .iter()
            .map(|s| (s.final_status, s.count))
            .collect();
        assert_eq!(
            status,
            vec![
                (InterviewHeld as i32, 5),
                (InterviewRefused as i32, 2),
                (NotReached as i32, 2),
                (CampaignCancelled as i32, 1)
            ]
        );
        let offers: Vec<(i32, u64)> = r
            .by_offer_decision
            .iter()
            .map(|o| (o.offer_decision, o.count))
            .collect();
        assert_eq!(offers, vec![(Accepted as i32, 4), (Refused as i32, 1)]);
        let attempts: Vec<(u32, u64)> = r
            .by_attempts
            .iter()
            .map(|a| (a.attempts, a.contacts))
            .collect();
        assert_eq!(attempts, vec![(0, 1), (1, 5), (2, 2), (3, 2)]);
        let days: Vec<(&str, u64, u64, u64)> = r
            .by_day
            .iter()
            .map(|d| {
                (
                    d.date.as_str(),
                    d.contacts_closed,
                    d.attempts,
                    d.offers_accepted,
                )
            })
            .collect();
        assert_eq!(
            days,
            vec![("2026-11-27", 6, 11, 3), ("2026-11-28", 4, 4, 1)]
        );
        assert_eq!(
            r.by_day[1]
                .by_final_status
                .iter()
                .map(|s| s.count)
                .sum::<u64>(),
            4
        );
    }

    #[test]
    fn an_empty_campaign_has_no_rates() {
        let r = build_report(std::iter::empty());
        assert_eq!(r.contacts_closed, 0);
        assert_eq!(r.reach_rate, 0.0);
        assert_eq!(r.acceptance_rate, 0.0);
        assert_eq!(r.attempts_per_contact, 0.0);
        assert!(r.by_day.is_empty());
    }
}
