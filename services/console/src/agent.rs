//! The agent screen: state, next call, card and script, dial link, lease renewal, AMELI code
//! reveal, outcome form.

use crate::backend::{friendly, Caller};
use crate::labels;
use crate::outcome::{self, FormError, CHANNELS, FOLLOW_UP_ROWS};
use crate::page::Flash;
use crate::session::{flash, posted, signed_in, take_flash, AgentView, CsrfOnly, Signed};
use crate::Console;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use chrono::{DateTime, Utc};
use chrono_tz::Europe::Paris;
use cnmas_proto::common::Theme;
use cnmas_proto::dialer::{next_call_response, AgentState, LeasedCall};
use cnmas_proto::support::{from_timestamp, theme_from_proto};
use minijinja::context;
use std::collections::HashMap;
use std::sync::Arc;

/// Reasons offered for a pause (any other may be typed).
const PAUSE_REASONS: [&str; 4] = ["Pause courte", "Pause déjeuner", "Formation", "Réunion"];

fn paris(t: Option<DateTime<Utc>>, fmt: &str) -> String {
    t.map(|t| t.with_timezone(&Paris).format(fmt).to_string())
        .unwrap_or_default()
}

/// The dial link: the configured template with the E.164 number (escaped for web URLs).
fn dial_url(template: &str, phone: &str) -> String {
    let phone = if template.starts_with("http") {
        phone.replace('+', "%2B")
    } else {
        phone.to_string()
    };
    template.replace("{phone}", &phone)
}

fn lease_id(call: &LeasedCall) -> String {
    call.lease
        .as_ref()
        .map(|l| l.lease_id.clone())
        .unwrap_or_default()
}

/// What the agent page shows beyond the session's state.
#[derive(Default)]
struct Extras {
    errors: Vec<FormError>,
    values: HashMap<String, String>,
    revealed: Option<(String, String)>,
    flash: Option<Flash>,
}

fn render(c: &Console, who: &Signed, status: StatusCode, extras: Extras) -> Response {
    let view = c
        .sessions
        .with(&who.sid, |s| s.agent.clone())
        .unwrap_or_default();
    let call = view.call.as_ref().map(|call| {
        let card = call.card.clone().unwrap_or_default();
        let theme = theme_from_proto(card.theme);
        let script: Vec<String> = theme
            .map(crate::scripts::script)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                p.replace("{agent}", &who.user.name)
                    .replace("{personne}", &card.display_name)
            })
            .collect();
        let fields: Vec<minijinja::Value> = card
            .fields
            .iter()
            .map(|f| {
                let revealed = extras
                    .revealed
                    .as_ref()
                    .filter(|(field, _)| *field == f.field)
                    .map(|(_, v)| v.clone());
                context! {
                    field => f.field, label => f.label, value => f.value, masked => f.masked,
                    revealed => revealed,
                }
            })
            .collect();
        let expires = call
            .lease
            .as_ref()
            .and_then(|l| l.expires_at.as_ref())
            .and_then(from_timestamp);
        context! {
            lease_id => lease_id(call),
            campaign_id => call.campaign_id,
            attempt_number => call.attempt_number,
            presented_number => call.presented_number,
            theme => labels::theme(Theme::try_from(card.theme).unwrap_or_default()),
            display_name => card.display_name,
            phone => card.phone,
            dial_url => dial_url(&c.config.telephony_url_template, &card.phone),
            fields => fields,
            script => script,
            lease_expires => paris(expires, "%H:%M:%S"),
        }
    });
    let errors: HashMap<&str, String> = extras
        .errors
        .iter()
        .map(|e| (e.field, e.message.clone()))
        .collect();
    let flash = extras.flash.or_else(|| take_flash(c, &who.sid));
    c.pages.render(
        status,
        "agent.html",
        context! {
            title => "Poste agent",
            user => context! { id => who.user.id, name => who.user.name, supervisor => who.user.supervisor },
            csrf => who.csrf,
            state => labels::agent_state(view.state),
            state_code => format!("{:?}", view.state).to_lowercase(),
            since => paris(view.since, "%H:%M"),
            pause_reason => view.pause_reason,
            call => call,
            flash => flash,
            errors => errors,
            error_list => extras.errors,
            values => extras.values,
            pause_reasons => PAUSE_REASONS,
            follow_up_rows => (1..=FOLLOW_UP_ROWS).collect::<Vec<_>>(),
            channels => CHANNELS.iter().map(|(code, _)| *code).collect::<Vec<_>>(),
            renew_seconds => c.config.lease_renew_every.as_secs(),
        },
    )
}

