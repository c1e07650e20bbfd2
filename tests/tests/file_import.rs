//! Contact files uploaded to intake (`FileImportService`), end to end against the real
//! PostgreSQL and NATS: mixed good and bad rows in both encodings and both separators, BOM,
//! resumed uploads, the same file twice, limits, the rejection report, fund scope; and the
//! provisional AMELI code erased when its campaign ends.

use anyhow::Result;
use cnmas_proto::common::Theme;
use cnmas_proto::intake::contact_submission::Person;
use cnmas_proto::intake::file_import_service_client::FileImportServiceClient;
use cnmas_proto::intake::{
    upload_file_request::Part, ContactRejected, FileChunk, FileEncoding, GetCallCardRequest,
    GetCallCardsRequest, GetImportRequest, GetRejectionReportRequest, ImportStart, ImportState,
    ImportSummary, RowRejection, UploadFileRequest,
};
use cnmas_proto::scheduler::CampaignTransitionRequest;
use cnmas_runtime::auth::Role;
use cnmas_system_tests::{eventually, people, take, Authed, System, VAULT_KEYS};
use futures::{SinkExt, StreamExt};
use sqlx::{PgPool, Row};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tonic::Code;
use uuid::Uuid;

const FUND: &str = "751";
const WAIT: Duration = Duration::from_secs(30);

type Imports = FileImportServiceClient<Authed>;

/// The NIR, phone and birth date of the `i`-th test person of the harness.
fn person(i: usize) -> (String, String, String) {
    let c = people::flu(i);
    let Some(Person::Insured(p)) = c.person else {
        unreachable!("people::flu gives insured people")
    };
    let phone = c.contact_details.map(|d| d.phone).unwrap_or_default();
    (p.nir, phone, p.birth_date)
}

/// A flu-vaccination file: `good` valid people (row 2 on), then five bad rows (rows
/// good+2 … good+6): a wrong NIR key, a foreign phone, a bad yes/no, a short row, and the
/// first person again under another reference.
fn flu_file(first: usize, good: usize, sep: char) -> String {
    let mut text = String::from(
        "submission_ref;nir;last_name;first_name;birth_date;phone;postcode;flu_vaccinated\r\n",
    );
    let names = ["Hélène", "Jérôme", "Zoë", "Anaïs", "Noël"];
    for i in first..first + good {
        let (nir, phone, birth) = person(i);
        // Every other row has no reference: intake derives one from the import and the row.
        let r = if i % 2 == 0 {
            format!("ok-{i}")
        } else {
            String::new()
        };
        let birth = if i % 3 == 0 {
            let (y, m, d) = (&birth[0..4], &birth[5..7], &birth[8..10]);
            format!("{d}/{m}/{y}")
        } else {
            birth
        };
        text += &format!(
            "{r};{nir};Martin;{};{birth};{phone};75011;non\r\n",
            names[i % names.len()]
        );
    }
    let (nir, phone, birth) = person(first);
    let mut wrong_key = nir.clone();
    wrong_key.replace_range(13..15, if &nir[13..15] == "01" { "02" } else { "01" });
    let (other_nir, _, other_birth) = person(first + 500);
    text += &format!("bad-key;{wrong_key};Martin;Paul;{birth};{phone};75011;non\r\n");
    text +=
        &format!("bad-phone;{other_nir};Martin;Paul;{other_birth};+44 20 7946 0000;75011;oui\r\n");
    let (n3, p3, b3) = person(first + 501);
    text += &format!("bad-bool;{n3};Martin;Paul;{b3};{p3};75011;peut-être\r\n");
    text += "bad-short;1;2\r\n";
    text += &format!("again;{nir};Martin;Paul;{birth};{phone};75011;non");
    if sep == ',' {
        text = text.replace(';', ",");
    }
    text
}

/// Windows-1252 bytes of text made of Latin-1 characters.
fn windows_1252(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a Latin-1 character"))
        .collect()
}

