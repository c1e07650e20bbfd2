//! The supervisor screen: campaigns, and per campaign a live view (queue, agents by state,
//! today's attempts and outcomes, contact rate, the results report) with bar charts drawn as
//! inline SVG on the server; pause and resume.

use crate::backend::{friendly, Caller};
use crate::labels;
use crate::page::Flash;
use crate::session::{flash, posted, signed_in, take_flash, Signed};
use crate::Console;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono_tz::Europe::Paris;
use cnmas_proto::common::{AttemptOutcome, FinalStatus, OfferDecision, Theme};
use cnmas_proto::dialer::{AgentState, CampaignFloor};
use cnmas_proto::results::CampaignReport;
use cnmas_proto::scheduler::{Campaign, CampaignState};
use cnmas_proto::support::from_timestamp;
use minijinja::context;
use std::sync::Arc;

const CHART_WIDTH: u32 = 640;
const LABEL_WIDTH: u32 = 230;
const BAR_MAX: u32 = 330;
const ROW: u32 = 30;

#[derive(Debug, serde::Serialize)]
pub struct Bar {
    label: String,
    value: u64,
    y: u32,
    text_y: u32,
    width: u32,
    value_x: u32,
}

/// A horizontal bar chart: every bar carries its label and value as text (no colour-only
/// information), and the whole chart a text summary for screen readers.
#[derive(Debug, serde::Serialize)]
pub struct Chart {
    id: String,
    title: String,
    summary: String,
    width: u32,
    height: u32,
    label_width: u32,
    bars: Vec<Bar>,
}

