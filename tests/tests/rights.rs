//! The rights of the people called: subject access across every service, rectification that
//! reaches the call card and the plan, and the retention purge (with its audit, the reports
//! unchanged).

use anyhow::{Context, Result};
use chrono::Utc;
use cnmas_bus::subjects;
use cnmas_proto::common::{AttemptOutcome, Channel, ConsentChange, Theme};
use cnmas_proto::consent::{person_consent::Identifier, PersonConsent, UpdateConsents};
use cnmas_proto::dialer::{disposition::Kind, NotReached, RefusedInterview};
use cnmas_proto::intake::contact_submission::Person;
use cnmas_proto::results::GetCampaignReportRequest;
use cnmas_proto::rights::{
    person_identifier::Id, ListPurgesRequest, PersonIdentifier, PurgeExpiredRequest,
    RectificationRejected, RectifyRequest, SubjectAccessRequest,
};
use cnmas_proto::scheduler::CampaignTransitionRequest;
use cnmas_proto::support::envelope;
use cnmas_runtime::auth::Role;
use cnmas_runtime::rights::Retention;
use cnmas_system_tests::{eventually, lease, people, record, System};
use prost::Message;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn nir_of(i: usize) -> String {
    match people::flu(i).person {
        Some(Person::Insured(p)) => p.nir,
        _ => unreachable!("flu people are insured"),
    }
}

fn nir(i: usize) -> Option<PersonIdentifier> {
    Some(PersonIdentifier {
        id: Some(Id::Nir(nir_of(i))),
    })
}

async fn db(system: &System, service: &'static str) -> Result<PgPool> {
    Ok(PgPool::connect(system.database_url(service)).await?)
}

/// Waits until `sql` (a count) returns `want`.
async fn count_is(pool: &PgPool, sql: &str, bind: &str, want: i64, what: &str) -> Result<()> {
    eventually(WAIT, what, || {
        let pool = pool.clone();
        let sql = sql.to_string();
        let bind = bind.to_string();
        async move {
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(uuid_or_text(&bind))
                .fetch_one(&pool)
                .await?;
            Ok((n == want).then_some(()))
        }
    })
    .await
}

fn uuid_or_text(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).unwrap_or_default()
}

async fn count(pool: &PgPool, sql: &str, campaign: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sql)
        .bind(uuid_or_text(campaign))
        .fetch_one(pool)
        .await?)
}

async fn push_consent(
    system: &System,
    fund: &str,
    id: &str,
    person: usize,
    channel: Channel,
) -> Result<()> {
    let update = UpdateConsents {
        envelope: Some(envelope(id.into(), fund, "", id, Utc::now())),
        consents: vec![PersonConsent {
            identifier: Some(Identifier::Nir(nir_of(person))),
            change: Some(ConsentChange {
                channel: channel as i32,
                opted_out: true,
                all_themes: true,
            }),
            theme: 0,
            evidence: format!("letter {id}"),
        }],
    };
    system
        .publisher
        .publish(&subjects::fund_in(fund, "consent"), id, &update)
        .await?;
    Ok(())
}

