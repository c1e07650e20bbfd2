//! Sessions (in memory), the session cookie, CSRF tokens, sign-in and sign-out.
//!
//! A session id is 256 random bits in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when
//! configured). Every form carries the session's CSRF token in a hidden field, checked on every
//! POST. Signing in replaces the anonymous session by a new one (no fixation).

use crate::backend::{friendly, Caller};
use crate::page::Flash;
use crate::Console;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use cnmas_proto::dialer::{AgentState, LeasedCall};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "cnmas_console";
/// Anonymous sessions (the sign-in form) end sooner than signed-in ones.
const ANONYMOUS_IDLE: Duration = Duration::from_secs(15 * 60);
/// A bound on sessions held in memory, so a flood of sign-in page loads cannot exhaust it.
const MAX_SESSIONS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub supervisor: bool,
}

/// What the console remembers of an agent between pages.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub state: AgentState,
    pub pause_reason: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The call held, with its card (kept only until its outcome is recorded).
    pub call: Option<LeasedCall>,
}

impl Default for AgentView {
    fn default() -> Self {
        AgentView {
            state: AgentState::SignedOut,
            pause_reason: String::new(),
            since: None,
            call: None,
        }
    }
}

pub struct Session {
    pub csrf: String,
    pub user: Option<User>,
    pub agent: AgentView,
    pub flash: Option<Flash>,
    created: Instant,
    last_seen: Instant,
}

pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: Duration,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares secrets without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Sessions {
            inner: Mutex::new(HashMap::new()),
            idle,
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        let idle = if s.user.is_some() {
            self.idle
        } else {
            ANONYMOUS_IDLE.min(self.idle)
        };
        now.duration_since(s.last_seen) > idle || now.duration_since(s.created) > self.max
    }

    /// Opens a session; `None` when too many are open (the caller answers 503).
    pub fn create(&self, user: Option<User>, agent: AgentView) -> Option<(String, String)> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !self.expired(s, now));
            if map.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let (id, csrf) = (random_token(), random_token());
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                user,
                agent,
                flash: None,
                created: now,
                last_seen: now,
            },
        );
        Some((id, csrf))
    }

    /// Runs `f` on a live session (and marks it used); `None` if absent or expired.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> Option<T> {
        let now = Instant::now();
        let mut map = self.lock();
        let expired = self.expired(map.get(id)?, now);
        if expired {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(f(s))
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn purge(&self) {
        let now = Instant::now();
        self.lock().retain(|_, s| !self.expired(s, now));
    }

    /// Whether `token` is the session's CSRF token.
    pub fn csrf_ok(&self, id: &str, token: &str) -> bool {
        self.with(id, |s| same(&s.csrf, token)).unwrap_or(false)
    }
}

/// The session id from the request's cookies.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn cookie(console: &Console, id: &str) -> HeaderValue {
    let secure = if console.config.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in person and the session's CSRF token.
pub struct Signed {
    pub sid: String,
    pub user: User,
    pub csrf: String,
}

/// The signed-in person, or a redirect to the sign-in page.
pub fn signed_in(console: &Console, headers: &HeaderMap) -> Result<Signed, Response> {
    let to_sign_in = || Redirect::to("/connexion").into_response();
    let sid = session_id(headers).ok_or_else(to_sign_in)?;
    let (user, csrf) = console
        .sessions
        .with(&sid, |s| (s.user.clone(), s.csrf.clone()))
        .ok_or_else(to_sign_in)?;
    let user = user.ok_or_else(to_sign_in)?;
    Ok(Signed { sid, user, csrf })
}

/// Like [`signed_in`], for a POST: also checks the form's CSRF token (403 otherwise).
pub fn posted(console: &Console, headers: &HeaderMap, token: &str) -> Result<Signed, Response> {
    let who = signed_in(console, headers)?;
    if !console.sessions.csrf_ok(&who.sid, token) {
        metrics::counter!("cnmas_console_csrf_refused_total").increment(1);
        return Err(console.pages.error(
            StatusCode::FORBIDDEN,
            "Formulaire refusé",
            "Ce formulaire a expiré ou ne provient pas de la console. Rechargez la page et recommencez.",
        ));
    }
    Ok(who)
}

pub async fn home(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match signed_in(&c, &headers) {
        Ok(s) if s.user.supervisor => Redirect::to("/supervision").into_response(),
        Ok(_) => Redirect::to("/agent").into_response(),
        Err(r) => r,
    }
}

fn sign_in_form(
    c: &Console,
    headers: &HeaderMap,
    status: StatusCode,
    identifier: &str,
    error: Option<&str>,
) -> Response {
    // Reuse the anonymous session if there is one, so the form in another tab stays valid.
    let existing = session_id(headers).and_then(|sid| {
        c.sessions
            .with(&sid, |s| s.user.is_none().then(|| s.csrf.clone()))
            .flatten()
            .map(|csrf| (sid, csrf))
    });
    let (sid, csrf) = match existing.or_else(|| c.sessions.create(None, AgentView::default())) {
        Some(x) => x,
        None => {
            return c.pages.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Console saturée",
                "Trop de sessions ouvertes : réessayez dans quelques minutes.",
            )
        }
    };
    let mut resp = c.pages.render(
        status,
        "sign_in.html",
        minijinja::context! {
            title => "Connexion",
            csrf => csrf,
            identifier => identifier,
            error => error,
        },
    );
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(c, &sid));
    resp
}