fn start(import_id: &str, campaign: &str, data: &[u8], encoding: FileEncoding) -> ImportStart {
    // Intake compares the hash on resumption; any stable value per file serves the tests.
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, data)
        .simple()
        .to_string();
    ImportStart {
        import_id: import_id.into(),
        campaign_id: campaign.into(),
        file_size: data.len() as u64,
        sha256: format!("{digest}{digest}"),
        encoding: encoding as i32,
        file_name: "contacts.csv".into(),
    }
}

/// `start`, then `data[from..to]` in chunks of `chunk` bytes.
fn messages(
    start: ImportStart,
    data: &[u8],
    from: usize,
    to: usize,
    chunk: usize,
) -> Vec<UploadFileRequest> {
    let mut m = vec![UploadFileRequest {
        part: Some(Part::Start(start)),
    }];
    let mut offset = from;
    for c in data[from..to].chunks(chunk) {
        m.push(UploadFileRequest {
            part: Some(Part::Chunk(FileChunk {
                offset: offset as u64,
                data: c.to_vec(),
            })),
        });
        offset += c.len();
    }
    m
}

async fn upload(
    api: &mut Imports,
    start: ImportStart,
    data: &[u8],
    chunk: usize,
) -> Result<ImportSummary, tonic::Status> {
    let m = messages(start, data, 0, data.len(), chunk);
    Ok(api
        .upload_file(futures::stream::iter(m))
        .await?
        .into_inner())
}