pub fn chart(id: &str, title: &str, items: Vec<(String, u64)>) -> Chart {
    let max = items.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let summary = if items.is_empty() {
        "aucune donnée".to_string()
    } else {
        items
            .iter()
            .map(|(l, v)| format!("{l} : {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bars = items
        .into_iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let width = ((value as f64 / max as f64) * BAR_MAX as f64).round() as u32;
            Bar {
                label,
                value,
                y: i as u32 * ROW + 5,
                text_y: i as u32 * ROW + 21,
                width,
                value_x: LABEL_WIDTH + width + 8,
            }
        })
        .collect::<Vec<_>>();
    Chart {
        id: id.to_string(),
        title: title.to_string(),
        summary,
        width: CHART_WIDTH,
        height: (bars.len() as u32).max(1) * ROW + 10,
        label_width: LABEL_WIDTH,
        bars,
    }
}

fn supervisor_only(c: &Console, headers: &HeaderMap) -> Result<Signed, Response> {
    let who = signed_in(c, headers)?;
    if !who.user.supervisor {
        return Err(c.pages.error(
            StatusCode::FORBIDDEN,
            "Écran réservé à la supervision",
            "Votre compte n'a pas accès à la supervision.",
        ));
    }
    Ok(who)
}

fn campaign_row(cp: &Campaign) -> minijinja::Value {
    context! {
        id => cp.campaign_id,
        name => cp.name,
        fund => cp.fund_code,
        theme => labels::theme(Theme::try_from(cp.theme).unwrap_or_default()),
        state => labels::campaign_state(CampaignState::try_from(cp.state).unwrap_or_default()),
        starts_on => cp.starts_on,
        ends_on => cp.ends_on,
    }
}

pub async fn campaigns(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let who = match supervisor_only(&c, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (list, error) = match c.backend.campaigns(&Caller::supervisor(&who.user.id)).await {
        Ok(l) => (l, None),
        Err(e) => (Vec::new(), Some(friendly(&e))),
    };
    let rows: Vec<_> = list.iter().map(campaign_row).collect();
    c.pages.render(
        StatusCode::OK,
        "campaigns.html",
        context! {
            title => "Supervision",
            user => context! { id => who.user.id, name => who.user.name, supervisor => true },
            csrf => who.csrf,
            campaigns => rows,
            flash => take_flash(&c, &who.sid).or(error.map(Flash::error)),
        },
    )
}

/// The live part of a campaign's page (also served alone for the periodic refresh).
fn floor_context(floor: &CampaignFloor, report: Option<&CampaignReport>) -> minijinja::Value {
    let agents_by_state = chart(
        "agents",
        "Agents par état",
        [
            AgentState::Available,
            AgentState::OnCall,
            AgentState::WrapUp,
            AgentState::Paused,
            AgentState::SignedOut,
        ]
        .into_iter()
        .map(|s| {
            let n = floor
                .agents_by_state
                .iter()
                .find(|x| x.state == s as i32)
                .map(|x| u64::from(x.count))
                .unwrap_or(0);
            (labels::agent_state(s).to_string(), n)
        })
        .collect(),
    );
    let outcomes = chart(
        "issues",
        "Issues des appels aujourd'hui",
        floor
            .outcomes_today
            .iter()
            .map(|o| {
                (
                    labels::outcome(AttemptOutcome::try_from(o.outcome).unwrap_or_default())
                        .to_string(),
                    o.count,
                )
            })
            .collect(),
    );
    let days = chart(
        "jours",
        "Appels par jour (7 derniers jours)",
        floor
            .last_days
            .iter()
            .map(|d| {
                let label = day_label(&d.day);
                (format!("{label} (joints : {})", d.reached), d.attempts)
            })
            .collect(),
    );
    let report_charts = report.map(report_charts).unwrap_or_default();
    let agents: Vec<_> = floor
        .agents
        .iter()
        .map(|a| {
            context! {
                id => a.agent_id,
                name => a.display_name,
                team => a.team,
                state => labels::agent_state(AgentState::try_from(a.state).unwrap_or_default()),
                pause_reason => a.pause_reason,
                since => a.state_since.as_ref().and_then(from_timestamp)
                    .map(|t| t.with_timezone(&Paris).format("%H:%M").to_string()),
            }
        })
        .collect();
    context! {
        queued => floor.queued,
        leased => floor.leased,
        attempts_today => floor.attempts_today,
        contact_rate => labels::percent(floor.contact_rate_today),
        at => floor.at.as_ref().and_then(from_timestamp)
            .map(|t| t.with_timezone(&Paris).format("%H:%M:%S").to_string()),
        charts => [Some(agents_by_state), Some(outcomes), Some(days)].into_iter().flatten().collect::<Vec<_>>(),
        report_charts => report_charts,
        report => report.map(|r| context! {
            closed => r.contacts_closed,
            attempts => r.attempts,
            attempts_per_contact => format!("{:.1}", r.attempts_per_contact).replace('.', ","),
            reach_rate => labels::percent(r.reach_rate),
            acceptance_rate => labels::percent(r.acceptance_rate),
        }),
        agents => agents,
    }
}

/// The results report as charts: final statuses, the decisions on the offer, results per day and
/// attempts per contact.
fn report_charts(r: &CampaignReport) -> Vec<Chart> {
    let by_status = r
        .by_final_status
        .iter()
        .map(|s| {
            let status = FinalStatus::try_from(s.final_status).unwrap_or_default();
            (labels::final_status(status).to_string(), s.count)
        })
        .collect();
    let by_offer = r
        .by_offer_decision
        .iter()
        .map(|o| {
            let decision = OfferDecision::try_from(o.offer_decision).unwrap_or_default();
            (labels::offer_decision(decision).to_string(), o.count)
        })
        .collect();
    let by_day = r
        .by_day
        .iter()
        .map(|d| {
            let label = day_label(&d.date);
            (
                format!("{label} (offres acceptées : {})", d.offers_accepted),
                d.contacts_closed,
            )
        })
        .collect();
    let by_attempts = r
        .by_attempts
        .iter()
        .map(|a| {
            let label = match a.attempts {
                0 => "Sans tentative".to_string(),
                1 => "1 tentative".to_string(),
                n => format!("{n} tentatives"),
            };
            (label, a.contacts)
        })
        .collect();
    vec![
        chart("resultats", "Résultats définitifs par statut", by_status),
        chart(
            "offres",
            "Décisions sur l'offre (entretiens réalisés)",
            by_offer,
        ),
        chart("resultats-jours", "Résultats définitifs par jour", by_day),
        chart(
            "tentatives",
            "Contacts clos selon le nombre de tentatives",
            by_attempts,
        ),
    ]
}

/// "2026-11-28" → "28/11".
fn day_label(day: &str) -> String {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map(|x| x.format("%d/%m").to_string())
        .unwrap_or_else(|_| day.to_string())
}

async fn live_data(
    c: &Console,
    who: &Signed,
    id: &str,
) -> Result<(CampaignFloor, Option<CampaignReport>), tonic::Status> {
    let caller = Caller::supervisor(&who.user.id);
    let (floor, report) = tokio::join!(c.backend.floor(&caller, id), c.backend.report(&caller, id));
    // The report may lag behind (a campaign results has not heard of yet): the floor alone
    // still tells the supervisor what matters now.
    Ok((floor?, report.ok()))
}

pub async fn campaign(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match supervisor_only(&c, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let cp = match c
        .backend
        .campaign(&Caller::supervisor(&who.user.id), &id)
        .await
    {
        Ok(cp) => cp,
        Err(e) => {
            return c.pages.error(
                if e.code() == tonic::Code::NotFound || e.code() == tonic::Code::InvalidArgument {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                },
                "Campagne indisponible",
                &friendly(&e),
            )
        }
    };
    let (live, error) = match live_data(&c, &who, &id).await {
        Ok((floor, report)) => (Some(floor_context(&floor, report.as_ref())), None),
        Err(e) => (None, Some(friendly(&e))),
    };
    let state = CampaignState::try_from(cp.state).unwrap_or_default();
    c.pages.render(
        StatusCode::OK,
        "campaign.html",
        context! {
            title => format!("Campagne {}", cp.name),
            user => context! { id => who.user.id, name => who.user.name, supervisor => true },
            csrf => who.csrf,
            campaign => campaign_row(&cp),
            can_pause => state == CampaignState::Active,
            can_resume => state == CampaignState::Paused,
            live => live,
            flash => take_flash(&c, &who.sid).or(error.map(Flash::error)),
        },
    )
}

pub async fn live(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match supervisor_only(&c, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match live_data(&c, &who, &id).await {
        Ok((floor, report)) => c.pages.render(
            StatusCode::OK,
            "floor.html",
            context! { live => floor_context(&floor, report.as_ref()) },
        ),
        Err(e) => (StatusCode::BAD_GATEWAY, friendly(&e)).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub struct SteerForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    motif: String,
}

async fn steer(
    c: Arc<Console>,
    headers: HeaderMap,
    id: String,
    f: SteerForm,
    pause: bool,
) -> Response {
    let who = match posted(&c, &headers, &f.csrf) {
        Ok(w) if w.user.supervisor => w,
        Ok(_) => {
            return c.pages.error(
                StatusCode::FORBIDDEN,
                "Action réservée à la supervision",
                "Votre compte ne peut pas piloter les campagnes.",
            )
        }
        Err(r) => return r,
    };
    let reason = match f.motif.trim() {
        "" if pause => format!("pause depuis la console par {}", who.user.id),
        "" => format!("reprise depuis la console par {}", who.user.id),
        r => r.chars().take(200).collect(),
    };
    let message = match c
        .backend
        .steer(&Caller::supervisor(&who.user.id), &id, pause, &reason)
        .await
    {
        Ok(_) if pause => Flash::info("Campagne mise en pause : plus aucun appel n'est distribué."),
        Ok(_) => Flash::info("Campagne reprise : les appels sont de nouveau distribués."),
        Err(e) => Flash::error(friendly(&e)),
    };
    flash(&c, &who.sid, message);
    // The id came from the path; only a well-formed one goes back into a URL.
    let target = match uuid_like(&id) {
        true => format!("/supervision/campagnes/{id}"),
        false => "/supervision".to_string(),
    };
    Redirect::to(&target).into_response()
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

pub async fn pause(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<SteerForm>,
) -> Response {
    steer(c, headers, id, f, true).await
}

pub async fn resume(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<SteerForm>,
) -> Response {
    steer(c, headers, id, f, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_keep_their_numbers() {
        let c = chart(
            "t",
            "Test",
            vec![("a".into(), 10), ("b".into(), 5), ("c".into(), 0)],
        );
        assert_eq!(c.bars[0].width, BAR_MAX);
        assert_eq!(c.bars[1].width, BAR_MAX / 2);
        assert_eq!(c.bars[2].width, 0);
        assert_eq!(c.summary, "a : 10, b : 5, c : 0");
        let empty = chart("e", "Vide", vec![]);
        assert_eq!(empty.summary, "aucune donnée");
    }
}
