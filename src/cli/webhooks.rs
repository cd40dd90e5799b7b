//! `creditgate webhook …`: the CLI face of `crate::webhooks::store`. The
//! signing secret goes to stdout alone (`SECRET=$(creditgate webhook add
//! URL --events credit.low)`), everything else to stderr, as for tokens.

use clap::Subcommand;

use super::{table, CliError};
use crate::db::Pool;
use crate::webhooks::store::{self, Webhook};

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Add an endpoint; prints its signing secret (whsec_…) alone on stdout, once.
    Add {
        /// Where events are POSTed: http:// or https://.
        url: String,
        /// Comma-separated: credit.low, credit.exhausted,
        /// credit.usage_threshold, credit.refilled, hold.expired.
        #[arg(long)]
        events: String,
    },
    /// List endpoints.
    List {
        /// Print {"webhooks":[…]} as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint; its undelivered events are marked failed.
    Remove {
        /// The endpoint's id (`webhook list`).
        id: String,
    },
}

pub fn run(pool: &Pool, cmd: WebhookCommand) -> Result<(), CliError> {
    match cmd {
        WebhookCommand::Add { url, events } => {
            let events = store::parse_events(&events).map_err(|e| CliError::flag("--events", e))?;
            let (hook, secret) = store::add(pool, &url, &events)?;
            println!("{secret}");
            eprintln!(
                "added webhook {} for {} to {} (signing secret shown this once)",
                hook.id,
                hook.events.join(","),
                hook.url
            );
        }
        WebhookCommand::List { json } => {
            let list = store::list(pool)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "webhooks": list }))
                        .expect("webhooks serialise")
                );
            } else {
                print!("{}", webhook_table(&list));
            }
        }
        WebhookCommand::Remove { id } => {
            let hook = store::remove(pool, &id)?;
            eprintln!("removed webhook {} ({})", hook.id, hook.url);
        }
    }
    Ok(())
}

fn webhook_table(list: &[Webhook]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.url.clone(),
                w.events.join(","),
                w.created_at.clone(),
            ]
        })
        .collect();
    table(&["ID", "URL", "EVENTS", "CREATED"], &rows)
}
