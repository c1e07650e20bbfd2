//! The web console: sign-in, CSRF, rights and the audited AMELI code reveal through its HTTP
//! routes (in-process requests), and a full call in headless Chromium (chromedriver), with
//! screenshots of both screens written to `target/console-screenshots/`.

use anyhow::{bail, ensure, Context, Result};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cnmas_proto::common::Theme;
use cnmas_proto::dialer::dialer_admin_service_client::DialerAdminServiceClient;
use cnmas_proto::dialer::{
    GetCampaignFloorRequest, RevealCardFieldRequest, SetAgentPasswordRequest, UpsertAgentRequest,
};
use cnmas_proto::intake::contact_submission::ThemeFields;
use cnmas_proto::intake::{
    list_card_views_request::Subject, AmeliActivationFields, ContactSubmission,
    ListCardViewsRequest,
};
use cnmas_proto::scheduler::{CampaignState, GetCampaignRequest};
use cnmas_runtime::auth::{Bearer, Role};
use cnmas_system_tests::{eventually, free_ports, lease, people, test_campaign, Authed, System};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;
use tower::ServiceExt;

const AGENT_PASSWORD: &str = "mot de passe agent 2026";
const SUPERVISOR_PASSWORD: &str = "mot de passe superviseur 2026";

/// An ameli-activation contact with a known provisional code.
fn ameli(i: usize, code: &str) -> ContactSubmission {
    let mut c = people::flu(i);
    c.submission_ref = format!("ameli-{i}");
    c.theme_fields = Some(ThemeFields::AmeliActivation(AmeliActivationFields {
        provisional_code: code.into(),
    }));
    c
}

async fn admin(sys: &System) -> Result<DialerAdminServiceClient<Authed>> {
    let channel = Channel::from_shared(sys.grpc_url("dialer-queue"))?
        .connect()
        .await?;
    Ok(DialerAdminServiceClient::with_interceptor(
        channel,
        Bearer(sys.token(Role::Admin, None, None)),
    ))
}

/// Registers `id` (already assigned or not) with a console password.
async fn account(
    sys: &System,
    id: &str,
    name: &str,
    supervisor: bool,
    password: &str,
) -> Result<()> {
    let mut a = admin(sys).await?;
    a.upsert_agent(UpsertAgentRequest {
        agent_id: id.into(),
        display_name: name.into(),
        team: "console".into(),
        supervisor,
    })
    .await?;
    a.set_agent_password(SetAgentPasswordRequest {
        agent_id: id.into(),
        password: password.into(),
    })
    .await?;
    Ok(())
}

