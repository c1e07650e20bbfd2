//! Contact files uploaded by a fund over gRPC (`FileImportService`): read as they stream in,
//! row by row, in batches of `CNMAS_IMPORT_BATCH_ROWS` rows; each batch goes through the same
//! admission as NATS submissions ([`crate::intake::admit`]) in one transaction that also records
//! the rejections and the import's progress (the end offset of the last row applied). An
//! interrupted upload resumes at that offset; the same import sent again changes nothing.

use crate::intake::{admit, rejection, Fate, Item, Origin};
use crate::State;
use cnmas_bus::{HandlerError, Outbox};
use cnmas_domain::geo::Territory;
use cnmas_domain::theme::Theme;
use cnmas_intake_files::{
    ColumnMap, Encoding, FileError, HeaderReader, RawRow, RowError, RowParser,
};
use cnmas_proto::common::Reason;
use cnmas_proto::intake::file_import_service_server::FileImportService;
use cnmas_proto::intake::{
    self as pb, upload_file_request::Part, FileEncoding, ImportState, ImportSummary,
};
use cnmas_proto::support::{derived_id, timestamp};
use cnmas_runtime::auth::{principal, Role};
use cnmas_runtime::config::parse_var;
use futures::{Stream, StreamExt};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

/// The sizes intake accepts, from its environment (the README's configuration table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `CNMAS_IMPORT_MAX_FILE_BYTES`: the largest file.
    pub max_file_bytes: u64,
    /// `CNMAS_IMPORT_MAX_ROWS`: the most data rows in a file.
    pub max_rows: u64,
    /// `CNMAS_IMPORT_MAX_ROW_BYTES` and `CNMAS_IMPORT_MAX_FIELD_CHARS`.
    pub file: cnmas_intake_files::Limits,
    /// `CNMAS_IMPORT_BATCH_ROWS`: rows applied per transaction.
    pub batch_rows: usize,
    /// `CNMAS_INTAKE_MAX_CONTACTS_PER_MESSAGE`: the most contacts in one NATS message.
    pub max_contacts_per_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 512 * 1024 * 1024,
            max_rows: 1_000_000,
            file: cnmas_intake_files::Limits::default(),
            batch_rows: 1000,
            max_contacts_per_message: 10_000,
        }
    }
}

impl Limits {
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Limits::default();
        let limits = Limits {
            max_file_bytes: parse_var("CNMAS_IMPORT_MAX_FILE_BYTES", d.max_file_bytes)?,
            max_rows: parse_var("CNMAS_IMPORT_MAX_ROWS", d.max_rows)?,
            file: cnmas_intake_files::Limits {
                max_row_bytes: parse_var("CNMAS_IMPORT_MAX_ROW_BYTES", d.file.max_row_bytes)?,
                max_field_chars: parse_var("CNMAS_IMPORT_MAX_FIELD_CHARS", d.file.max_field_chars)?,
            },
            batch_rows: parse_var("CNMAS_IMPORT_BATCH_ROWS", d.batch_rows)?,
            max_contacts_per_message: parse_var(
                "CNMAS_INTAKE_MAX_CONTACTS_PER_MESSAGE",
                d.max_contacts_per_message,
            )?,
        };
        if limits.max_file_bytes == 0
            || limits.max_rows == 0
            || limits.file.max_row_bytes < 64
            || limits.file.max_field_chars == 0
            || !(1..=10_000).contains(&limits.batch_rows)
            || limits.max_contacts_per_message == 0
        {
            anyhow::bail!(
                "import limits must be positive, CNMAS_IMPORT_MAX_ROW_BYTES at least 64 and \
                 CNMAS_IMPORT_BATCH_ROWS between 1 and 10000"
            );
        }
        Ok(limits)
    }
}

/// The largest chunk of a file in one message.
const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// How long an upload waits for a campaign intake has not heard of yet (just created).
const CAMPAIGN_WAIT: Duration = Duration::from_secs(5);

