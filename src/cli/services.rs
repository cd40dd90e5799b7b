//! `creditgate service …`: the CLI face of `crate::services`. The token
//! goes to stdout alone (`TOKEN=$(creditgate service add billing --scopes
//! charge)`), everything else to stderr, as for users' tokens.

use clap::Subcommand;

use super::{table, CliError};
use crate::db::Pool;
use crate::services::{self, Scopes, ServiceInfo};

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Add a service (a backend calling /v1/); prints its token alone on stdout.
    Add {
        /// 1-64 of A-Z a-z 0-9 . _ -; never reused, even once revoked.
        name: String,
        /// What it may do: charge, read, or charge,read.
        #[arg(long)]
        scopes: String,
    },
    /// List services, revoked ones included.
    List {
        /// Print {"services":[…]} as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a service: its token stops working at once.
    Revoke {
        /// The service's name.
        name: String,
    },
}

pub fn run(pool: &Pool, cmd: ServiceCommand) -> Result<(), CliError> {
    match cmd {
        ServiceCommand::Add { name, scopes } => {
            let scopes = Scopes::parse(&scopes).map_err(|e| CliError::flag("--scopes", e))?;
            let (info, token) = services::add(pool, &name, scopes)?;
            println!("{token}");
            eprintln!(
                "added service {} with scopes {} (token {}…, shown this once)",
                info.name,
                info.scopes.names().join(","),
                info.prefix
            );
        }
        ServiceCommand::List { json } => {
            let list = services::list(pool)?;
            if json {
                // The admin API's shape, so one script reads both.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "services": list }))
                        .expect("services serialise")
                );
            } else {
                print!("{}", service_table(&list));
            }
        }
        ServiceCommand::Revoke { name } => {
            let info = services::revoke(pool, &name)?;
            eprintln!(
                "revoked service {} ({}…) at {}",
                info.name,
                info.prefix,
                info.revoked_at.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

fn service_table(list: &[ServiceInfo]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.scopes.names().join(","),
                s.prefix.clone(),
                s.created_at.clone(),
                s.revoked_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["NAME", "SCOPES", "PREFIX", "CREATED", "REVOKED"], &rows)
}
