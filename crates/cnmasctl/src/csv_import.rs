//! `cnmasctl submit`: uploads a fund's contact file to intake (`FileImportService`), which reads
//! it row by row on the server (columns, encodings and limits are intake's: see the README).
//! An upload that drops is resumed where intake committed; sending the same file again to the
//! same campaign resumes or answers the finished import, creating nothing new.
//! `cnmasctl import status|report`: where an import stands, and its rejected rows.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cnmas_proto::intake::file_import_service_client::FileImportServiceClient;
use cnmas_proto::intake::{
    upload_file_request::Part, FileChunk, FileEncoding, GetImportRequest,
    GetRejectionReportRequest, ImportStart, ImportState, ImportSummary, UploadFileRequest,
};
use cnmas_runtime::auth::Bearer;
use cnmas_runtime::config::var_or;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

type Client = FileImportServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EncodingArg {
    /// UTF-8 when the whole file is valid UTF-8, else Windows-1252.
    Auto,
    #[value(name = "utf-8")]
    Utf8,
    #[value(name = "windows-1252")]
    Windows1252,
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[arg(long)]
    campaign: String,
    #[arg(long)]
    file: PathBuf,
    /// The import's id (default: derived from the campaign and the file's SHA-256).
    #[arg(long)]
    import_id: Option<String>,
    #[arg(long, value_enum, default_value = "auto")]
    encoding: EncodingArg,
    /// Bytes per chunk sent (at most 1 MiB).
    #[arg(long, default_value_t = 256 * 1024)]
    chunk_bytes: usize,
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Where an import stands: state, counts, the offset committed.
    Status {
        #[arg(long = "import")]
        import_id: String,
    },
    /// The rows an import refused: row, reference, column, rule, message (never the values).
    Report {
        #[arg(long = "import")]
        import_id: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: ReportFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

/// Uploads that fail for the connection's sake are resumed this many times.
const ATTEMPTS: usize = 5;

async fn client(token: &str) -> Result<Client> {
    if token.is_empty() {
        bail!("a token is required: --token or CNMAS_TOKEN (see `cnmasctl token`)");
    }
    let url = var_or("CNMAS_INTAKE_URL", "http://127.0.0.1:50051");
    let channel = Channel::from_shared(url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the intake API at {url}"))?;
    Ok(FileImportServiceClient::with_interceptor(
        channel,
        Bearer(token.to_string()),
    ))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

/// The file's SHA-256 and whether it is valid UTF-8 throughout, in one streaming pass.
fn fingerprint(path: &Path) -> Result<(String, bool)> {
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    // Bytes of a character cut by the buffer's end, checked with the next read.
    let mut carry: Vec<u8> = Vec::new();
    let mut utf8 = true;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if utf8 {
            carry.extend_from_slice(&buf[..n]);
            match std::str::from_utf8(&carry) {
                Ok(_) => carry.clear(),
                Err(e) if e.error_len().is_none() => {
                    carry.drain(..e.valid_up_to());
                }
                Err(_) => utf8 = false,
            }
        }
    }
    Ok((hex::encode(hasher.finalize()), utf8 && carry.is_empty()))
}

fn state_name(s: i32) -> &'static str {
    match ImportState::try_from(s).unwrap_or_default() {
        ImportState::Receiving => "receiving",
        ImportState::Completed => "completed",
        ImportState::Failed => "failed",
        ImportState::Unspecified => "unknown",
    }
}

fn summary_json(s: &ImportSummary) -> serde_json::Value {
    serde_json::json!({
        "import_id": s.import_id, "campaign_id": s.campaign_id, "state": state_name(s.state),
        "file_name": s.file_name, "file_size": s.file_size, "next_offset": s.next_offset,
        "rows_read": s.rows_read, "rows_accepted": s.rows_accepted,
        "rows_rejected": s.rows_rejected, "rows_duplicate": s.rows_duplicate,
        "rows_already_received": s.rows_already_received, "encoding": s.encoding,
        "delimiter": s.delimiter, "failure_rule": s.failure_rule,
        "failure_message": s.failure_message,
    })
}

/// The start message then the file's chunks from `offset`, read as the upload goes.
fn upload_stream(
    start: ImportStart,
    path: PathBuf,
    offset: u64,
    chunk_bytes: usize,
) -> Result<impl futures::Stream<Item = UploadFileRequest> + Send + 'static> {
    let mut file = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
    file.seek(SeekFrom::Start(offset))?;
    let first = futures::stream::once(async move {
        UploadFileRequest {
            part: Some(Part::Start(start)),
        }
    });
    let chunks = futures::stream::unfold((file, offset), move |(mut file, offset)| async move {
        let mut data = vec![0u8; chunk_bytes];
        let n = match file.read(&mut data) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: reading the file: {e}");
                return None;
            }
        };
        data.truncate(n);
        let chunk = UploadFileRequest {
            part: Some(Part::Chunk(FileChunk { offset, data })),
        };
        Some((chunk, (file, offset + n as u64)))
    });
    Ok(first.chain(chunks))
}