pub struct FileImportApi {
    pub state: Arc<State>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "file import failure");
    Status::internal("internal error")
}

fn handler_error(e: HandlerError) -> Status {
    internal(e)
}

/// `INVALID_ARGUMENT` worded `field: rule: message`, like every API of CNMAS.
fn invalid(field: &str, rule: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {rule}: {message}"))
}

fn file_error(e: &FileError) -> Status {
    invalid("header", e.code(), e)
}

fn check_import_id(id: &str) -> Result<(), Status> {
    if !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Ok(())
    } else {
        Err(invalid(
            "import_id",
            "import_id.format",
            "1 to 100 characters of letters, digits, '.', '_', ':' or '-'",
        ))
    }
}

fn fund_of(who: &cnmas_runtime::auth::Principal) -> Result<String, Status> {
    who.require(&[Role::Fund])?;
    who.fund
        .clone()
        .ok_or_else(|| Status::permission_denied("a fund token is required"))
}

/// An import as stored.
struct Import {
    fund_code: String,
    import_id: String,
    campaign_id: Uuid,
    theme: Theme,
    state: String,
    file_size: u64,
    sha256: String,
    encoding: Encoding,
    delimiter: u8,
    columns: Vec<String>,
    next_offset: u64,
    next_row: u64,
    rows_read: u64,
}

impl Import {
    fn from_row(r: &PgRow) -> Result<Self, Status> {
        Ok(Import {
            fund_code: r.get("fund_code"),
            import_id: r.get("import_id"),
            campaign_id: r.get("campaign_id"),
            theme: Theme::from_code(r.get("theme")).ok_or_else(|| internal("stored theme"))?,
            state: r.get("state"),
            file_size: r.get::<i64, _>("file_size") as u64,
            sha256: r.get("sha256"),
            encoding: Encoding::from_code(r.get("encoding"))
                .ok_or_else(|| internal("stored encoding"))?,
            delimiter: r
                .get::<String, _>("delimiter")
                .bytes()
                .next()
                .unwrap_or(b';'),
            columns: r.get("columns"),
            next_offset: r.get::<i64, _>("next_offset") as u64,
            next_row: r.get::<i64, _>("next_row") as u64,
            rows_read: r.get::<i64, _>("rows_read") as u64,
        })
    }

    /// The events' correlation and the rejections' id prefix.
    fn correlation(&self) -> String {
        format!("import:{}:{}", self.fund_code, self.import_id)
    }

    /// Prefix of the references of rows without their own (`<prefix>-<row>`, ≤ 64 chars).
    fn ref_prefix(&self) -> String {
        let id = derived_id(&["import", &self.fund_code, &self.import_id]).replace('-', "");
        format!("i{}", &id[..12])
    }
}

fn summary(r: &PgRow) -> ImportSummary {
    let state = match r.get::<String, _>("state").as_str() {
        "receiving" => ImportState::Receiving,
        "completed" => ImportState::Completed,
        "failed" => ImportState::Failed,
        _ => ImportState::Unspecified,
    };
    let n = |c: &str| r.get::<i64, _>(c) as u64;
    ImportSummary {
        import_id: r.get("import_id"),
        campaign_id: r.get::<Uuid, _>("campaign_id").to_string(),
        state: state as i32,
        file_size: n("file_size"),
        next_offset: n("next_offset"),
        rows_read: n("rows_read"),
        rows_accepted: n("rows_accepted"),
        rows_rejected: n("rows_rejected"),
        rows_duplicate: n("rows_duplicate"),
        rows_already_received: n("rows_already_received"),
        encoding: r.get("encoding"),
        delimiter: r.get("delimiter"),
        failure_rule: r.get("failure_rule"),
        failure_message: r.get("failure_message"),
        created_at: Some(timestamp(r.get("created_at"))),
        updated_at: Some(timestamp(r.get("updated_at"))),
        file_name: r.get("file_name"),
    }
}