#[tokio::test]
async fn subject_access_returns_everything_every_service_holds_for_the_funds_own_contacts(
) -> Result<()> {
    let system = System::start().await?;
    let mine = system
        .active_campaign("751", Theme::FluVaccination, &["agent-sa"])
        .await?;
    let theirs = system
        .active_campaign("971", Theme::FluVaccination, &[])
        .await?;
    // Person 1 is a contact of both funds; person 2 only of fund 751.
    system
        .submit("751", &mine, "sa-751", vec![people::flu(1), people::flu(2)])
        .await?;
    system
        .submit("971", &theirs, "sa-971", vec![people::flu(1)])
        .await?;
    // Fund 971 also registered an e-mail opt-out for person 1 (the register is person-wide).
    push_consent(&system, "971", "sa-optout", 1, Channel::Email).await?;
    // Both calls of fund 751 are made once, not reached.
    let mut agent = system.agent("agent-sa").await?;
    for _ in 0..2 {
        let call = lease(&mut agent).await?;
        record(
            &mut agent,
            &call,
            Kind::NotReached(NotReached {
                reason: AttemptOutcome::NoAnswer as i32,
            }),
        )
        .await?;
    }
    let results = db(&system, "results").await?;
    count_is(
        &results,
        "SELECT count(*) FROM attempts WHERE campaign_id = $1",
        &mine,
        2,
        "attempts in results",
    )
    .await?;
    let consent = db(&system, "consent").await?;
    count_is(
        &consent,
        "SELECT count(*) FROM register WHERE $1::uuid IS NOT NULL",
        &mine,
        1,
        "the opt-out",
    )
    .await?;
    // Fund 971's contact may still be on its way: its campaign reaches intake by an event, and
    // a submission that comes first is retried a second later.
    let intake = db(&system, "intake").await?;
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1",
        &theirs,
        1,
        "fund 971's contact in intake",
    )
    .await?;

    let mut rights = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    let export = rights
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(1),
        })
        .await?
        .into_inner();
    let doc: Value = serde_json::from_str(&export.json)?;
    assert_eq!(doc["format"], "cnmas.subject_access.v1");
    let contacts: Vec<String> = serde_json::from_value(doc["contacts"].clone())?;
    assert_eq!(contacts.len(), 1, "one contact of person 1 at fund 751");
    let items = doc["items"].as_array().context("items")?;
    let services: HashSet<&str> = items.iter().filter_map(|i| i["service"].as_str()).collect();
    for s in ["intake", "consent", "scheduler", "dialer-queue", "results"] {
        assert!(services.contains(s), "no item from {s}: {services:?}");
    }
    // Every item has its origin, and concerns only this fund's contact of the person.
    for i in items {
        assert!(i["kind"].as_str().is_some_and(|k| !k.is_empty()));
        assert!(
            i["recorded_at"].is_string() || i["updated_at"].is_string(),
            "{i}"
        );
        if let Some(c) = i["contact_id"].as_str() {
            assert_eq!(c, contacts[0], "an item about another contact: {i}");
            assert_eq!(i["campaign_id"].as_str(), Some(mine.as_str()));
            assert_eq!(i["fund_code"].as_str(), Some("751"));
        }
    }
    // The vault is opened for the person's fund: the name and NIR are in the export; nothing
    // of person 2.
    let vault = items
        .iter()
        .find(|i| i["service"] == "intake" && i["kind"] == "contacts")
        .context("intake contact")?;
    assert_eq!(vault["data"]["fields"]["last_name"], "Nom1");
    assert_eq!(vault["data"]["fields"]["nir"], nir_of(1));
    assert!(!export.json.contains("Nom2"));
    assert!(items
        .iter()
        .any(|i| i["service"] == "dialer-queue" && i["kind"] == "attempts"));
    // Fund 971's opt-out is shown, without saying which fund or its evidence.
    let entry = items
        .iter()
        .find(|i| i["service"] == "consent" && i["kind"] == "register")
        .context("register entry")?;
    assert_eq!(entry["fund_code"], "another fund");
    assert_eq!(entry["data"]["evidence"], "");
    assert_eq!(entry["data"]["channel"], "email");

    // Fund 971 sees its own contact only, and may not ask for fund 751's.
    let mut other = system
        .rights_api(system.token(Role::Fund, Some("971"), None))
        .await?;
    let theirs_export = other
        .export_person_data(SubjectAccessRequest {
            fund_code: "971".into(),
            person: nir(1),
        })
        .await?
        .into_inner();
    let doc971: Value = serde_json::from_str(&theirs_export.json)?;
    let contacts971: Vec<String> = serde_json::from_value(doc971["contacts"].clone())?;
    assert_eq!(contacts971.len(), 1);
    assert_ne!(contacts971[0], contacts[0]);
    assert!(!theirs_export.json.contains(&contacts[0]));
    let denied = other
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(1),
        })
        .await
        .expect_err("another fund's person");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // An auditor sees both funds' contacts.
    let mut auditor = system
        .rights_api(system.token(Role::Auditor, None, None))
        .await?;
    let all = auditor
        .export_person_data(SubjectAccessRequest {
            fund_code: String::new(),
            person: nir(1),
        })
        .await?
        .into_inner();
    let all: Value = serde_json::from_str(&all.json)?;
    assert_eq!(all["contacts"].as_array().map(Vec::len), Some(2));
    // The services' own PersonDataService answers services (intake) and admins only: a fund
    // cannot go around intake's scoping.
    for service in ["consent", "results"] {
        let mut direct = system
            .person_data_api(service, system.token(Role::Fund, Some("751"), None))
            .await?;
        let e = direct
            .export_person_data(cnmas_proto::rights::ExportPersonDataRequest {
                person_key: "any".into(),
                contact_ids: vec![],
                fund_code: "751".into(),
            })
            .await
            .expect_err("a fund token on a service's PersonDataService");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{service}");
    }
    // A malformed identifier is refused with its field and rule.
    let bad = rights
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: Some(PersonIdentifier {
                id: Some(Id::Nir("2 55 08 14 168 025 00".into())),
            }),
        })
        .await
        .expect_err("bad NIR");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("person.nir: nir.key_mismatch"),
        "{}",
        bad.message()
    );
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn rectification_reaches_the_call_card_and_the_plan_before_the_next_call() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign("751", Theme::FluVaccination, &["agent-rc"])
        .await?;
    system
        .submit("751", &campaign, "rc-1", vec![people::flu(7)])
        .await?;
    // The call is queued in the dialer, in metropolitan France.
    let dialer = db(&system, "dialer-queue").await?;
    count_is(
        &dialer,
        "SELECT count(*) FROM queue WHERE campaign_id = $1 AND territory = 'FR'",
        &campaign,
        1,
        "the call queued",
    )
    .await?;

    // The person moved to Guadeloupe and has a new mobile.
    let mut rights = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    let fields = HashMap::from([
        ("phone".to_string(), "0690 12 34 56".to_string()),
        ("postcode".to_string(), "97110".to_string()),
    ]);
    let answer = rights
        .rectify_person_data(RectifyRequest {
            fund_code: "751".into(),
            person: nir(7),
            campaign_id: String::new(),
            fields,
            reason: "courrier 2026-11-20".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answer.contacts.len(), 1);
    assert_eq!(answer.contacts[0].fields_changed, vec!["phone", "postcode"]);
    let contact_id = answer.contacts[0].contact_id.clone();

    // The scheduler plans in the new territory (its time zone), the queued call follows.
    let scheduler = db(&system, "scheduler").await?;
    count_is(&scheduler, "SELECT count(*) FROM plans WHERE contact_id = $1 AND territory = 'GP' AND department = '971'", &contact_id, 1, "the plan in Guadeloupe").await?;
    count_is(&dialer, "SELECT count(*) FROM queue WHERE campaign_id = $1 AND territory = 'GP' AND department = '971'", &campaign, 1, "the queued call in Guadeloupe").await?;

    // The next lease shows the new number.
    let mut agent = system.agent("agent-rc").await?;
    let call = lease(&mut agent).await?;
    let card = call.card.clone().context("card")?;
    assert_eq!(card.contact_id, contact_id);
    assert_eq!(card.phone, "+590690123456");
    assert_eq!(card.phone_territory, "GP");
    record(
        &mut agent,
        &call,
        Kind::NotReached(NotReached {
            reason: AttemptOutcome::NoAnswer as i32,
        }),
    )
    .await?;

    // The audit says which fields changed, who and when — never the values.
    let intake = db(&system, "intake").await?;
    let (actor, changed, why): (String, Vec<String>, String) = sqlx::query_as(
        "SELECT actor, fields_changed, reason FROM rectification_audit WHERE contact_id = $1",
    )
    .bind(uuid_or_text(&contact_id))
    .fetch_one(&intake)
    .await?;
    assert_eq!(actor, "751");
    assert_eq!(changed, vec!["phone", "postcode"]);
    assert_eq!(why, "courrier 2026-11-20");
    // The export shows the corrected data and the rectification.
    let export = rights
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(7),
        })
        .await?
        .into_inner();
    assert!(export.json.contains("+590690123456"));
    assert!(export.items.iter().any(|i| i.kind == "rectification_audit"));
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_or_foreign_rectifications_are_refused_with_field_and_rule() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign("751", Theme::FluVaccination, &[])
        .await?;
    system
        .submit("751", &campaign, "iv-1", vec![people::flu(3)])
        .await?;
    let intake = db(&system, "intake").await?;
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1",
        &campaign,
        1,
        "the contact",
    )
    .await?;
    let mut rights = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    let rectify = |fields: &[(&str, &str)], fund: &str| RectifyRequest {
        fund_code: fund.into(),
        person: nir(3),
        campaign_id: String::new(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        reason: String::new(),
    };
    let reasons = |e: &tonic::Status| -> Vec<(String, String)> {
        RectificationRejected::decode(e.details())
            .map(|r| r.reasons.into_iter().map(|r| (r.field, r.rule)).collect())
            .unwrap_or_default()
    };

    let e = rights
        .rectify_person_data(rectify(
            &[("phone", "+44 20 7946 0000"), ("postcode", "00000")],
            "751",
        ))
        .await
        .expect_err("bad phone and postcode");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let r = reasons(&e);
    assert!(
        r.iter()
            .any(|(f, rule)| f == "contact_details.phone" && rule.starts_with("phone.")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|(f, rule)| f == "contact_details.postal_address.postcode"
                && rule.starts_with("postcode.")),
        "{r:?}"
    );
    assert!(!e.message().contains("7946"), "the value is never echoed");

    let e = rights
        .rectify_person_data(rectify(
            &[("shoe_size", "42"), ("ps_number", "10000000000")],
            "751",
        ))
        .await
        .expect_err("unknown field");
    assert_eq!(
        reasons(&e),
        vec![(
            "fields.shoe_size".to_string(),
            "rectification.unknown_field".to_string()
        )]
    );
    let e = rights
        .rectify_person_data(rectify(&[("ps_number", "123456789")], "751"))
        .await
        .expect_err("field of another theme");
    assert_eq!(
        reasons(&e),
        vec![(
            "fields.ps_number".to_string(),
            "theme.field_not_allowed".to_string()
        )]
    );
    let e = rights
        .rectify_person_data(rectify(&[("last_name", "")], "751"))
        .await
        .expect_err("required field removed");
    assert!(
        reasons(&e)
            .iter()
            .any(|(_, rule)| rule == "theme.field_required"),
        "{:?}",
        reasons(&e)
    );
    let e = rights
        .rectify_person_data(rectify(&[], "751"))
        .await
        .expect_err("nothing to change");
    assert_eq!(
        reasons(&e),
        vec![("fields".to_string(), "rectification.empty".to_string())]
    );

    // Another fund can neither name fund 751 nor find the person among its own contacts.
    let mut other = system
        .rights_api(system.token(Role::Fund, Some("971"), None))
        .await?;
    let e = other
        .rectify_person_data(rectify(&[("last_name", "Autre")], "751"))
        .await
        .expect_err("another fund's person");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = other
        .rectify_person_data(rectify(&[("last_name", "Autre")], "971"))
        .await
        .expect_err("not a contact of fund 971");
    assert_eq!(e.code(), tonic::Code::NotFound);
    // Nothing changed, nothing audited.
    let audits: i64 = sqlx::query_scalar("SELECT count(*) FROM rectification_audit")
        .fetch_one(&intake)
        .await?;
    assert_eq!(audits, 0);
    system.stop().await;
    Ok(())
}

