//! `cnmasctl`: the operator and fund command-line client of CNMAS.

mod calendar;
mod csv_import;
mod json;
mod ops;
mod rights;
mod simulate;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cnmasctl", version, about = "CNMAS operator and fund client")]
struct Cli {
    /// Bearer token for the gRPC APIs (see `cnmasctl token`).
    #[arg(long, env = "CNMAS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check identifiers, phone numbers, e-mails and postcodes against the domain rules.
    Validate(validate::ValidateArgs),
    /// Show the calling calendar of a department, one JSON object per day.
    Calendar(calendar::CalendarArgs),
    /// Issue a signed token (needs CNMAS_JWT_SECRET): for development and operations.
    Token(ops::TokenArgs),
    /// Create, inspect and steer campaigns.
    #[command(subcommand)]
    Campaign(ops::CampaignCommand),
    /// Register agents and assign them campaigns.
    #[command(subcommand)]
    Agent(ops::AgentCommand),
    /// Upload a fund's contact file (CSV, `;` or `,`, UTF-8 or Windows-1252) to intake;
    /// resumes an interrupted upload.
    Submit(csv_import::SubmitArgs),
    /// A file import's status, or its rejected rows.
    #[command(subcommand)]
    Import(csv_import::ImportCommand),
    /// As an agent: lease the next call.
    NextCall,
    /// As an agent: record the outcome of a leased call.
    RecordOutcome(ops::OutcomeArgs),
    /// Follow a fund's results (or rejections) as JSON lines.
    #[command(subcommand)]
    Results(ops::ResultsCommand),
    /// A campaign's report: counts by final status, reach and acceptance rates.
    Report(ops::ReportArgs),
    /// As an auditor: who viewed a contact's card, or which cards an agent viewed, and when.
    Audit(ops::AuditArgs),
    /// Run simulated agents on a campaign through the agent API (demos, load tests); needs a
    /// supervisor token and CNMAS_JWT_SECRET.
    SimulateAgents(simulate::SimulateArgs),
    /// A fund's subject access export and rectification of a person's data.
    #[command(subcommand)]
    Rights(rights::RightsCommand),
    /// Run the retention purge in every service (`--dry-run` counts only), or list its log.
    Purge(rights::PurgeArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let token = cli.token.unwrap_or_default();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Calendar(args) => calendar::run(args),
        Command::Token(args) => ops::token(args),
        Command::Campaign(c) => ops::campaign(&token, c).await,
        Command::Agent(c) => ops::agent(&token, c).await,
        Command::Submit(args) => csv_import::submit(&token, args).await,
        Command::Import(c) => csv_import::import(&token, c).await,
        Command::NextCall => ops::next_call(&token).await,
        Command::RecordOutcome(args) => ops::record_outcome(&token, args).await,
        Command::Results(c) => ops::results(c).await,
        Command::Report(args) => ops::report(&token, args).await,
        Command::Audit(args) => ops::audit(&token, args).await,
        Command::SimulateAgents(args) => simulate::run(&token, args).await,
        Command::Rights(c) => rights::rights(&token, c).await,
        Command::Purge(args) => rights::purge(&token, args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
