//! `cnmasctl`: the operator and fund command-line client of CNMAS.

mod calendar;
mod validate;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cnmasctl", version, about = "CNMAS operator and fund client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check identifiers, phone numbers, e-mails and postcodes against the domain rules.
    Validate(validate::ValidateArgs),
    /// Show the calling calendar of a department, one JSON object per day.
    Calendar(calendar::CalendarArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Calendar(args) => calendar::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