pub async fn submit(token: &str, a: SubmitArgs) -> Result<()> {
    let size = std::fs::metadata(&a.file)
        .with_context(|| a.file.display().to_string())?
        .len();
    if size == 0 {
        bail!("{}: the file is empty", a.file.display());
    }
    let (sha256, utf8) = fingerprint(&a.file)?;
    let encoding = match a.encoding {
        EncodingArg::Auto if utf8 => FileEncoding::Utf8,
        EncodingArg::Auto | EncodingArg::Windows1252 => FileEncoding::Windows1252,
        EncodingArg::Utf8 => FileEncoding::Utf8,
    };
    let import_id = a.import_id.clone().unwrap_or_else(|| {
        let id = Sha256::digest(format!("{}:{sha256}", a.campaign.trim()));
        format!("f{}", &hex::encode(id)[..32])
    });
    let start = ImportStart {
        import_id: import_id.clone(),
        campaign_id: a.campaign.trim().to_string(),
        file_size: size,
        sha256,
        encoding: encoding as i32,
        file_name: a
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let chunk_bytes = a.chunk_bytes.clamp(4096, 1024 * 1024);
    let mut api = client(token).await?;
    let mut attempt = 0;
    let summary = loop {
        attempt += 1;
        let offset = match api
            .get_import(GetImportRequest {
                import_id: import_id.clone(),
            })
            .await
        {
            Ok(s) => {
                let s = s.into_inner();
                if s.state != ImportState::Receiving as i32 {
                    break s; // already done: nothing is sent again
                }
                eprintln!(
                    "resuming import {import_id} at byte {} of {size}",
                    s.next_offset
                );
                s.next_offset
            }
            Err(e) if e.code() == Code::NotFound => 0,
            Err(e) => return Err(status(e)),
        };
        let stream = upload_stream(start.clone(), a.file.clone(), offset, chunk_bytes)?;
        match api.upload_file(stream).await {
            Ok(s) => {
                let s = s.into_inner();
                if s.state != ImportState::Receiving as i32 || attempt >= ATTEMPTS {
                    break s;
                }
            }
            // Connection trouble or a concurrent upload: ask where it stands and resume.
            Err(e)
                if matches!(
                    e.code(),
                    Code::Unavailable | Code::Aborted | Code::Cancelled | Code::Unknown
                ) && attempt < ATTEMPTS =>
            {
                eprintln!("upload interrupted ({}); resuming", e.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(status(e)),
        }
    };
    println!("{}", summary_json(&summary));
    if summary.rows_rejected > 0 {
        eprintln!("rejected rows: cnmasctl import report --import {import_id}");
    }
    match ImportState::try_from(summary.state).unwrap_or_default() {
        ImportState::Completed => Ok(()),
        ImportState::Failed => bail!(
            "the import failed: {}: {}",
            summary.failure_rule,
            summary.failure_message
        ),
        _ => bail!("the upload did not finish; run the same command again to resume"),
    }
}

pub async fn import(token: &str, c: ImportCommand) -> Result<()> {
    let mut api = client(token).await?;
    match c {
        ImportCommand::Status { import_id } => {
            let s = api
                .get_import(GetImportRequest { import_id })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", summary_json(&s));
        }
        ImportCommand::Report { import_id, format } => {
            let mut rows = api
                .get_rejection_report(GetRejectionReportRequest { import_id })
                .await
                .map_err(status)?
                .into_inner();
            let mut csv = csv::WriterBuilder::new()
                .delimiter(b';')
                .from_writer(std::io::stdout());
            if matches!(format, ReportFormat::Csv) {
                csv.write_record(["row", "submission_ref", "field", "rule", "message"])?;
            }
            while let Some(r) = rows.next().await {
                let r = r.map_err(status)?;
                match format {
                    ReportFormat::Csv => csv.write_record([
                        r.row.to_string().as_str(),
                        &r.submission_ref,
                        &r.field,
                        &r.rule,
                        &r.message,
                    ])?,
                    ReportFormat::Json => println!(
                        "{}",
                        serde_json::json!({"row": r.row, "submission_ref": r.submission_ref,
                            "field": r.field, "rule": r.rule, "message": r.message})
                    ),
                }
            }
            csv.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_utf8_across_buffer_edges() {
        let dir = std::env::temp_dir().join(format!("cnmasctl-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let utf8 = dir.join("utf8.csv");
        // "é" straddles the 1 MiB read buffer's edge.
        let mut text = "a".repeat(1024 * 1024 - 1).into_bytes();
        text.extend_from_slice("é;x\n".as_bytes());
        std::fs::write(&utf8, &text).unwrap();
        let (sha, ok) = fingerprint(&utf8).unwrap();
        assert!(ok);
        assert_eq!(sha, hex::encode(Sha256::digest(&text)));
        let latin = dir.join("latin.csv");
        std::fs::write(&latin, b"nom;pr\xE9nom\n").unwrap();
        assert!(!fingerprint(&latin).unwrap().1);
        let cut = dir.join("cut.csv");
        std::fs::write(&cut, b"nom;pr\xC3").unwrap();
        assert!(!fingerprint(&cut).unwrap().1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