async fn report(api: &mut Imports, import_id: &str) -> Result<Vec<RowRejection>> {
    let mut s = api
        .get_rejection_report(GetRejectionReportRequest {
            import_id: import_id.into(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r?);
    }
    Ok(out)
}

async fn contacts_in(pool: &PgPool, campaign: &str) -> Result<i64> {
    Ok(
        sqlx::query("SELECT count(*) AS n FROM contacts WHERE campaign_id = $1")
            .bind(Uuid::parse_str(campaign)?)
            .fetch_one(pool)
            .await?
            .get("n"),
    )
}

/// The personal fields of one stored contact, opened with the test vault key.
async fn sealed_fields(pool: &PgPool, contact_id: Uuid) -> Result<HashMap<String, String>> {
    let vault = cnmas_intake::vault::Vault::new(VAULT_KEYS, "k1")?;
    let r = sqlx::query("SELECT key_id, nonce, sealed FROM contacts WHERE contact_id = $1")
        .bind(contact_id)
        .fetch_one(pool)
        .await?;
    let plain = vault.open(
        r.get("key_id"),
        contact_id.as_bytes(),
        r.get("nonce"),
        r.get("sealed"),
    )?;
    Ok(serde_json::from_slice(&plain)?)
}

fn expected_rejections(first_bad: u64) -> BTreeSet<(u64, String, String)> {
    [
        (0, "nir", "nir.key_mismatch"),
        (1, "phone", "phone.not_french"),
        (2, "flu_vaccinated", "csv.boolean"),
        (3, "", "csv.columns"),
        (4, "person", "contact.duplicate_person"),
    ]
    .into_iter()
    .map(|(d, f, r)| (first_bad + d, f.to_string(), r.to_string()))
    .collect()
}

#[tokio::test]
async fn files_in_both_encodings_and_separators_accept_good_rows_and_report_bad_ones() -> Result<()>
{
    let system = System::start().await?;
    let pool = PgPool::connect(system.database_url("intake")).await?;
    let mut api = system
        .file_imports(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let rejections = system
        .fund_consumer(FUND, "rejection", "fund_751_rej")
        .await?;
    let variants: [(&str, char, bool, FileEncoding); 4] = [
        ("utf8-bom-semicolon", ';', true, FileEncoding::Unspecified),
        ("utf8-comma", ',', false, FileEncoding::Utf8),
        ("cp1252-semicolon", ';', false, FileEncoding::Unspecified),
        ("cp1252-comma", ',', false, FileEncoding::Windows1252),
    ];
    let mut campaigns = HashMap::new();
    for (name, sep, bom, declared) in variants {
        let campaign = system
            .active_campaign(FUND, Theme::FluVaccination, &[])
            .await?;
        let text = flu_file(0, 5, sep);
        let data = if name.starts_with("cp1252") {
            windows_1252(&text)
        } else if bom {
            [&b"\xEF\xBB\xBF"[..], text.as_bytes()].concat()
        } else {
            text.into_bytes()
        };
        let s = upload(&mut api, start(name, &campaign, &data, declared), &data, 7).await?;
        assert_eq!(s.state, ImportState::Completed as i32, "{name}");
        assert_eq!(
            (
                s.rows_read,
                s.rows_accepted,
                s.rows_rejected,
                s.rows_duplicate
            ),
            (10, 5, 5, 1),
            "{name}"
        );
        assert_eq!(s.next_offset, data.len() as u64, "{name}");
        let expected_encoding = if name.starts_with("cp1252") {
            "windows-1252"
        } else {
            "utf-8"
        };
        assert_eq!(
            (s.encoding.as_str(), s.delimiter.as_str()),
            (expected_encoding, &*sep.to_string())
        );
        assert_eq!(contacts_in(&pool, &campaign).await?, 5, "{name}");

        // Accents survive either encoding.
        let id: Uuid = sqlx::query(
            "SELECT contact_id FROM contacts WHERE campaign_id = $1 AND submission_ref = 'ok-0'",
        )
        .bind(Uuid::parse_str(&campaign)?)
        .fetch_one(&pool)
        .await?
        .get("contact_id");
        let fields = sealed_fields(&pool, id).await?;
        assert_eq!(fields["first_name"], "Hélène", "{name}");

        let lines = report(&mut api, name).await?;
        let got: BTreeSet<(u64, String, String)> = lines
            .iter()
            .map(|l| (l.row, l.field.clone(), l.rule.clone()))
            .collect();
        assert_eq!(got, expected_rejections(7), "{name}");
        let (bad_nir, _, _) = person(0);
        for l in &lines {
            // Never the refused values.
            assert!(!l.message.contains("7946") && !l.message.contains(&bad_nir[..13]));
            assert!(!l.submission_ref.is_empty());
        }
        campaigns.insert(campaign, name);
    }
    // Every refused row also reached the fund's rejection subject, numbered by its row.
    let events: Vec<(String, ContactRejected)> = take(&rejections, 20, WAIT).await?;
    let mut rows_by_campaign: HashMap<String, BTreeSet<u32>> = HashMap::new();
    for (_, e) in events {
        let env = e.envelope.unwrap_or_default();
        assert!(env.correlation_id.starts_with("import:751:"));
        assert!(campaigns.contains_key(&env.campaign_id));
        rows_by_campaign
            .entry(env.campaign_id)
            .or_default()
            .insert(e.index);
    }
    for rows in rows_by_campaign.values() {
        assert_eq!(rows, &(7..=11).collect::<BTreeSet<u32>>());
    }
    assert_eq!(rows_by_campaign.len(), 4);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_interrupted_upload_resumes_and_the_same_file_twice_creates_nothing() -> Result<()> {
    let mut system = System::start().await?;
    // Small batches, so progress is committed many times within the file.
    system.stop_service("intake").await;
    system.intake_limits.batch_rows = 4;
    system.start_service("intake").await?;
    let pool = PgPool::connect(system.database_url("intake")).await?;
    let mut api = system
        .file_imports(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let data = flu_file(100, 30, ';').into_bytes();
    // Declared, as cnmasctl does: an undeclared encoding waits for 64 KiB before reading rows.
    let st = start("resumable", &campaign, &data, FileEncoding::Utf8);

    // 1. The connection drops in the middle: the client's task dies with its stream open.
    let (mut tx, rx) = futures::channel::mpsc::channel::<UploadFileRequest>(4);
    let mut dropped = api.clone();
    let upload_task = tokio::spawn(async move { dropped.upload_file(rx).await });
    let half = data.len() / 2;
    for m in messages(st.clone(), &data, 0, half, 50) {
        tx.send(m).await?;
    }
    let progress = eventually(WAIT, "committed progress", || {
        let mut api = api.clone();
        async move {
            let s = api
                .get_import(GetImportRequest {
                    import_id: "resumable".into(),
                })
                .await;
            Ok(s.ok().map(|s| s.into_inner()).filter(|s| s.rows_read >= 8))
        }
    })
    .await?;
    assert_eq!(progress.state, ImportState::Receiving as i32);
    upload_task.abort();
    drop(tx);

    // 2. The client resumes from the committed offset and its stream ends early again: every
    //    complete row it sent is kept. (The dropped upload may still commit its last rows
    //    meanwhile; the resumption then finds the import moved on, ABORTED, and asks again,
    //    as cnmasctl does.)
    let cut = data.len() - 40;
    let mut attempts = 0;
    let s = loop {
        attempts += 1;
        let at = api
            .get_import(GetImportRequest {
                import_id: "resumable".into(),
            })
            .await?
            .into_inner();
        assert!(at.rows_read >= progress.rows_read);
        let sent = api
            .upload_file(futures::stream::iter(messages(
                st.clone(),
                &data,
                at.next_offset as usize,
                cut,
                64,
            )))
            .await;
        match sent {
            Ok(s) => break s.into_inner(),
            Err(e) if e.code() == Code::Aborted && attempts < 10 => continue,
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(s.state, ImportState::Receiving as i32);
    // A row is complete once its line end arrived (a record ends at its CR).
    let complete_rows = data[..cut].iter().filter(|&&b| b == b'\r').count() as u64 - 1;
    assert_eq!(s.rows_read, complete_rows);
    assert!(s.next_offset < cut as u64);
    assert_eq!(contacts_in(&pool, &campaign).await?, s.rows_accepted as i64);

    // 3. A chunk past the committed offset is refused: there would be a hole.
    let gap = s.next_offset as usize + 10;
    let e = api
        .upload_file(futures::stream::iter(messages(
            st.clone(),
            &data,
            gap,
            data.len(),
            64,
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");

    // 4. From the start again: the bytes already committed are skipped, up to the end.
    let s = upload(&mut api, st.clone(), &data, 100).await?;
    assert_eq!(s.state, ImportState::Completed as i32);
    assert_eq!(
        (
            s.rows_read,
            s.rows_accepted,
            s.rows_rejected,
            s.rows_duplicate
        ),
        (35, 30, 5, 1)
    );
    assert_eq!(contacts_in(&pool, &campaign).await?, 30);
    assert_eq!(report(&mut api, "resumable").await?.len(), 5);

    // 5. The same file again: the finished import answers, nothing is read or created.
    let again = upload(&mut api, st.clone(), &data, 100).await?;
    assert_eq!(again.rows_read, 35);
    assert_eq!(again.updated_at, s.updated_at);
    // Under another import id: every person is already there.
    let other = upload(
        &mut api,
        start("resent", &campaign, &data, FileEncoding::Unspecified),
        &data,
        1000,
    )
    .await?;
    assert_eq!(other.state, ImportState::Completed as i32);
    // Rows with their own reference were already received; the others (references derived
    // from the import) are the same people again.
    assert_eq!(
        (
            other.rows_accepted,
            other.rows_already_received,
            other.rows_duplicate
        ),
        (0, 15, 16)
    );
    assert_eq!(contacts_in(&pool, &campaign).await?, 30);
    // An import id cannot be reused for another file.
    let mut changed = data.clone();
    changed.extend_from_slice(b"\r\n");
    let e = upload(
        &mut api,
        start("resumable", &campaign, &changed, FileEncoding::Unspecified),
        &changed,
        100,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn limits_and_malformed_files_get_clear_errors() -> Result<()> {
    let mut system = System::start().await?;
    system.stop_service("intake").await;
    system.intake_limits.max_file_bytes = 4000;
    system.intake_limits.max_rows = 3;
    system.intake_limits.file.max_row_bytes = 200;
    system.intake_limits.file.max_field_chars = 30;
    system.intake_limits.max_contacts_per_message = 2;
    system.start_service("intake").await?;
    let pool = PgPool::connect(system.database_url("intake")).await?;
    let mut api = system
        .file_imports(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let header = "nir;last_name;first_name;birth_date;phone\n";
    let row = |i: usize, last_name: &str| {
        let (nir, phone, birth) = person(i);
        format!("{nir};{last_name};Camille;{birth};{phone}\n")
    };

    // The whole file is over the size limit: refused before any byte is read.
    let mut big = header.to_string();
    big += &"x".repeat(5000);
    let e = upload(
        &mut api,
        start("big", &campaign, big.as_bytes(), FileEncoding::Utf8),
        big.as_bytes(),
        1000,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("file_size: file.too_large"),
        "{}",
        e.message()
    );

    // A row too long and a cell too long are refused; the rows around them are not.
    let mut text = header.to_string();
    text += &row(1, "Martin");
    text += &row(2, &"L".repeat(300));
    text += &row(3, &"M".repeat(31));
    let s = upload(
        &mut api,
        start("sizes", &campaign, text.as_bytes(), FileEncoding::Utf8),
        text.as_bytes(),
        64,
    )
    .await?;
    assert_eq!((s.rows_read, s.rows_accepted, s.rows_rejected), (3, 1, 2));
    let got: BTreeSet<(u64, String, String)> = report(&mut api, "sizes")
        .await?
        .into_iter()
        .map(|l| (l.row, l.field, l.rule))
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            (3, String::new(), "csv.row_too_long".to_string()),
            (4, "last_name".to_string(), "csv.field_too_long".to_string()),
        ])
    );

    // More rows than allowed: the first ones are kept, the import fails with the reason.
    let mut many = header.to_string();
    for i in 10..15 {
        many += &row(i, "Martin");
    }
    let e = upload(
        &mut api,
        start("many", &campaign, many.as_bytes(), FileEncoding::Utf8),
        many.as_bytes(),
        64,
    )
    .await
    .unwrap_err();
    assert!(
        e.message().starts_with("file: file.too_many_rows"),
        "{}",
        e.message()
    );
    let s = api
        .get_import(GetImportRequest {
            import_id: "many".into(),
        })
        .await?
        .into_inner();
    assert_eq!(s.state, ImportState::Failed as i32);
    assert_eq!(
        (s.rows_read, s.failure_rule.as_str()),
        (3, "file.too_many_rows")
    );
    assert_eq!(contacts_in(&pool, &campaign).await?, 1 + 3);

    // Malformed files: nothing recorded, a precise error, and the service goes on.
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "unknown",
            b"nir;shoe_size\n1;2\n",
            "header: csv.unknown_column",
        ),
        (
            "not-allowed",
            b"nir;last_name;first_name;birth_date;phone;siret\n",
            "header: csv.column_not_allowed",
        ),
        (
            "missing",
            b"nir;last_name\n1;2\n",
            "header: csv.missing_column",
        ),
        ("utf16", b"\xFF\xFEn\0i\0r\0\n\0", "header: file.encoding"),
        ("no-header", b"\n\n\n", "header: csv.no_header"),
    ];
    for (id, bytes, prefix) in cases {
        let e = upload(
            &mut api,
            start(id, &campaign, bytes, FileEncoding::Unspecified),
            bytes,
            3,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id}");
        assert!(e.message().starts_with(prefix), "{id}: {}", e.message());
        let e = api
            .get_import(GetImportRequest {
                import_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{id}");
    }
    // A header that is a row of data is refused without quoting it.
    let (nir, phone, birth) = person(40);
    let data_row = format!("{nir};Martin;Camille;{birth};{phone}\n");
    let e = upload(
        &mut api,
        start(
            "headless",
            &campaign,
            data_row.as_bytes(),
            FileEncoding::Utf8,
        ),
        data_row.as_bytes(),
        64,
    )
    .await
    .unwrap_err();
    assert!(!e.message().contains(&nir[..13]), "{}", e.message());
    // A file larger than declared.
    let mut st = start("liar", &campaign, text.as_bytes(), FileEncoding::Utf8);
    st.file_size = 20;
    let e = upload(&mut api, st, text.as_bytes(), 64).await.unwrap_err();
    assert!(
        e.message().contains("file.size_mismatch"),
        "{}",
        e.message()
    );

    // The NATS path has its own limit on contacts per message.
    let rejections = system
        .fund_consumer(FUND, "rejection", "fund_751_lim")
        .await?;
    system
        .submit(
            FUND,
            &campaign,
            "too-many",
            (60..63).map(people::flu).collect(),
        )
        .await?;
    // The consumer also gets the two rows refused in the file above.
    let got: Vec<(String, ContactRejected)> = take(&rejections, 3, WAIT).await?;
    assert!(got
        .iter()
        .any(|(_, r)| r.reasons[0].rule == "message.too_many_contacts"));
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_fund_imports_only_into_its_own_campaigns() -> Result<()> {
    let system = System::start().await?;
    let campaign = system
        .active_campaign(FUND, Theme::FluVaccination, &[])
        .await?;
    let data = flu_file(200, 2, ';').into_bytes();
    let mut other = system
        .file_imports(system.token(Role::Fund, Some("976"), None))
        .await?;
    let e = upload(
        &mut other,
        start("x", &campaign, &data, FileEncoding::Utf8),
        &data,
        100,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut mine = system
        .file_imports(system.token(Role::Fund, Some(FUND), None))
        .await?;
    upload(
        &mut mine,
        start("x", &campaign, &data, FileEncoding::Utf8),
        &data,
        100,
    )
    .await?;
    // Another fund sees neither the import nor its report.
    let e = other
        .get_import(GetImportRequest {
            import_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        report(&mut other, "x")
            .await
            .unwrap_err()
            .downcast::<tonic::Status>()?
            .code(),
        Code::NotFound
    );
    let mut agent = system
        .file_imports(system.token(Role::Agent, None, Some("agent-1")))
        .await?;
    let e = upload(
        &mut agent,
        start("y", &campaign, &data, FileEncoding::Utf8),
        &data,
        100,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    system.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_ameli_code_is_erased_when_the_campaign_ends() -> Result<()> {
    let system = System::start().await?;
    let pool = PgPool::connect(system.database_url("intake")).await?;
    let campaign = system
        .active_campaign(FUND, Theme::AmeliActivation, &[])
        .await?;
    let mut text = String::from("nir;last_name;first_name;phone;ameli_provisional_code\n");
    for i in 300..303 {
        let (nir, phone, _) = person(i);
        text += &format!("{nir};Martin;Camille;{phone};CODE{i}X\n");
    }
    let mut api = system
        .file_imports(system.token(Role::Fund, Some(FUND), None))
        .await?;
    let s = upload(
        &mut api,
        start("ameli", &campaign, text.as_bytes(), FileEncoding::Utf8),
        text.as_bytes(),
        50,
    )
    .await?;
    assert_eq!(s.rows_accepted, 3);
    let ids: Vec<Uuid> = sqlx::query("SELECT contact_id FROM contacts WHERE campaign_id = $1")
        .bind(Uuid::parse_str(&campaign)?)
        .fetch_all(&pool)
        .await?
        .iter()
        .map(|r| r.get("contact_id"))
        .collect();
    assert_eq!(ids.len(), 3);
    let code_of = |f: &HashMap<String, String>| f.get("ameli_provisional_code").cloned();
    assert!(code_of(&sealed_fields(&pool, ids[0]).await?).is_some_and(|c| c.starts_with("CODE")));
    let mut intake = system
        .intake_api(system.token(Role::Service, None, None))
        .await?;
    // The card as the dialer gets it, in a request of its own.
    let card_of = |id: Uuid| {
        let mut intake = intake.clone();
        let request = GetCallCardsRequest {
            cards: vec![GetCallCardRequest {
                contact_id: id.to_string(),
                campaign_id: campaign.clone(),
                agent_id: "agent-1".into(),
                lease_id: "lease-1".into(),
            }],
        };
        async move {
            let cards = intake.get_call_cards(request).await?.into_inner().cards;
            cards
                .into_iter()
                .next()
                .and_then(|c| c.card)
                .ok_or_else(|| anyhow::anyhow!("no card for the contact"))
        }
    };
    let before = card_of(ids[0]).await?;
    let field = before
        .fields
        .iter()
        .find(|f| f.field == "ameli_provisional_code")
        .expect("the code on the card");
    assert!(field.masked);

    // An upload left half-way before the campaign ends cannot be finished after.
    let mut partial = String::from("nir;last_name;first_name;phone;ameli_provisional_code\n");
    for i in 310..320 {
        let (nir, phone, _) = person(i);
        partial += &format!("{nir};Martin;Camille;{phone};CODE{i}X\n");
    }
    let partial_start = start("partial", &campaign, partial.as_bytes(), FileEncoding::Utf8);
    let half = partial.len() / 2;
    let s = api
        .upload_file(futures::stream::iter(messages(
            partial_start.clone(),
            partial.as_bytes(),
            0,
            half,
            40,
        )))
        .await?
        .into_inner();
    assert_eq!(s.state, ImportState::Receiving as i32);

    system
        .campaigns(system.token(Role::Fund, Some(FUND), None))
        .await?
        .cancel_campaign(CampaignTransitionRequest {
            campaign_id: campaign.clone(),
            reason: "test".into(),
        })
        .await?;
    let erased = eventually(WAIT, "the codes erased", || {
        let pool = pool.clone();
        let campaign = campaign.clone();
        async move {
            let r = sqlx::query(
                "SELECT contacts, campaign_state FROM ameli_code_erasures WHERE campaign_id = $1",
            )
            .bind(Uuid::parse_str(&campaign)?)
            .fetch_optional(&pool)
            .await?;
            Ok(r.map(|r| {
                (
                    r.get::<i64, _>("contacts"),
                    r.get::<String, _>("campaign_state"),
                )
            }))
        }
    })
    .await?;
    let stored = contacts_in(&pool, &campaign).await?;
    assert_eq!(erased, (stored, "cancelled".to_string()));
    for id in &ids {
        let fields = sealed_fields(&pool, *id).await?;
        assert_eq!(code_of(&fields), None);
        // The rest of the contact stays.
        assert_eq!(fields["last_name"], "Martin");
        let at: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query("SELECT ameli_code_erased_at FROM contacts WHERE contact_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await?
                .get("ameli_code_erased_at");
        assert!(at.is_some());
    }
    let after = card_of(ids[1]).await?;
    let field = after
        .fields
        .iter()
        .find(|f| f.field == "ameli_provisional_code")
        .expect("the card says what became of the code");
    assert_eq!(field.value, "effacé à la fin de la campagne");
    assert!(!field.masked);
    // Nor can it be revealed any more.
    let e = intake
        .reveal_card_field(cnmas_proto::intake::RevealCardFieldRequest {
            contact_id: ids[1].to_string(),
            campaign_id: campaign.clone(),
            agent_id: "agent-1".into(),
            lease_id: "lease-1".into(),
            field: "ameli_provisional_code".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("field.erased"), "{e:?}");
    let e = upload(&mut api, partial_start, partial.as_bytes(), 40)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let s = api
        .get_import(GetImportRequest {
            import_id: "partial".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        (s.state, s.failure_rule.as_str()),
        (ImportState::Failed as i32, "campaign.closed")
    );
    // A closed campaign takes no new file.
    let e = upload(
        &mut api,
        start("late", &campaign, text.as_bytes(), FileEncoding::Utf8),
        text.as_bytes(),
        50,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    system.stop().await;
    Ok(())
}