/// The signed-in agent (supervisors go to their own screen).
fn agent_only(c: &Console, headers: &HeaderMap) -> Result<Signed, Response> {
    let who = signed_in(c, headers)?;
    if who.user.supervisor {
        return Err(Redirect::to("/supervision").into_response());
    }
    Ok(who)
}

fn posted_agent(c: &Console, headers: &HeaderMap, csrf: &str) -> Result<Signed, Response> {
    let who = posted(c, headers, csrf)?;
    if who.user.supervisor {
        return Err(c.pages.error(
            StatusCode::FORBIDDEN,
            "Action réservée aux agents",
            "Un compte superviseur ne prend pas d'appels.",
        ));
    }
    Ok(who)
}

fn back(c: &Console, who: &Signed, f: Flash) -> Response {
    flash(c, &who.sid, f);
    Redirect::to("/agent").into_response()
}

fn update(c: &Console, who: &Signed, f: impl FnOnce(&mut AgentView)) {
    c.sessions.with(&who.sid, |s| f(&mut s.agent));
}

pub async fn screen(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match agent_only(&c, &headers) {
        Ok(who) => render(&c, &who, StatusCode::OK, Extras::default()),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
pub struct StateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    etat: String,
    #[serde(default)]
    motif: String,
    #[serde(default)]
    motif_autre: String,
}

pub async fn set_state(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<StateForm>,
) -> Response {
    let who = match posted_agent(&c, &headers, &f.csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (state, reason) = match f.etat.as_str() {
        "available" => (AgentState::Available, String::new()),
        "paused" => {
            let reason = if f.motif == "autre" || f.motif.trim().is_empty() {
                f.motif_autre.trim().to_string()
            } else {
                f.motif.trim().to_string()
            };
            if reason.is_empty() {
                return render(
                    &c,
                    &who,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Extras {
                        errors: vec![FormError {
                            field: "motif_autre",
                            message: "Indiquez le motif de la pause.".into(),
                        }],
                        ..Extras::default()
                    },
                );
            }
            (AgentState::Paused, reason)
        }
        _ => {
            return back(&c, &who, Flash::error("État inconnu."));
        }
    };
    match c
        .backend
        .set_state(&Caller::agent(&who.user.id), state, &reason)
        .await
    {
        Ok(status) => {
            update(&c, &who, |v| {
                v.state = AgentState::try_from(status.state).unwrap_or(state);
                v.pause_reason = status.pause_reason.clone();
                v.since = status.since.as_ref().and_then(from_timestamp);
            });
            let text = match state {
                AgentState::Paused => format!("Vous êtes en pause ({}).", status.pause_reason),
                _ => "Vous êtes disponible.".to_string(),
            };
            back(&c, &who, Flash::info(text))
        }
        Err(e) => back(&c, &who, Flash::error(friendly(&e))),
    }
}

pub async fn next_call(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let who = match posted_agent(&c, &headers, &f.csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    match c.backend.next_call(&Caller::agent(&who.user.id)).await {
        Ok(r) => match r.result {
            Some(next_call_response::Result::Call(call)) => {
                update(&c, &who, |v| {
                    v.state = AgentState::OnCall;
                    v.pause_reason.clear();
                    v.since = Some(Utc::now());
                    v.call = Some(call);
                });
                back(
                    &c,
                    &who,
                    Flash::info("Nouvel appel : la fiche est affichée."),
                )
            }
            Some(next_call_response::Result::NothingDue(n)) => {
                update(&c, &who, |v| {
                    if v.state != AgentState::Available {
                        v.since = Some(Utc::now());
                    }
                    v.state = AgentState::Available;
                    v.pause_reason.clear();
                    v.call = None;
                });
                let text = if n.message.is_empty() {
                    "Aucun appel à passer pour le moment.".to_string()
                } else {
                    n.message
                };
                back(&c, &who, Flash::info(text))
            }
            None => back(&c, &who, Flash::error("Réponse vide du service d'appels.")),
        },
        Err(e) => back(&c, &who, Flash::error(friendly(&e))),
    }
}

#[derive(serde::Deserialize)]
pub struct LeaseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lease_id: String,
    #[serde(default)]
    field: String,
}

/// The call the session holds, if `lease` is its lease.
fn held(c: &Console, who: &Signed, lease: &str) -> Option<LeasedCall> {
    c.sessions
        .with(&who.sid, |s| s.agent.call.clone())
        .flatten()
        .filter(|call| !lease.is_empty() && lease_id(call) == lease)
}

fn forget_call(c: &Console, who: &Signed) {
    update(c, who, |v| v.call = None);
}

/// Renews the lease; answers JSON to the page's script (header `X-Console-Fetch`), otherwise
/// comes back to the agent page.
pub async fn renew(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<LeaseForm>,
) -> Response {
    let fetch = headers.contains_key("x-console-fetch");
    let who = match posted_agent(&c, &headers, &f.csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let answer = |ok: bool, text: String| -> Response {
        if fetch {
            Json(serde_json::json!({ "ok": ok, "message": text })).into_response()
        } else {
            back(
                &c,
                &who,
                if ok {
                    Flash::info(text)
                } else {
                    Flash::error(text)
                },
            )
        }
    };
    let Some(_call) = held(&c, &who, &f.lease_id) else {
        return answer(false, "Aucun appel en cours à prolonger.".into());
    };
    match c
        .backend
        .renew(&Caller::agent(&who.user.id), &f.lease_id)
        .await
    {
        Ok(lease) => {
            let until = paris(
                lease.expires_at.as_ref().and_then(from_timestamp),
                "%H:%M:%S",
            );
            update(&c, &who, |v| {
                if let Some(call) = v.call.as_mut() {
                    call.lease = Some(lease.clone());
                }
            });
            answer(true, format!("Appel réservé jusqu'à {until}."))
        }
        Err(e) => {
            if e.code() == tonic::Code::FailedPrecondition {
                forget_call(&c, &who);
            }
            answer(false, friendly(&e))
        }
    }
}

pub async fn reveal(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<LeaseForm>,
) -> Response {
    let who = match posted_agent(&c, &headers, &f.csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if held(&c, &who, &f.lease_id).is_none() {
        return back(
            &c,
            &who,
            Flash::error("Aucun appel en cours : rien à afficher."),
        );
    }
    match c
        .backend
        .reveal(&Caller::agent(&who.user.id), &f.lease_id, &f.field)
        .await
    {
        // Shown on this page only: never kept in the session.
        Ok(r) => render(
            &c,
            &who,
            StatusCode::OK,
            Extras {
                revealed: Some((r.field, r.value)),
                flash: Some(Flash::info(format!(
                    "{} affiché. Cet affichage est enregistré.",
                    r.label
                ))),
                ..Extras::default()
            },
        ),
        Err(e) => {
            if e.code() == tonic::Code::FailedPrecondition && e.message().contains("lease.lost") {
                forget_call(&c, &who);
            }
            back(&c, &who, Flash::error(friendly(&e)))
        }
    }
}

pub async fn record(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(mut form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.remove("csrf").unwrap_or_default();
    let who = match posted_agent(&c, &headers, &csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let lease = form.get("lease_id").cloned().unwrap_or_default();
    if held(&c, &who, &lease).is_none() {
        return back(
            &c,
            &who,
            Flash::error("Ce formulaire concerne un appel qui ne vous est plus réservé."),
        );
    }
    let refused = |errors: Vec<FormError>, form: HashMap<String, String>| {
        render(
            &c,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            Extras {
                flash: Some(Flash::error(
                    "L'issue n'est pas enregistrée : corrigez les champs signalés.",
                )),
                errors,
                values: form,
                ..Extras::default()
            },
        )
    };
    let disposition = match outcome::form_to_disposition(&form) {
        Ok(d) => d,
        Err(e) => return refused(vec![e], form),
    };
    match c
        .backend
        .record(&Caller::agent(&who.user.id), &lease, disposition)
        .await
    {
        Ok(_) => {
            update(&c, &who, |v| {
                v.call = None;
                v.state = AgentState::WrapUp;
                v.since = Some(Utc::now());
            });
            back(
                &c,
                &who,
                Flash::info("Issue enregistrée. Vous êtes en post-appel."),
            )
        }
        Err(e) if e.code() == tonic::Code::InvalidArgument => {
            refused(vec![outcome::from_dialer(e.message())], form)
        }
        Err(e) => {
            if e.code() == tonic::Code::FailedPrecondition {
                forget_call(&c, &who);
            }
            back(&c, &who, Flash::error(friendly(&e)))
        }
    }
}
