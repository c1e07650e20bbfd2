//! The rights of the people called, from the command line: a fund's subject access export and
//! rectification, the retention purge across services and its log (intake's `RightsService`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use cnmas_proto::rights::{
    person_identifier::Id, rights_service_client::RightsServiceClient, ListPurgesRequest,
    PersonIdentifier, PurgeExpiredRequest, RectificationRejected, RectifyRequest,
    SubjectAccessRequest,
};
use cnmas_proto::support::from_timestamp;
use cnmas_runtime::auth::Bearer;
use cnmas_runtime::config::var_or;
use prost::Message;
use std::collections::HashMap;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = RightsServiceClient<InterceptedService<Channel, Bearer>>;

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
    Ok(RightsServiceClient::with_interceptor(
        channel,
        Bearer(token.to_string()),
    ))
}

/// One JSON line on standard output; a reader that went away (`| head`) ends the output quietly.
fn emit(v: serde_json::Value) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{v}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// gRPC errors as the services word them; a refused rectification lists every reason.
fn status(e: tonic::Status) -> anyhow::Error {
    if let Ok(r) = RectificationRejected::decode(e.details()) {
        if !r.reasons.is_empty() {
            let lines: Vec<String> = r
                .reasons
                .iter()
                .map(|r| format!("  {}: {}: {}", r.field, r.rule, r.message))
                .collect();
            return anyhow::anyhow!("{:?}:\n{}", e.code(), lines.join("\n"));
        }
    }
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

/// Which person: exactly one identifier.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Person {
    /// The person's NIR (13 or 15 characters, spaces allowed).
    #[arg(long)]
    nir: Option<String>,
    /// A health professional's RPPS or ADELI number.
    #[arg(long)]
    ps_number: Option<String>,
    /// An employer's SIRET.
    #[arg(long)]
    siret: Option<String>,
}

impl Person {
    fn identifier(self) -> PersonIdentifier {
        let id = match (self.nir, self.ps_number, self.siret) {
            (Some(n), _, _) => Id::Nir(n),
            (_, Some(p), _) => Id::PsNumber(p),
            (_, _, Some(s)) => Id::Siret(s),
            // clap's group requires one of them.
            _ => Id::Nir(String::new()),
        };
        PersonIdentifier { id: Some(id) }
    }
}

#[derive(Subcommand, Debug)]
pub enum RightsCommand {
    /// Everything every service holds about a person, as one JSON document.
    Export {
        /// The fund asking (a fund token may only name its own; admins and auditors may omit
        /// it to see every fund's contacts).
        #[arg(long, default_value = "")]
        fund: String,
        #[command(flatten)]
        person: Person,
        /// Write the export to this file (created with owner-only permissions) instead of
        /// standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Correct a person's data in the fund's contacts (validated by the theme's rules).
    Rectify {
        /// The fund whose contacts are corrected (a fund token: its own).
        #[arg(long)]
        fund: String,
        #[command(flatten)]
        person: Person,
        /// Only the contact of this campaign (default: every contact of the person).
        #[arg(long, default_value = "")]
        campaign: String,
        /// A new value, `field=value` (field codes as in the CSV columns: last_name, phone,
        /// email, address, postcode, …); `field=` removes an optional field. Repeatable.
        #[arg(long = "set", value_name = "FIELD=VALUE", required = true)]
        set: Vec<String>,
        /// The fund's reference of the person's request (letter, form…).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn rights(token: &str, c: RightsCommand) -> Result<()> {
    let mut api = client(token).await?;
    match c {
        RightsCommand::Export { fund, person, out } => {
            let export = api
                .export_person_data(SubjectAccessRequest {
                    fund_code: fund,
                    person: Some(person.identifier()),
                })
                .await
                .map_err(status)?
                .into_inner();
            let pretty = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(
                &export.json,
            )?)?;
            match out {
                Some(path) => {
                    write_private(&path, pretty.as_bytes())?;
                    eprintln!("{} items written to {}", export.items.len(), path.display());
                }
                None => {
                    use std::io::Write;
                    match writeln!(std::io::stdout().lock(), "{pretty}") {
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
            }
        }
        RightsCommand::Rectify {
            fund,
            person,
            campaign,
            set,
            reason,
        } => {
            let mut fields = HashMap::new();
            for s in set {
                let Some((k, v)) = s.split_once('=') else {
                    bail!("--set {s:?}: expected FIELD=VALUE");
                };
                fields.insert(k.trim().to_string(), v.to_string());
            }
            let answer = api
                .rectify_person_data(RectifyRequest {
                    fund_code: fund,
                    person: Some(person.identifier()),
                    campaign_id: campaign,
                    fields,
                    reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            for c in answer.contacts {
                emit(
                    serde_json::json!({"contact_id": c.contact_id, "campaign_id": c.campaign_id,
                                       "fields_changed": c.fields_changed}),
                )?;
            }
        }
    }
    Ok(())
}

/// The export holds personal data: readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Count what would be purged; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Instead of purging, list the purge log (auditor or admin token).
    #[arg(long, conflicts_with = "dry_run")]
    log: bool,
    /// With --log: only this campaign.
    #[arg(long, default_value = "", requires = "log")]
    campaign: String,
    /// With --log: at most this many entries per service.
    #[arg(long, default_value_t = 100, requires = "log")]
    limit: u32,
}

/// Runs the retention purge in every service (admin token) and prints one JSON line per
/// service and table, or lists the purge log.
pub async fn purge(token: &str, a: PurgeArgs) -> Result<()> {
    let mut api = client(token).await?;
    if a.log {
        let log = api
            .list_purges(ListPurgesRequest {
                campaign_id: a.campaign,
                limit: a.limit,
            })
            .await
            .map_err(status)?
            .into_inner();
        for p in log.purges {
            emit(
                serde_json::json!({"service": p.service, "campaign_id": p.campaign_id,
                    "table": p.table, "rows": p.rows, "actor": p.actor,
                    "at": p.at.as_ref().and_then(from_timestamp).map(|t| t.to_rfc3339()),
                    "campaign_closed_at": p.campaign_closed_at.as_ref().and_then(from_timestamp)
                        .map(|t| t.to_rfc3339())}),
            )?;
        }
        return Ok(());
    }
    let done = api
        .purge_expired(PurgeExpiredRequest { dry_run: a.dry_run })
        .await
        .map_err(status)?
        .into_inner();
    for s in done.services {
        if s.purged.is_empty() {
            emit(serde_json::json!({"service": s.service, "dry_run": s.dry_run, "rows": 0}))?;
        }
        for p in s.purged {
            emit(
                serde_json::json!({"service": p.service, "dry_run": s.dry_run,
                    "campaign_id": p.campaign_id, "table": p.table, "rows": p.rows}),
            )?;
        }
    }
    Ok(())
}