pub async fn sign_in_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if signed_in(&c, &headers).is_ok() {
        return Redirect::to("/").into_response();
    }
    sign_in_form(&c, &headers, StatusCode::OK, "", None)
}

#[derive(serde::Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    identifiant: String,
    #[serde(default)]
    mot_de_passe: String,
}

pub async fn sign_in(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let identifier = f.identifiant.trim().to_string();
    let anonymous = session_id(&headers);
    let csrf_ok = anonymous
        .as_deref()
        .is_some_and(|sid| c.sessions.csrf_ok(sid, &f.csrf));
    if !csrf_ok {
        metrics::counter!("cnmas_console_csrf_refused_total").increment(1);
        return sign_in_form(
            &c,
            &headers,
            StatusCode::FORBIDDEN,
            &identifier,
            Some("Le formulaire a expiré : saisissez à nouveau votre mot de passe."),
        );
    }
    if identifier.is_empty() || f.mot_de_passe.is_empty() {
        return sign_in_form(
            &c,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            &identifier,
            Some("Saisissez votre identifiant et votre mot de passe."),
        );
    }
    let agent = match c.backend.verify(&identifier, &f.mot_de_passe).await {
        Ok(a) => a,
        Err(e) if e.code() == tonic::Code::Unauthenticated => {
            metrics::counter!("cnmas_console_sign_ins_total", "result" => "refused").increment(1);
            return sign_in_form(
                &c,
                &headers,
                StatusCode::UNAUTHORIZED,
                &identifier,
                Some("Identifiant ou mot de passe incorrect. Après 5 essais infructueux, le compte est bloqué 15 minutes."),
            );
        }
        Err(e) => {
            return sign_in_form(
                &c,
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                &identifier,
                Some(&friendly(&e)),
            )
        }
    };
    if let Some(old) = anonymous {
        c.sessions.remove(&old);
    }
    let user = User {
        id: agent.agent_id.clone(),
        name: agent.display_name.clone(),
        supervisor: agent.supervisor,
    };
    let view = AgentView {
        state: AgentState::try_from(agent.state).unwrap_or(AgentState::SignedOut),
        pause_reason: agent.pause_reason.clone(),
        since: agent
            .state_since
            .as_ref()
            .and_then(cnmas_proto::support::from_timestamp),
        call: None,
    };
    let Some((sid, _)) = c.sessions.create(Some(user.clone()), view) else {
        return c.pages.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Console saturée",
            "Trop de sessions ouvertes : réessayez dans quelques minutes.",
        );
    };
    metrics::counter!("cnmas_console_sign_ins_total", "result" => "accepted").increment(1);
    tracing::info!(agent = %user.id, supervisor = user.supervisor, "signed in to the console");
    let target = if user.supervisor {
        "/supervision"
    } else {
        "/agent"
    };
    let mut resp = Redirect::to(target).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(&c, &sid));
    resp
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let who = match posted(&c, &headers, &f.csrf) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if !who.user.supervisor {
        // The session ends regardless: a call still held returns to the queue when its lease
        // expires, so the dialer's refusal is only logged.
        let caller = Caller::agent(&who.user.id);
        if let Err(e) = c
            .backend
            .set_state(&caller, AgentState::SignedOut, "")
            .await
        {
            tracing::info!(code = ?e.code(), "agent signed out of the console while the dialer kept its state");
        }
    }
    c.sessions.remove(&who.sid);
    let mut resp = Redirect::to("/connexion").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    resp
}

/// Sets the message shown once on the next page.
pub fn flash(c: &Console, sid: &str, f: Flash) {
    c.sessions.with(sid, |s| s.flash = Some(f));
}

pub fn take_flash(c: &Console, sid: &str) -> Option<Flash> {
    c.sessions.with(sid, |s| s.flash.take()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_check_csrf() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(3600));
        let (id, csrf) = s.create(None, AgentView::default()).unwrap();
        assert!(s.csrf_ok(&id, &csrf));
        assert!(!s.csrf_ok(&id, "forged"));
        assert!(!s.csrf_ok("unknown", &csrf));
        let short = Sessions::new(Duration::from_nanos(1), Duration::from_secs(1));
        let (id2, csrf2) = short.create(None, AgentView::default()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!short.csrf_ok(&id2, &csrf2));
        assert!(short.with(&id2, |_| ()).is_none());
    }

    #[test]
    fn cookie_parsing_takes_only_well_formed_ids() {
        let mut h = HeaderMap::new();
        let id = "a".repeat(64);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap(),
        );
        assert_eq!(session_id(&h), Some(id));
        let mut bad = HeaderMap::new();
        bad.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}=../../etc")).unwrap(),
        );
        assert_eq!(session_id(&bad), None);
    }
}