const SELECT_IMPORT: &str = "SELECT * FROM imports WHERE fund_code = $1 AND import_id = $2";

/// A report line: row, reference, and one reason.
struct ReportLine {
    row: u64,
    submission_ref: String,
    reason: Reason,
}

/// The counts a batch adds to its import.
#[derive(Default)]
struct Counts {
    read: i64,
    accepted: i64,
    rejected: i64,
    duplicate: i64,
    already: i64,
}

impl FileImportApi {
    async fn load(&self, fund: &str, import_id: &str) -> Result<Option<PgRow>, Status> {
        sqlx::query(SELECT_IMPORT)
            .bind(fund)
            .bind(import_id)
            .fetch_optional(&self.state.base.pool)
            .await
            .map_err(internal)
    }

    /// The fund's campaign, as intake's projection knows it; waits a little for one just
    /// created. Another fund's campaign is reported like a missing one.
    async fn campaign(&self, fund: &str, campaign_id: Uuid) -> Result<(Theme, String), Status> {
        let deadline = tokio::time::Instant::now() + CAMPAIGN_WAIT;
        loop {
            let row =
                sqlx::query("SELECT fund_code, theme, state FROM campaigns WHERE campaign_id = $1")
                    .bind(campaign_id)
                    .fetch_optional(&self.state.base.pool)
                    .await
                    .map_err(internal)?;
            match row {
                Some(r) if r.get::<String, _>("fund_code") == fund => {
                    let theme =
                        Theme::from_code(r.get("theme")).ok_or_else(|| internal("stored theme"))?;
                    return Ok((theme, r.get("state")));
                }
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    return Err(Status::not_found(
                        "campaign_id: campaign.unknown: no such campaign for this fund",
                    ))
                }
            }
        }
    }

    /// Applies a batch of rows in one transaction: admission, rejection report, progress.
    /// `finished` sets the import's final state with the batch.
    async fn apply(
        &self,
        import: &mut Import,
        map: &ColumnMap,
        rows: Vec<RawRow>,
        end: u64,
        next_row: u64,
        finished: Option<(&str, &str, String)>,
    ) -> Result<(), Status> {
        let state = &self.state;
        let mut tx = state.base.pool.begin().await.map_err(internal)?;
        // Locks the import and checks nobody moved it on meanwhile (two uploads of one file).
        let locked = sqlx::query(
            "UPDATE imports SET updated_at = now()
             WHERE fund_code = $1 AND import_id = $2 AND next_offset = $3 AND state = 'receiving'",
        )
        .bind(&import.fund_code)
        .bind(&import.import_id)
        .bind(import.next_offset as i64)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        if locked.rows_affected() != 1 {
            return Err(Status::aborted(
                "import_id: import.concurrent_upload: another upload of this import moved it on; \
                 ask GetImport and resume from its next_offset",
            ));
        }
        // A campaign that ended meanwhile takes no more rows (its AMELI codes are being erased).
        let campaign_state: Option<String> =
            sqlx::query_scalar("SELECT state FROM campaigns WHERE campaign_id = $1")
                .bind(import.campaign_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(internal)?;
        if matches!(campaign_state.as_deref(), Some("completed" | "cancelled")) {
            drop(tx);
            let message = "the campaign is over: the rows after the committed offset were not read";
            self.fail(import, "campaign.closed", message).await?;
            return Err(Status::failed_precondition(format!(
                "campaign_id: campaign.closed: {message}"
            )));
        }
        let fund_territory = state
            .funds
            .lookup(&import.fund_code)
            .map(|f| f.department.territory())
            .unwrap_or(Territory::FR);
        let origin = Origin {
            campaign_id: import.campaign_id,
            fund_code: import.fund_code.clone(),
            theme: import.theme,
            fund_territory,
            correlation: import.correlation(),
            file: true,
        };
        let prefix = import.ref_prefix();
        let mut outbox = Outbox::new();
        let mut report: Vec<ReportLine> = Vec::new();
        let mut counts = Counts {
            read: rows.len() as i64,
            ..Counts::default()
        };
        let refused = |outbox: &mut Outbox, report: &mut Vec<ReportLine>, e: RowError| {
            let submission_ref = format!("{prefix}-{}", e.row);
            let r = Reason {
                field: e.column,
                rule: e.rule.to_string(),
                message: e.message,
            };
            rejection(
                outbox,
                &origin.fund_code,
                &origin.campaign_id.to_string(),
                &origin.correlation,
                e.row as u32,
                &submission_ref,
                vec![r.clone()],
            );
            report.push(ReportLine {
                row: e.row,
                submission_ref,
                reason: r,
            });
        };
        let mut contacts = Vec::with_capacity(rows.len());
        for row in rows {
            let built = row.cells.and_then(|cells| {
                map.contact(row.row, &cells, import.encoding, state.limits.file, &prefix)
            });
            match built {
                Ok(c) => contacts.push((row.row, c)),
                Err(e) => {
                    counts.rejected += 1;
                    refused(&mut outbox, &mut report, e);
                }
            }
        }
        let items: Vec<Item> = contacts
            .iter()
            .map(|(row, c)| Item {
                origin: &origin,
                index: *row as u32,
                submission: c,
            })
            .collect();
        let fates = admit(state, &mut tx, &mut outbox, &items)
            .await
            .map_err(handler_error)?;
        for ((row, c), fate) in contacts.iter().zip(fates) {
            let reasons = match fate {
                Fate::Accepted => {
                    counts.accepted += 1;
                    continue;
                }
                Fate::AlreadyReceived => {
                    counts.already += 1;
                    continue;
                }
                Fate::Duplicate(reasons) => {
                    counts.duplicate += 1;
                    reasons
                }
                Fate::Rejected(reasons) => reasons,
            };
            counts.rejected += 1;
            report.extend(reasons.into_iter().map(|reason| ReportLine {
                row: *row,
                submission_ref: c.submission_ref.clone(),
                reason,
            }));
        }
        drop(items);
        self.record_rejections(&mut tx, import, report).await?;
        let (final_state, rule, message) = finished
            .map(|(s, r, m)| (s.to_string(), r.to_string(), m))
            .unwrap_or_else(|| ("receiving".into(), String::new(), String::new()));
        sqlx::query(
            "UPDATE imports SET next_offset = $3, next_row = $4, rows_read = rows_read + $5,
                 rows_accepted = rows_accepted + $6, rows_rejected = rows_rejected + $7,
                 rows_duplicate = rows_duplicate + $8, rows_already_received = rows_already_received + $9,
                 state = $10, failure_rule = $11, failure_message = $12, updated_at = now()
             WHERE fund_code = $1 AND import_id = $2",
        )
        .bind(&import.fund_code)
        .bind(&import.import_id)
        .bind(end as i64)
        .bind(next_row as i64)
        .bind(counts.read)
        .bind(counts.accepted)
        .bind(counts.rejected)
        .bind(counts.duplicate)
        .bind(counts.already)
        .bind(&final_state)
        .bind(&rule)
        .bind(&message)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        outbox.flush(&mut tx).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        state.base.relay.wake();
        metrics::counter!("cnmas_intake_file_rows_total").increment(counts.read as u64);
        import.next_offset = end;
        import.next_row = next_row;
        import.rows_read += counts.read as u64;
        import.state = final_state;
        Ok(())
    }

    async fn record_rejections(
        &self,
        tx: &mut sqlx::PgConnection,
        import: &Import,
        report: Vec<ReportLine>,
    ) -> Result<(), Status> {
        if report.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(report.len());
        let mut ordinals = Vec::with_capacity(report.len());
        let (mut refs, mut fields, mut rules, mut messages) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut last = (0, 0);
        for l in report {
            let ordinal = if last.0 == l.row { last.1 + 1 } else { 0 };
            last = (l.row, ordinal);
            rows.push(l.row as i64);
            ordinals.push(ordinal);
            refs.push(l.submission_ref);
            fields.push(l.reason.field);
            rules.push(l.reason.rule);
            messages.push(l.reason.message);
        }
        sqlx::query(
            "INSERT INTO import_rejections (fund_code, import_id, row_number, ordinal,
                 submission_ref, field, rule, message)
             SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::int[], $5::text[], $6::text[],
                 $7::text[], $8::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&import.fund_code)
        .bind(&import.import_id)
        .bind(rows)
        .bind(ordinals)
        .bind(refs)
        .bind(fields)
        .bind(rules)
        .bind(messages)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        Ok(())
    }

    /// Marks an import failed (a file-level limit), keeping the rows applied before.
    async fn fail(&self, import: &mut Import, rule: &str, message: &str) -> Result<(), Status> {
        sqlx::query(
            "UPDATE imports SET state = 'failed', failure_rule = $3, failure_message = $4,
                 updated_at = now()
             WHERE fund_code = $1 AND import_id = $2 AND state = 'receiving'",
        )
        .bind(&import.fund_code)
        .bind(&import.import_id)
        .bind(rule)
        .bind(message)
        .execute(&self.state.base.pool)
        .await
        .map_err(internal)?;
        import.state = "failed".into();
        Ok(())
    }

    /// Records a new import once its header is read and fits the theme.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        subject: &str,
        fund: &str,
        start: &pb::ImportStart,
        campaign_id: Uuid,
        theme: Theme,
        file_name: &str,
        sha256: &str,
        header: &cnmas_intake_files::Header,
        map: &ColumnMap,
    ) -> Result<Import, Status> {
        let created = sqlx::query(
            "INSERT INTO imports (fund_code, import_id, campaign_id, theme, state, file_name,
                 file_size, sha256, encoding, delimiter, columns, next_offset, next_row,
                 created_by)
             VALUES ($1, $2, $3, $4, 'receiving', $5, $6, $7, $8, $9, $10, $11, 2, $12)
             ON CONFLICT DO NOTHING",
        )
        .bind(fund)
        .bind(&start.import_id)
        .bind(campaign_id)
        .bind(theme.code())
        .bind(file_name)
        .bind(start.file_size as i64)
        .bind(sha256)
        .bind(header.encoding.code())
        .bind((header.delimiter as char).to_string())
        .bind(
            map.names()
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
        )
        .bind(header.end as i64)
        .bind(subject)
        .execute(&self.state.base.pool)
        .await
        .map_err(internal)?;
        if created.rows_affected() != 1 {
            return Err(Status::aborted(
                "import_id: import.concurrent_upload: another upload of this import started; \
                 ask GetImport and resume",
            ));
        }
        let row = self
            .load(fund, &start.import_id)
            .await?
            .ok_or_else(|| internal("import vanished"))?;
        Import::from_row(&row)
    }

    /// Applies the pending rows by batches: the full ones, or all when `all`. `eof_at`: the
    /// file is complete at that offset, and the import with it.
    async fn flush(
        &self,
        imp: &mut Import,
        map: &ColumnMap,
        pending: &mut Vec<RawRow>,
        all: bool,
        eof_at: Option<u64>,
    ) -> Result<(), Status> {
        let limits = self.state.limits;
        loop {
            let full = pending.len() >= limits.batch_rows;
            let finishing = eof_at.is_some() && imp.state == "receiving";
            if !(full || (all && !pending.is_empty()) || finishing) {
                return Ok(());
            }
            let take = pending.len().min(limits.batch_rows);
            let mut batch: Vec<RawRow> = pending.drain(..take).collect();
            let room = limits.max_rows.saturating_sub(imp.rows_read);
            let over = batch.len() as u64 > room;
            batch.truncate(room as usize);
            let last_batch = eof_at.is_some() && pending.is_empty();
            let (end, next_row) = match batch.last() {
                Some(r) => (r.end, r.row + 1),
                None => (imp.next_offset, imp.next_row),
            };
            let too_many = format!(
                "at most {} rows per file: rows up to row {} are imported, the rest are not; \
                 split the file",
                limits.max_rows,
                next_row - 1
            );
            let finished = if over {
                Some(("failed", "file.too_many_rows", too_many.clone()))
            } else if last_batch {
                Some(("completed", "", String::new()))
            } else {
                None
            };
            // A complete file is committed to its last byte, trailing blank lines included.
            let end = match eof_at {
                Some(size) if last_batch && !over => size,
                _ => end,
            };
            self.apply(imp, map, batch, end, next_row, finished).await?;
            if over {
                return Err(invalid("file", "file.too_many_rows", too_many));
            }
            if last_batch {
                return Ok(());
            }
        }
    }

    async fn current_summary(&self, import: &Import) -> Result<ImportSummary, Status> {
        let row = self
            .load(&import.fund_code, &import.import_id)
            .await?
            .ok_or_else(|| internal("import vanished"))?;
        Ok(summary(&row))
    }
}