/// Waits until the dialer holds a due call of the campaign.
async fn queued(sys: &System, campaign: &str) -> Result<()> {
    let a = admin(sys).await?;
    eventually(Duration::from_secs(60), "a queued call", || {
        let mut a = a.clone();
        let campaign = campaign.to_string();
        async move {
            let f = a
                .get_campaign_floor(GetCampaignFloorRequest {
                    campaign_id: campaign,
                })
                .await?
                .into_inner();
            Ok((f.queued > 0).then_some(()))
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// In-process HTTP

struct Browserless {
    app: axum::Router,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browserless {
    fn new(sys: &System) -> Result<Self> {
        Ok(Browserless {
            app: cnmas_console::router(cnmas_console::Console::new(sys.console_config())?),
            cookie: None,
        })
    }

    async fn send(&mut self, req: Request<Body>) -> Result<Page> {
        let resp = self.app.clone().oneshot(req).await?;
        if let Some(set) = resp.headers().get(header::SET_COOKIE) {
            let set = set.to_str()?;
            ensure!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
            let pair = set.split(';').next().unwrap_or_default().to_string();
            // An emptied cookie (sign-out) ends the session on this side too.
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(resp.into_body(), 4 << 20).await?;
        Ok(Page {
            status,
            location,
            body: String::from_utf8(body.to_vec())?,
        })
    }

    async fn get(&mut self, path: &str) -> Result<Page> {
        let mut req = Request::get(path);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty())?).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Result<Page> {
        self.post_with(path, form, false).await
    }

    /// A POST as the page's script sends it (`X-Console-Fetch`: answered in JSON).
    async fn post_with(&mut self, path: &str, form: &[(&str, &str)], fetch: bool) -> Result<Page> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if fetch {
            req = req.header("x-console-fetch", "1");
        }
        self.send(req.body(Body::from(body))?).await
    }

    /// Opens the sign-in form and signs in; returns the page's CSRF token once signed in.
    async fn sign_in(&mut self, id: &str, password: &str) -> Result<Page> {
        let form = self.get("/connexion").await?;
        let csrf = csrf_of(&form.body)?;
        self.post(
            "/connexion",
            &[
                ("csrf", &csrf),
                ("identifiant", id),
                ("mot_de_passe", password),
            ],
        )
        .await
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> Result<String> {
    let at = html
        .find("name=\"csrf\" value=\"")
        .context("no CSRF field on the page")?;
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    Ok(rest[..rest.find('"').context("unterminated value")?].to_string())
}

/// The value of a hidden `lease_id` input.
fn lease_of(html: &str) -> Result<String> {
    let at = html
        .find("name=\"lease_id\" value=\"")
        .context("no lease on the page")?;
    let rest = &html[at + "name=\"lease_id\" value=\"".len()..];
    Ok(rest[..rest.find('"').context("unterminated value")?].to_string())
}

#[tokio::test]
async fn sign_in_sessions_csrf_and_lockout() -> Result<()> {
    let sys = System::start().await?;
    let campaign = sys
        .active_campaign("751", Theme::FluVaccination, &["agent-a", "agent-b"])
        .await?;
    account(&sys, "agent-a", "Alice Martin", false, AGENT_PASSWORD).await?;
    account(&sys, "agent-b", "Bruno Petit", false, AGENT_PASSWORD).await?;

    // Only an admin makes supervisors or sets their passwords.
    let mut sup_admin = sys.dialer_admin().await?;
    let denied = sup_admin
        .upsert_agent(UpsertAgentRequest {
            agent_id: "chef".into(),
            display_name: "Chef".into(),
            team: String::new(),
            supervisor: true,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let short = sup_admin
        .set_agent_password(SetAgentPasswordRequest {
            agent_id: "agent-a".into(),
            password: "court".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), tonic::Code::InvalidArgument);
    assert!(short.message().starts_with("password: password.length"));

    let mut web = Browserless::new(&sys)?;
    // Pages need a session.
    let p = web.get("/agent").await?;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/connexion"));

    // A sign-in without the form's token is refused.
    let form = web.get("/connexion").await?;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form
        .body
        .contains("<label for=\"identifiant\">Identifiant</label>"));
    let anonymous = web.cookie.clone().context("an anonymous session cookie")?;
    let forged = web
        .post(
            "/connexion",
            &[
                ("csrf", "forged"),
                ("identifiant", "agent-a"),
                ("mot_de_passe", AGENT_PASSWORD),
            ],
        )
        .await?;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // A wrong password: one generic message.
    let wrong = web.sign_in("agent-a", "pas le bon mot de passe").await?;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("Identifiant ou mot de passe incorrect"));
    let unknown = web.sign_in("personne", "pas le bon mot de passe").await?;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown
        .body
        .contains("Identifiant ou mot de passe incorrect"));

    // The right one: a new session (not the anonymous one), the agent screen.
    let ok = web.sign_in("agent-a", AGENT_PASSWORD).await?;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.location.as_deref(), Some("/agent"));
    assert_ne!(web.cookie.as_deref(), Some(anonymous.as_str()));
    let screen = web.get("/agent").await?;
    assert_eq!(screen.status, StatusCode::OK);
    assert!(screen.body.contains("Alice Martin"));
    let csrf = csrf_of(&screen.body)?;

    // Every POST needs the session's token.
    let refused = web
        .post("/agent/appel-suivant", &[("csrf", "0000")])
        .await?;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("Formulaire refusé"));
    let held = sys
        .dialer_admin()
        .await?
        .get_campaign_floor(GetCampaignFloorRequest {
            campaign_id: campaign.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(held.leased, 0, "a refused form leased nothing");

    // With it, the agent may pause with a reason (and must give one).
    let no_reason = web
        .post(
            "/agent/etat",
            &[
                ("csrf", &csrf),
                ("etat", "paused"),
                ("motif", "autre"),
                ("motif_autre", ""),
            ],
        )
        .await?;
    assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_reason.body.contains("Indiquez le motif de la pause."));
    let paused = web
        .post(
            "/agent/etat",
            &[("csrf", &csrf), ("etat", "paused"), ("motif", "Formation")],
        )
        .await?;
    assert_eq!(paused.status, StatusCode::SEE_OTHER);
    let screen = web.get("/agent").await?;
    assert!(screen.body.contains("En pause"));
    assert!(screen.body.contains("Formation"));

    // Agents have no supervisor screen, and cannot pause a campaign through the console.
    let sup = web.get("/supervision").await?;
    assert_eq!(sup.status, StatusCode::FORBIDDEN);
    let steer = web
        .post(
            &format!("/supervision/campagnes/{campaign}/pause"),
            &[("csrf", &csrf), ("motif", "essai")],
        )
        .await?;
    assert_eq!(steer.status, StatusCode::FORBIDDEN);
    let still = sys
        .campaigns(sys.token(Role::Supervisor, None, None))
        .await?
        .get_campaign(GetCampaignRequest {
            campaign_id: campaign.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(still.state, CampaignState::Active as i32);

    // Signing out ends the session.
    let out = web.post("/deconnexion", &[("csrf", &csrf)]).await?;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(web.get("/agent").await?.status, StatusCode::SEE_OTHER);

    // Five wrong passwords lock the identifier: the right one is refused for a while.
    let mut other = Browserless::new(&sys)?;
    for _ in 0..5 {
        let p = other.sign_in("agent-b", "toujours pas le bon").await?;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    let locked = other.sign_in("agent-b", AGENT_PASSWORD).await?;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED);
    // Another identifier is not affected.
    let fine = other.sign_in("agent-a", AGENT_PASSWORD).await?;
    assert_eq!(fine.status, StatusCode::SEE_OTHER);

    sys.stop().await;
    Ok(())
}

#[tokio::test]
async fn ameli_code_reveal_is_audited_and_confined_to_the_lease_holder() -> Result<()> {
    let sys = System::start().await?;
    let ameli_campaign = sys
        .active_campaign("751", Theme::AmeliActivation, &["agent-a"])
        .await?;
    let _flu_campaign = sys
        .active_campaign("751", Theme::FluVaccination, &["agent-b"])
        .await?;
    account(&sys, "agent-a", "Alice Martin", false, AGENT_PASSWORD).await?;
    account(&sys, "agent-b", "Bruno Petit", false, AGENT_PASSWORD).await?;
    sys.submit(
        "751",
        &ameli_campaign,
        "ameli-batch",
        vec![ameli(1, "K7Q2ZP")],
    )
    .await?;
    queued(&sys, &ameli_campaign).await?;

    // Agent B works another campaign: it never gets this card.
    let mut b = sys.agent("agent-b").await?;
    assert!(cnmas_system_tests::next_call(&mut b).await?.is_none());

    // Agent A signs in to the console and takes the call: the code is masked.
    let mut web_a = Browserless::new(&sys)?;
    web_a.sign_in("agent-a", AGENT_PASSWORD).await?;
    let csrf = csrf_of(&web_a.get("/agent").await?.body)?;
    let next = web_a
        .post("/agent/appel-suivant", &[("csrf", &csrf)])
        .await?;
    assert_eq!(next.status, StatusCode::SEE_OTHER);
    let card = web_a.get("/agent").await?;
    assert!(card.body.contains("Code provisoire ameli"));
    assert!(card.body.contains("••••••"));
    assert!(
        !card.body.contains("K7Q2ZP"),
        "the code stays masked until revealed"
    );
    assert!(
        card.body.contains("Activation du compte ameli"),
        "the theme's script"
    );
    let lease_id = lease_of(&card.body)?;

    // Agent B, with A's lease id, can reveal nothing: not through the API…
    let stolen = b
        .reveal_card_field(RevealCardFieldRequest {
            lease_id: lease_id.clone(),
            field: "ameli_provisional_code".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), tonic::Code::FailedPrecondition);
    // …nor through the console (the lease is not in B's session).
    let mut web_b = Browserless::new(&sys)?;
    web_b.sign_in("agent-b", AGENT_PASSWORD).await?;
    let csrf_b = csrf_of(&web_b.get("/agent").await?.body)?;
    web_b
        .post(
            "/agent/reveler",
            &[
                ("csrf", &csrf_b),
                ("lease_id", &lease_id),
                ("field", "ameli_provisional_code"),
            ],
        )
        .await?;
    let b_page = web_b.get("/agent").await?;
    assert!(!b_page.body.contains("K7Q2ZP"));
    assert!(b_page.body.contains("Aucun appel en cours"));

    // Only masked fields can be revealed.
    let mut a = sys.agent("agent-a").await?;
    let not_masked = a
        .reveal_card_field(RevealCardFieldRequest {
            lease_id: lease_id.clone(),
            field: "last_name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_masked.code(), tonic::Code::InvalidArgument);

    // A reveals on purpose: the value is shown once, and the reveal is audited.
    let revealed = web_a
        .post(
            "/agent/reveler",
            &[
                ("csrf", &csrf),
                ("lease_id", &lease_id),
                ("field", "ameli_provisional_code"),
            ],
        )
        .await?;
    assert_eq!(revealed.status, StatusCode::OK);
    assert!(revealed.body.contains("K7Q2ZP"));
    assert!(revealed.body.contains("Cet affichage est enregistré"));
    let again = web_a.get("/agent").await?;
    assert!(!again.body.contains("K7Q2ZP"), "a reload masks it again");

    let views = sys
        .intake_api(sys.token(Role::Auditor, None, None))
        .await?
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::AgentId("agent-a".into())),
            limit: 10,
        })
        .await?
        .into_inner()
        .views;
    let reveals: Vec<_> = views.iter().filter(|v| v.action == "reveal").collect();
    assert_eq!(reveals.len(), 1, "{views:?}");
    assert_eq!(reveals[0].field, "ameli_provisional_code");
    assert_eq!(reveals[0].campaign_id, ameli_campaign);
    assert_eq!(reveals[0].lease_id, lease_id);
    assert!(views.iter().any(|v| v.action == "view"));
    // Agent B left no trace on the card.
    let by_b = sys
        .intake_api(sys.token(Role::Auditor, None, None))
        .await?
        .list_card_views(ListCardViewsRequest {
            subject: Some(Subject::AgentId("agent-b".into())),
            limit: 10,
        })
        .await?
        .into_inner()
        .views;
    assert!(by_b.is_empty(), "{by_b:?}");

    // The open card renews its lease (the page's script), and only its own.
    let renewed = web_a
        .post_with(
            "/agent/renouveler",
            &[("csrf", &csrf), ("lease_id", &lease_id)],
            true,
        )
        .await?;
    let answer: serde_json::Value = serde_json::from_str(&renewed.body)?;
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("Appel réservé jusqu'à"));
    let foreign = web_b
        .post_with(
            "/agent/renouveler",
            &[("csrf", &csrf_b), ("lease_id", &lease_id)],
            true,
        )
        .await?;
    let answer: serde_json::Value = serde_json::from_str(&foreign.body)?;
    assert_eq!(answer["ok"], false, "{answer}");

    // An invalid outcome is shown next to its field; a valid one is recorded.
    let bad = web_a
        .post(
            "/agent/resultat",
            &[
                ("csrf", &csrf),
                ("lease_id", &lease_id),
                ("outcome", "interview"),
                ("offer", "accepted"),
                ("new_phone", "12"),
            ],
        )
        .await?;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("id=\"err-new_phone\""), "{}", bad.body);
    assert!(
        bad.body.contains("value=\"12\""),
        "the agent's input is kept"
    );
    let good = web_a
        .post(
            "/agent/resultat",
            &[
                ("csrf", &csrf),
                ("lease_id", &lease_id),
                ("outcome", "interview"),
                ("offer", "accepted"),
                ("follow_up_kind_1", "send_documentation"),
                ("follow_up_note_1", "guide ameli"),
                ("consent_sms", "opt_out"),
            ],
        )
        .await?;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    let after = web_a.get("/agent").await?;
    assert!(after.body.contains("Issue enregistrée"));
    assert!(after.body.contains("Post-appel"));
    // The supervisors' floor counts it: one attempt today, an interview, the agent in wrap-up.
    let floor = admin(&sys)
        .await?
        .get_campaign_floor(GetCampaignFloorRequest {
            campaign_id: ameli_campaign.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(floor.attempts_today, 1);
    assert_eq!(
        floor.outcomes_today,
        vec![cnmas_proto::dialer::OutcomeCount {
            outcome: cnmas_proto::common::AttemptOutcome::InterviewHeld as i32,
            count: 1
        }]
    );
    assert_eq!(floor.contact_rate_today, 1.0);
    assert_eq!(floor.leased, 0);
    assert_eq!(floor.last_days.len(), 7);
    assert_eq!(
        floor.last_days.last().map(|d| (d.attempts, d.reached)),
        Some((1, 1))
    );
    assert_eq!(
        floor.agents_by_state,
        vec![cnmas_proto::dialer::AgentStateCount {
            state: cnmas_proto::dialer::AgentState::WrapUp as i32,
            count: 1
        }]
    );
    // The lease is gone: revealing again is refused.
    let late = a
        .reveal_card_field(RevealCardFieldRequest {
            lease_id,
            field: "ameli_provisional_code".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);

    sys.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium

fn screenshot_dir() -> PathBuf {
    std::env::var_os("CNMAS_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
        })
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> Result<String> {
    let path = std::env::var("CNMAS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    ensure!(
        std::path::Path::new(&path).exists(),
        "Chromium is missing at {path}: install it with `apt-get install -y chromium chromium-driver` \
         (deploy/local/test.sh does) or set CNMAS_CHROMIUM"
    );
    Ok(path)
}

async fn chromedriver() -> Result<Driver> {
    let bin = std::env::var("CNMAS_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_ports(1)?[0];
    let child = std::process::Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {bin}: install it with `apt-get install -y chromium chromium-driver` \
                 (deploy/local/test.sh does) or set CNMAS_CHROMEDRIVER"
            )
        })?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    eventually(
        Duration::from_secs(20),
        "chromedriver to listen",
        || async move {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await?;
    Ok(driver)
}

async fn browser(driver: &Driver) -> Result<Client> {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium_binary()?,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1800", "--lang=fr-FR"],
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        bail!("capabilities must be an object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .context("chromedriver refused the session (is Chromium installed?)")
}

async fn text_of(c: &Client, css: &str) -> Result<String> {
    Ok(c.find(Locator::Css(css)).await?.text().await?)
}

/// Waits until the element `css` holds `expected` (reloading the page between tries when
/// `reload`).
async fn wait_text(c: &Client, css: &str, expected: &str, reload: bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(t) = text_of(c, css).await {
            if t.contains(expected) {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{css} never showed {expected:?} (last: {:?})",
                text_of(c, css).await.ok()
            );
        }
        if reload {
            c.refresh().await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn sign_in(c: &Client, base: &str, id: &str, password: &str) -> Result<()> {
    c.goto(&format!("{base}/connexion")).await?;
    c.find(Locator::Id("identifiant"))
        .await?
        .send_keys(id)
        .await?;
    c.find(Locator::Id("mot_de_passe"))
        .await?
        .send_keys(password)
        .await?;
    c.find(Locator::Css("form.connexion button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

async fn save(c: &Client, name: &str) -> Result<PathBuf> {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, c.screenshot().await?)?;
    Ok(path)
}

#[tokio::test]
async fn full_call_in_headless_chromium() -> Result<()> {
    // Fail loudly (never skip) when the browser is not there.
    chromium_binary()?;
    let sys = System::start().await?;
    let campaign = sys
        .start_campaign(
            cnmas_proto::scheduler::CreateCampaignRequest {
                name: "Activation ameli — Paris".into(),
                ..test_campaign("751", Theme::AmeliActivation)
            },
            &["agent-web"],
        )
        .await?;
    account(&sys, "agent-web", "Camille Durand", false, AGENT_PASSWORD).await?;
    account(
        &sys,
        "superviseur-web",
        "Dominique Leroy",
        true,
        SUPERVISOR_PASSWORD,
    )
    .await?;
    sys.submit(
        "751",
        &campaign,
        "ameli-web",
        vec![ameli(7, "M4R9TX"), ameli(8, "B2C3D4")],
    )
    .await?;
    queued(&sys, &campaign).await?;
    let console = sys.start_console().await?;
    let driver = chromedriver().await?;
    let c = browser(&driver).await?;
    let base = console.url.clone();

    let run = async {
        // The agent signs in, becomes available and takes the next call.
        sign_in(&c, &base, "agent-web", AGENT_PASSWORD).await?;
        wait_text(&c, "h1", "Poste agent", false).await?;
        c.find(Locator::Id("bouton-disponible"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#mon-etat", "Disponible", false).await?;
        c.find(Locator::Id("bouton-appel-suivant"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#titre-appel", "Appel en cours", false).await?;
        let dial = c
            .find(Locator::Id("lien-appeler"))
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        ensure!(dial.starts_with("tel:+33"), "dial link {dial}");
        ensure!(text_of(&c, "#script").await?.contains("code provisoire"));

        // The code is revealed on purpose only.
        let masked = text_of(&c, "#valeur-ameli_provisional_code").await?;
        ensure!(masked.contains('•'), "masked: {masked}");
        c.find(Locator::Id("reveler-ameli_provisional_code"))
            .await?
            .click()
            .await?;
        // The reveal is a form post: read the code once the new page says it is shown.
        wait_text(&c, "#statut", "Cet affichage est enregistré", false).await?;
        let code = text_of(&c, "#valeur-ameli_provisional_code").await?;
        ensure!(code == "M4R9TX" || code == "B2C3D4", "revealed {code:?}");
        save(&c, "agent.png").await?;

        // Outcome by keyboard: "7" picks the interview, then the details.
        // (the page's script may still be starting: press again until it reacts)
        let interview = c.find(Locator::Id("outcome-interview")).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !interview.is_selected().await? {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the 7 key never selected the interview outcome"
            );
            c.find(Locator::Css("h3")).await?.click().await?;
            c.find(Locator::Css("body")).await?.send_keys("7").await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(
            c.find(Locator::Id("bloc-entretien"))
                .await?
                .is_displayed()
                .await?
        );
        ensure!(
            !c.find(Locator::Id("bloc-rappel"))
                .await?
                .is_displayed()
                .await?
        );
        c.find(Locator::Css("label[for=offer-accepted]"))
            .await?
            .click()
            .await?;
        c.find(Locator::Id("champ-follow_up_kind_1"))
            .await?
            .select_by_value("send_documentation")
            .await?;
        c.find(Locator::Id("champ-follow_up_note_1"))
            .await?
            .send_keys("guide d'activation")
            .await?;
        // A wrong phone first: refused next to its field, nothing lost.
        c.find(Locator::Id("champ-new_phone"))
            .await?
            .send_keys("12")
            .await?;
        c.find(Locator::Id("bouton-enregistrer"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#err-new_phone", "Numéro de téléphone refusé", false).await?;
        let note = c
            .find(Locator::Id("champ-follow_up_note_1"))
            .await?
            .prop("value")
            .await?
            .unwrap_or_default();
        ensure!(note == "guide d'activation", "kept note {note:?}");
        let phone = c.find(Locator::Id("champ-new_phone")).await?;
        phone.clear().await?;
        phone.send_keys("06 11 22 33 44").await?;
        c.find(Locator::Id("bouton-enregistrer"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#statut", "Issue enregistrée", false).await?;
        wait_text(&c, "#mon-etat", "Post-appel", false).await?;
        c.find(Locator::Css("form[action='/deconnexion'] button"))
            .await?
            .click()
            .await?;
        wait_text(&c, "h1", "Connexion", false).await?;

        // The supervisor sees the attempt and its outcome, then pauses the campaign.
        sign_in(&c, &base, "superviseur-web", SUPERVISOR_PASSWORD).await?;
        wait_text(&c, "h1", "Supervision des campagnes", false).await?;
        c.find(Locator::LinkText("Activation ameli — Paris"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#kpi-tentatives", "1", true).await?;
        wait_text(&c, "#graphique-issues", "Entretien réalisé", false).await?;
        // The agent signed out: the floor says so.
        wait_text(&c, "#agents", "Déconnecté", true).await?;
        // The results report catches up (the contact closed as interview held).
        wait_text(&c, "#direct", "Entretien réalisé", true).await?;
        wait_text(&c, "#rapport-clos", "1", true).await?;
        save(&c, "supervisor.png").await?;
        c.find(Locator::Id("bouton-pause")).await?.click().await?;
        wait_text(&c, "#statut", "Campagne mise en pause", false).await?;
        wait_text(&c, "#etat-campagne", "En pause", false).await?;
        c.find(Locator::Id("bouton-reprise")).await?.click().await?;
        wait_text(&c, "#statut", "Campagne reprise", false).await?;
        wait_text(&c, "#etat-campagne", "Active", false).await?;
        c.find(Locator::Id("bouton-pause")).await?.click().await?;
        wait_text(&c, "#etat-campagne", "En pause", false).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if run.is_err() {
        let _ = save(&c, "failure.png").await;
    }
    let _ = c.close().await;
    run?;

    let state = sys
        .campaigns(sys.token(Role::Supervisor, None, None))
        .await?
        .get_campaign(GetCampaignRequest {
            campaign_id: campaign.clone(),
        })
        .await?
        .into_inner()
        .state;
    assert_eq!(state, CampaignState::Paused as i32);
    // The screenshots are there for the README (docs/screenshots/ holds the committed set).
    for name in ["agent.png", "supervisor.png"] {
        let len = std::fs::metadata(screenshot_dir().join(name))?.len();
        assert!(len > 10_000, "{name} is {len} bytes");
    }
    drop(driver);
    console.stop().await;
    sys.stop().await;
    Ok(())
}

#[tokio::test]
async fn ameli_code_is_masked_on_the_api_card_too() -> Result<()> {
    // Agents without a console password still work through the API, and see the code masked.
    let sys = System::start().await?;
    let campaign = sys
        .active_campaign("751", Theme::AmeliActivation, &["agent-api"])
        .await?;
    sys.submit("751", &campaign, "ameli-api", vec![ameli(3, "Z9Y8X7")])
        .await?;
    let mut a = sys.agent("agent-api").await?;
    let call = lease(&mut a).await?;
    let card = call.card.context("a card")?;
    let code = card
        .fields
        .iter()
        .find(|f| f.field == "ameli_provisional_code")
        .context("the code field")?;
    assert!(code.masked);
    assert_ne!(code.value, "Z9Y8X7");
    sys.stop().await;
    Ok(())
}