/// Contact-level rows of the campaign in each service's database.
const CONTACT_ROWS: [(&str, &str); 11] = [
    ("intake", "SELECT count(*) FROM contacts WHERE campaign_id = $1"),
    ("intake", "SELECT count(*) FROM card_audit WHERE campaign_id = $1"),
    ("consent", "SELECT count(*) FROM decisions WHERE campaign_id = $1"),
    ("scheduler", "SELECT count(*) FROM plans WHERE campaign_id = $1"),
    ("dialer-queue", "SELECT count(*) FROM attempts WHERE campaign_id = $1"),
    ("dialer-queue", "SELECT count(*) FROM closed_contacts WHERE $1::uuid IS NOT NULL"),
    ("results", "SELECT count(*) FROM contacts WHERE campaign_id = $1"),
    ("results", "SELECT count(*) FROM attempts WHERE campaign_id = $1"),
    ("results", "SELECT count(*) FROM closures WHERE campaign_id = $1"),
    ("results", "SELECT count(*) FROM results WHERE campaign_id = $1 AND (contact_id IS NOT NULL OR submission_ref <> '')"),
    ("results", "SELECT count(*) FROM interviews WHERE $1::uuid IS NOT NULL"),
];

#[tokio::test]
async fn purge_removes_contact_rows_everywhere_keeps_the_report_and_is_audited() -> Result<()> {
    // Contact data expires as soon as its campaign closes; opt-outs keep their 3 years.
    let system = System::start_configured(
        300,
        Retention {
            contact_days: 0,
            ..Retention::default()
        },
    )
    .await?;
    let campaign = system
        .active_campaign("751", Theme::FluVaccination, &["agent-pg"])
        .await?;
    system
        .submit(
            "751",
            &campaign,
            "pg-1",
            vec![people::flu(11), people::flu(12), people::flu(13)],
        )
        .await?;
    push_consent(&system, "751", "pg-optout", 14, Channel::Phone).await?;
    let mut agent = system.agent("agent-pg").await?;
    let first = lease(&mut agent).await?;
    record(
        &mut agent,
        &first,
        Kind::RefusedInterview(RefusedInterview {}),
    )
    .await?;
    let second = lease(&mut agent).await?;
    record(
        &mut agent,
        &second,
        Kind::NotReached(NotReached {
            reason: AttemptOutcome::WrongNumber as i32,
        }),
    )
    .await?;
    // The third is still open when the campaign is cancelled.
    let mut campaigns = system
        .campaigns(system.token(Role::Fund, Some("751"), None))
        .await?;
    campaigns
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "test of the purge".into(),
        })
        .await?;
    let results = db(&system, "results").await?;
    count_is(
        &results,
        "SELECT count(*) FROM results WHERE campaign_id = $1",
        &campaign,
        3,
        "three results",
    )
    .await?;
    let mut pools = HashMap::new();
    for s in cnmas_system_tests::SERVICES {
        let pool = db(&system, s).await?;
        count_is(
            &pool,
            "SELECT count(*) FROM campaign_closures WHERE campaign_id = $1",
            &campaign,
            1,
            "the closure projected",
        )
        .await?;
        pools.insert(s, pool);
    }
    for (s, sql) in CONTACT_ROWS {
        if sql.contains("interviews") {
            continue; // no interview was held
        }
        assert!(
            count(&pools[s], sql, &campaign).await? > 0,
            "{s}: {sql} has nothing to purge"
        );
    }
    let mut reports = system
        .results_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    let report = |c: String| GetCampaignReportRequest { campaign_id: c };
    let before = reports
        .get_campaign_report(report(campaign.clone()))
        .await?
        .into_inner();
    assert_eq!(before.contacts_closed, 3);

    let admin_token = system.token(Role::Admin, None, None);
    let mut admin = system.rights_api(admin_token).await?;
    // A dry run counts and changes nothing.
    let dry = admin
        .purge_expired(PurgeExpiredRequest { dry_run: true })
        .await?
        .into_inner();
    assert_eq!(dry.services.len(), 5);
    assert!(
        dry.services
            .iter()
            .all(|s| s.dry_run && !s.purged.is_empty()),
        "{dry:?}"
    );
    for (s, sql) in CONTACT_ROWS {
        if !sql.contains("interviews") {
            assert!(
                count(&pools[s], sql, &campaign).await? > 0,
                "{s}: dry run deleted rows"
            );
        }
    }
    let done = admin
        .purge_expired(PurgeExpiredRequest { dry_run: false })
        .await?
        .into_inner();
    let by_service: HashMap<&str, u64> = done
        .services
        .iter()
        .map(|s| (s.service.as_str(), s.purged.iter().map(|p| p.rows).sum()))
        .collect();
    for s in cnmas_system_tests::SERVICES {
        assert!(
            by_service.get(s).copied().unwrap_or(0) > 0,
            "{s} purged nothing: {done:?}"
        );
    }
    let intake_contacts = done
        .services
        .iter()
        .flat_map(|s| &s.purged)
        .find(|p| p.service == "intake" && p.table == "contacts")
        .context("intake contacts purged")?;
    assert_eq!(intake_contacts.rows, 3);
    assert_eq!(intake_contacts.campaign_id, campaign);
    for (s, sql) in CONTACT_ROWS {
        assert_eq!(
            count(&pools[s], sql, &campaign).await?,
            0,
            "{s}: {sql} after the purge"
        );
    }
    // The opt-out list is kept (3 years), and the report is the same.
    assert_eq!(
        count(
            &pools["consent"],
            "SELECT count(*) FROM register WHERE $1::uuid IS NOT NULL",
            &campaign
        )
        .await?,
        1
    );
    let after = reports
        .get_campaign_report(report(campaign.clone()))
        .await?
        .into_inner();
    assert_eq!(before, after);

    // The auditor finds what was purged, where, when and by whom.
    let mut auditor = system
        .rights_api(system.token(Role::Auditor, None, None))
        .await?;
    let log = auditor
        .list_purges(ListPurgesRequest {
            campaign_id: campaign.clone(),
            limit: 0,
        })
        .await?
        .into_inner();
    let logged: HashSet<&str> = log.purges.iter().map(|p| p.service.as_str()).collect();
    assert_eq!(logged.len(), 5, "{logged:?}");
    assert!(log
        .purges
        .iter()
        .all(|p| p.actor == "test" && p.rows > 0 && p.campaign_closed_at.is_some()));
    assert!(log
        .purges
        .iter()
        .any(|p| p.service == "results" && p.table == "results" && p.rows == 3));
    // A second purge finds nothing more; a fund may not purge.
    let again = admin
        .purge_expired(PurgeExpiredRequest { dry_run: false })
        .await?
        .into_inner();
    assert!(
        again
            .services
            .iter()
            .all(|s| s.purged.iter().all(|p| p.campaign_id != campaign)),
        "{again:?}"
    );
    let mut fund = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    assert_eq!(
        fund.purge_expired(PurgeExpiredRequest { dry_run: true })
            .await
            .expect_err("fund")
            .code(),
        tonic::Code::PermissionDenied
    );
    // Nothing is left to export about the people of the purged campaign.
    let export = fund
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(11),
        })
        .await?
        .into_inner();
    assert!(export.items.is_empty(), "{:?}", export.items);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn services_purge_on_their_own_schedule() -> Result<()> {
    let system = System::start_configured(
        300,
        Retention {
            contact_days: 0,
            purge_interval: Duration::from_secs(1),
            ..Retention::default()
        },
    )
    .await?;
    let campaign = system
        .active_campaign("751", Theme::FluVaccination, &[])
        .await?;
    system
        .submit("751", &campaign, "sc-1", vec![people::flu(21)])
        .await?;
    let intake = db(&system, "intake").await?;
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1",
        &campaign,
        1,
        "the contact",
    )
    .await?;
    let mut campaigns = system
        .campaigns(system.token(Role::Fund, Some("751"), None))
        .await?;
    campaigns
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "test of the schedule".into(),
        })
        .await?;
    // Nobody asks: each service purges by itself and logs it as the schedule's doing.
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1",
        &campaign,
        0,
        "intake's scheduled purge",
    )
    .await?;
    count_is(&intake, "SELECT count(*) FROM purge_log WHERE campaign_id = $1 AND actor = 'schedule' AND table_name = 'contacts'", &campaign, 1, "intake's purge log").await?;
    let scheduler = db(&system, "scheduler").await?;
    count_is(&scheduler, "SELECT count(*) FROM purge_log WHERE campaign_id = $1 AND actor = 'schedule' AND table_name = 'plans'", &campaign, 1, "the scheduler's purge log").await?;
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_corrected_identifier_of_a_person_who_opted_out_withdraws_the_call() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign("751", Theme::FluVaccination, &[])
        .await?;
    // Person 31 refused phone calls; the fund sent person 32's contact under a wrong NIR.
    push_consent(&system, "751", "rk-optout", 31, Channel::Phone).await?;
    let consent = db(&system, "consent").await?;
    count_is(
        &consent,
        "SELECT count(*) FROM register WHERE $1::uuid IS NOT NULL",
        &campaign,
        1,
        "the opt-out",
    )
    .await?;
    system
        .submit("751", &campaign, "rk-1", vec![people::flu(32)])
        .await?;
    let dialer = db(&system, "dialer-queue").await?;
    count_is(
        &dialer,
        "SELECT count(*) FROM queue WHERE campaign_id = $1",
        &campaign,
        1,
        "the call queued",
    )
    .await?;

    let mut rights = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    let answer = rights
        .rectify_person_data(RectifyRequest {
            fund_code: "751".into(),
            person: nir(32),
            campaign_id: campaign.clone(),
            fields: HashMap::from([("nir".to_string(), nir_of(31))]),
            reason: "NIR corrigé".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answer.contacts[0].fields_changed, vec!["nir"]);
    let contact_id = answer.contacts[0].contact_id.clone();
    // The register follows the person: the contact is withdrawn as suppressed by consent.
    let scheduler = db(&system, "scheduler").await?;
    count_is(&scheduler, "SELECT count(*) FROM plans WHERE contact_id = $1 AND status = 'closed' AND final_status = 'suppressed_by_consent'", &contact_id, 1, "the plan closed").await?;
    count_is(
        &dialer,
        "SELECT count(*) FROM queue WHERE campaign_id = $1",
        &campaign,
        0,
        "the queued call withdrawn",
    )
    .await?;
    let results = db(&system, "results").await?;
    count_is(
        &results,
        "SELECT count(*) FROM results WHERE contact_id = $1 AND final_status = 5",
        &contact_id,
        1,
        "the fund's result",
    )
    .await?;
    // The decision and the plan carry the new person key, the register's.
    let (register_key,): (String,) = sqlx::query_as("SELECT person_key FROM register")
        .fetch_one(&consent)
        .await?;
    let (decision_key,): (String,) =
        sqlx::query_as("SELECT person_key FROM decisions WHERE contact_id = $1")
            .bind(uuid_or_text(&contact_id))
            .fetch_one(&consent)
            .await?;
    assert_eq!(decision_key, register_key);
    let (plan_key,): (String,) =
        sqlx::query_as("SELECT person_key FROM plans WHERE contact_id = $1")
            .bind(uuid_or_text(&contact_id))
            .fetch_one(&scheduler)
            .await?;
    assert_eq!(plan_key, register_key);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_erased_ameli_code_stays_erased_through_rectification_and_export() -> Result<()> {
    use cnmas_proto::intake::{contact_submission::ThemeFields, AmeliActivationFields};
    let system = System::start().await?;
    let campaign = system
        .active_campaign("751", Theme::AmeliActivation, &[])
        .await?;
    let mut contact = people::flu(41);
    contact.theme_fields = Some(ThemeFields::AmeliActivation(AmeliActivationFields {
        provisional_code: "AB12CD34".into(),
    }));
    system
        .submit("751", &campaign, "am-1", vec![contact])
        .await?;
    let intake = db(&system, "intake").await?;
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1",
        &campaign,
        1,
        "the contact",
    )
    .await?;
    let mut rights = system
        .rights_api(system.token(Role::Fund, Some("751"), None))
        .await?;
    // While the campaign runs, the export shows the code exists, never its value.
    let export = rights
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(41),
        })
        .await?
        .into_inner();
    assert!(!export.json.contains("AB12CD34"));
    assert!(export.json.contains("ameli_provisional_code"));
    // The campaign ends: the code is erased; the rest of the contact can still be corrected.
    system
        .campaigns(system.token(Role::Fund, Some("751"), None))
        .await?
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "end".into(),
        })
        .await?;
    count_is(
        &intake,
        "SELECT count(*) FROM contacts WHERE campaign_id = $1 AND ameli_code_erased_at IS NOT NULL",
        &campaign,
        1,
        "the code erased",
    )
    .await?;
    let rectify = |field: &str, value: &str| RectifyRequest {
        fund_code: "751".into(),
        person: nir(41),
        campaign_id: String::new(),
        fields: HashMap::from([(field.to_string(), value.to_string())]),
        reason: String::new(),
    };
    let answer = rights
        .rectify_person_data(rectify("email", "camille@example.fr"))
        .await?
        .into_inner();
    assert_eq!(answer.contacts[0].fields_changed, vec!["email"]);
    let e = rights
        .rectify_person_data(rectify("ameli_provisional_code", "ZZ99"))
        .await
        .expect_err("an erased credential");
    assert!(
        e.message()
            .contains("fields.ameli_provisional_code: rectification.credential_erased"),
        "{}",
        e.message()
    );
    let export = rights
        .export_person_data(SubjectAccessRequest {
            fund_code: "751".into(),
            person: nir(41),
        })
        .await?
        .into_inner();
    assert!(export.json.contains("camille@example.fr"));
    assert!(
        !export.json.contains("ameli_provisional_code"),
        "the code came back"
    );
    system.stop().await;
    Ok(())
}