/// Where an upload is: reading the header of a new import, or rows.
enum Stage {
    Header(HeaderReader),
    // Boxed: the CSV state machine is large beside the header's buffer.
    Rows {
        parser: Box<RowParser>,
        map: ColumnMap,
    },
}

#[tonic::async_trait]
impl FileImportService for FileImportApi {
    async fn upload_file(
        &self,
        req: Request<Streaming<pb::UploadFileRequest>>,
    ) -> Result<Response<ImportSummary>, Status> {
        let who = principal(&req)?;
        let fund = fund_of(&who)?;
        let limits = self.state.limits;
        let mut stream = req.into_inner();
        let start = match stream.message().await? {
            Some(pb::UploadFileRequest {
                part: Some(Part::Start(s)),
            }) => s,
            _ => {
                return Err(invalid(
                    "start",
                    "upload.start_first",
                    "the first message must be `start`",
                ))
            }
        };
        check_import_id(&start.import_id)?;
        let campaign_id = Uuid::parse_str(start.campaign_id.trim())
            .map_err(|_| invalid("campaign_id", "campaign.bad_id", "not a campaign id (UUID)"))?;
        if start.file_size == 0 {
            return Err(invalid("file_size", "file.empty", "the file is empty"));
        }
        if start.file_size > limits.max_file_bytes {
            return Err(invalid(
                "file_size",
                "file.too_large",
                format!("at most {} bytes per file: split it", limits.max_file_bytes),
            ));
        }
        let sha256 = start.sha256.trim().to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "sha256",
                "sha256.format",
                "the hex SHA-256 of the whole file (64 characters)",
            ));
        }
        // Only the name, never a client path; control characters dropped.
        let file_name: String = start
            .file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(255)
            .collect();
        let declared = match FileEncoding::try_from(start.encoding) {
            Ok(FileEncoding::Unspecified) => None,
            Ok(FileEncoding::Utf8) => Some(Encoding::Utf8),
            Ok(FileEncoding::Windows1252) => Some(Encoding::Windows1252),
            Err(_) => {
                return Err(invalid(
                    "encoding",
                    "encoding.unknown",
                    "UTF8, WINDOWS_1252, or UNSPECIFIED to detect it",
                ))
            }
        };
        let (theme, campaign_state) = self.campaign(&fund, campaign_id).await?;

        let existing = self.load(&fund, &start.import_id).await?;
        let (mut import, mut stage) = match existing {
            Some(row) => {
                let import = Import::from_row(&row)?;
                if import.campaign_id != campaign_id
                    || import.file_size != start.file_size
                    || import.sha256 != sha256
                {
                    return Err(Status::failed_precondition(
                        "import_id: import.mismatch: this import id was used for another file or \
                         campaign",
                    ));
                }
                if import.state != "receiving" {
                    return Ok(Response::new(summary(&row)));
                }
                let map = ColumnMap::from_names(&import.columns, theme)
                    .map_err(|e| internal(format!("stored columns: {e}")))?;
                let parser = Box::new(RowParser::new(
                    import.delimiter,
                    limits.file,
                    import.next_offset,
                    import.next_row,
                ));
                (Some(import), Stage::Rows { parser, map })
            }
            None => {
                if matches!(campaign_state.as_str(), "completed" | "cancelled") {
                    return Err(Status::failed_precondition(
                        "campaign_id: campaign.closed: the campaign is over",
                    ));
                }
                (
                    None,
                    Stage::Header(HeaderReader::new(declared, limits.file)),
                )
            }
        };
        // The offset of the next byte the reader expects.
        let mut position = import.as_ref().map_or(0, |i| i.next_offset);
        let mut pending: Vec<RawRow> = Vec::new();

        loop {
            let chunk = match stream.message().await {
                Ok(Some(pb::UploadFileRequest {
                    part: Some(Part::Chunk(c)),
                })) => c,
                Ok(Some(_)) => {
                    return Err(invalid(
                        "chunk",
                        "upload.chunk_expected",
                        "only chunks may follow `start`",
                    ))
                }
                // The client stopped before the end: keep every complete row, stay resumable.
                ended => {
                    let Some(imp) = import.as_mut() else {
                        return Err(ended.err().unwrap_or_else(|| {
                            Status::aborted(
                                "chunk: upload.incomplete: the stream ended before the header \
                                 was read; nothing was recorded",
                            )
                        }));
                    };
                    if let Stage::Rows { map, .. } = &stage {
                        self.flush(imp, map, &mut pending, true, None).await?;
                    }
                    return match ended {
                        Err(status) => Err(status),
                        Ok(_) => Ok(Response::new(self.current_summary(imp).await?)),
                    };
                }
            };
            if chunk.data.len() > MAX_CHUNK_BYTES {
                return Err(invalid(
                    "chunk.data",
                    "chunk.too_large",
                    format!("at most {MAX_CHUNK_BYTES} bytes per chunk"),
                ));
            }
            if chunk.offset > position {
                return Err(Status::out_of_range(format!(
                    "chunk.offset: upload.gap: expected the bytes from offset {position} (GetImport \
                     gives next_offset)"
                )));
            }
            let chunk_end = chunk.offset + chunk.data.len() as u64;
            if chunk_end <= position {
                continue; // already read: a resumed upload re-sending from earlier
            }
            let data = &chunk.data[(position - chunk.offset) as usize..];
            if chunk_end > start.file_size {
                if let Some(imp) = import.as_mut() {
                    self.fail(
                        imp,
                        "file.size_mismatch",
                        "more bytes than the declared file_size",
                    )
                    .await?;
                }
                return Err(invalid(
                    "file_size",
                    "file.size_mismatch",
                    "more bytes than the declared file_size",
                ));
            }
            position = chunk_end;
            let eof = position == start.file_size;

            match &mut stage {
                Stage::Header(reader) => {
                    let Some((header, rest)) =
                        reader.push(data, eof).map_err(|e| file_error(&e))?
                    else {
                        continue;
                    };
                    let map =
                        ColumnMap::from_header(&header.cells, theme).map_err(|e| file_error(&e))?;
                    import = Some(
                        self.create(
                            &who.subject,
                            &fund,
                            &start,
                            campaign_id,
                            theme,
                            &file_name,
                            &sha256,
                            &header,
                            &map,
                        )
                        .await?,
                    );
                    let mut parser =
                        Box::new(RowParser::new(header.delimiter, limits.file, header.end, 2));
                    parser.feed(&rest, &mut pending);
                    stage = Stage::Rows { parser, map };
                }
                Stage::Rows { parser, .. } => parser.feed(data, &mut pending),
            }
            let (Some(imp), Stage::Rows { parser, map }) = (import.as_mut(), &mut stage) else {
                continue;
            };
            if eof {
                parser.finish(&mut pending);
            }
            self.flush(imp, map, &mut pending, eof, eof.then_some(position))
                .await?;
            if eof {
                return Ok(Response::new(self.current_summary(imp).await?));
            }
        }
    }

    async fn get_import(
        &self,
        req: Request<pb::GetImportRequest>,
    ) -> Result<Response<ImportSummary>, Status> {
        let fund = fund_of(&principal(&req)?)?;
        let r = req.into_inner();
        check_import_id(r.import_id.trim())?;
        let row = self.load(&fund, r.import_id.trim()).await?.ok_or_else(|| {
            Status::not_found("import_id: import.unknown: no such import for this fund")
        })?;
        Ok(Response::new(summary(&row)))
    }

    type GetRejectionReportStream =
        Pin<Box<dyn Stream<Item = Result<pb::RowRejection, Status>> + Send + 'static>>;

    async fn get_rejection_report(
        &self,
        req: Request<pb::GetRejectionReportRequest>,
    ) -> Result<Response<Self::GetRejectionReportStream>, Status> {
        let fund = fund_of(&principal(&req)?)?;
        let import_id = req.into_inner().import_id.trim().to_string();
        check_import_id(&import_id)?;
        if self.load(&fund, &import_id).await?.is_none() {
            return Err(Status::not_found(
                "import_id: import.unknown: no such import for this fund",
            ));
        }
        let pool = self.state.base.pool.clone();
        // Pages in row order, so a report of a million rows never sits in memory.
        let pages = futures::stream::unfold(Some((-1i64, -1i32)), move |after| {
            let (pool, fund, import_id) = (pool.clone(), fund.clone(), import_id.clone());
            async move {
                let (row, ordinal) = after?;
                let page = sqlx::query(
                    "SELECT row_number, ordinal, submission_ref, field, rule, message
                     FROM import_rejections
                     WHERE fund_code = $1 AND import_id = $2 AND (row_number, ordinal) > ($3, $4)
                     ORDER BY row_number, ordinal LIMIT 1000",
                )
                .bind(&fund)
                .bind(&import_id)
                .bind(row)
                .bind(ordinal)
                .fetch_all(&pool)
                .await;
                match page {
                    Err(e) => Some((vec![Err(internal(e))], None)),
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let last = rows.last().map(|r| (r.get("row_number"), r.get("ordinal")));
                        let items = rows
                            .iter()
                            .map(|r| {
                                Ok(pb::RowRejection {
                                    row: r.get::<i64, _>("row_number") as u64,
                                    submission_ref: r.get("submission_ref"),
                                    field: r.get("field"),
                                    rule: r.get("rule"),
                                    message: r.get("message"),
                                })
                            })
                            .collect();
                        Some((items, last))
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            pages.flat_map(futures::stream::iter),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_ids() {
        assert!(check_import_id("f67a2f408a387b03902b53de46b8f13f7").is_ok());
        assert!(check_import_id("lot-2026.11:A_1").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(101), "a/b"] {
            let e = check_import_id(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with("import_id: import_id.format"));
        }
    }

    #[test]
    fn derived_references_fit_the_reference_rule() {
        let import = Import {
            fund_code: "751".into(),
            import_id: "x".repeat(100),
            campaign_id: Uuid::nil(),
            theme: Theme::FluVaccination,
            state: "receiving".into(),
            file_size: 1,
            sha256: String::new(),
            encoding: Encoding::Utf8,
            delimiter: b';',
            columns: vec![],
            next_offset: 0,
            next_row: 2,
            rows_read: 0,
        };
        let prefix = import.ref_prefix();
        let reference = format!("{prefix}-{}", Limits::default().max_rows + 1);
        assert!(
            crate::submission::check_ref(&reference).is_ok(),
            "{reference}"
        );
        // Another fund's import of the same id gets other references.
        let other = Import {
            fund_code: "976".into(),
            ..import
        };
        assert_ne!(other.ref_prefix(), prefix);
    }
}
