//! The command line: one function per subcommand, each calling the same
//! domain functions as the admin API. Tokens go to stdout alone (so
//! `TOKEN=$(creditgate user add alice)` works); everything else to stderr,
//! except what a command is asked to show.

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Parser, Subcommand};

mod export;
mod keys;
mod services;
mod webhooks;

pub use keys::KeyCommand;
pub use services::ServiceCommand;
pub use webhooks::WebhookCommand;

use crate::banks::{self, BankError, NewBank};
use crate::billing::bank;
use crate::billing::ledger::{self, Reason};
use crate::billing::usage::{self, Filter};
use crate::config::{Config, ConfigError};
use crate::db::{self, DbError, Pool};
use crate::error::error_chain;
use crate::gateway::routes::{NewRoute, Prefix, RawRoute, Route};
use crate::gateway::store::{self, RouteError};
use crate::model::{
    parse_delta, BankCode, Credit, Day, Email, ImportedToken, Period, RateLimit, RefillDay,
    Username,
};
use crate::users::import::{ImportError, Progress};
use crate::users::{self, CreditChange, NewUser, User, UserError};

#[derive(Parser, Debug)]
#[command(name = "creditgate", version, about = "A credit-metered HTTP API service", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API until SIGINT, SIGTERM or /stopServer (the default).
    Serve,
    /// Create the database if needed and apply the missing migrations.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage banks, the priced resources.
    #[command(subcommand)]
    Bank(BankCommand),
    /// Manage gateway routes: other HTTP APIs metered behind creditgate.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Manage a user's API keys (1 to 20 per user).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage services: backends calling the /v1/ API with their own token.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage webhook endpoints: signed events about credit and holds.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Run the monthly refill now (for this month, or for --period).
    Refill {
        /// The month to refill, YYYY-MM; users whose refill moment in it has passed.
        #[arg(long)]
        period: Option<String>,
    },
    /// Print daily usage, or export it per key (`usage export`).
    Usage(UsageArgs),
    /// Print a user's credit ledger (every change that is not a request
    /// charge), newest first, a page at a time.
    Ledger(LedgerArgs),
    /// Move users over from the Flask sample's table (USERNAME, TOKEN, CREDIT).
    ImportLegacy {
        /// The sample's database, mysql://user[:pass]@host:port/dbname
        #[arg(long = "from")]
        from: String,
        /// The table holding USERNAME, TOKEN and CREDIT.
        #[arg(long, default_value = "users")]
        table: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints its token (alone) on stdout.
    Add {
        /// The username: 1-64 of A-Z a-z 0-9 . _ - (case-sensitive).
        name: String,
        /// Starting credit (default: --monthly, else 0).
        // Negative numbers reach Credit::parse, which says what is accepted;
        // clap would call them unknown flags.
        #[arg(long, allow_negative_numbers = true)]
        credit: Option<String>,
        /// Monthly allowance restored on --refill-day.
        #[arg(long, allow_negative_numbers = true)]
        monthly: Option<String>,
        /// Day of the month (1-31) the allowance is restored; past a month's end, its last day.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        refill_day: i64,
        /// The user's e-mail (a@b or "Name <a@b>"), for low-credit notices.
        #[arg(long)]
        email: Option<String>,
        /// Import an existing token instead of generating one.
        #[arg(long)]
        token: Option<String>,
        /// A rate limit: N/s, N/min or N/h (GCRA, burst = N).
        #[arg(long)]
        rate: Option<String>,
        /// Mail the user (and the alert list) once when a charge takes the credit below N.
        #[arg(long, allow_negative_numbers = true)]
        low_credit: Option<String>,
    },
    /// List users.
    List {
        /// Print {"users":[…]} as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user.
    Show {
        /// The username.
        name: String,
        /// Print the user JSON as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Add to (--add, may be negative) or set (--set) a user's credit.
    Credit {
        /// The username.
        name: String,
        /// Credits to add; negative takes away (never below 0 or what is held).
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "set",
            required_unless_present = "set"
        )]
        add: Option<String>,
        /// The new balance (0 or more; not below what open holds keep).
        #[arg(long, allow_negative_numbers = true)]
        set: Option<String>,
    },
    /// Give a user a new key (its token alone on stdout); the others expire after --grace.
    Rotate {
        /// The username.
        name: String,
        /// How long the other keys keep working (45s, 90m, 12h, 30d); default 0: at once.
        #[arg(long, default_value = "0s")]
        grace: String,
    },
    /// Set (--rate 600/min) or remove (--rate off) a user's rate limit.
    Limit {
        /// The username.
        name: String,
        /// N/s, N/min or N/h (GCRA, burst = N), or off.
        #[arg(long)]
        rate: String,
    },
    /// Set (--low-credit N) or remove (--low-credit off) the low-credit notice.
    Notify {
        /// The username.
        name: String,
        /// Mail once when a charge takes the credit below N; off removes it.
        #[arg(long, allow_negative_numbers = true)]
        low_credit: String,
    },
    /// Refuse a user's requests until enabled again.
    Disable {
        /// The username.
        name: String,
    },
    /// Accept a disabled user's requests again.
    Enable {
        /// The username.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum BankCommand {
    /// Add a bank.
    Add {
        /// 1-16 letters and digits; case-insensitive.
        code: String,
        /// The bank's display name.
        #[arg(long)]
        name: String,
        /// Two-letter country code.
        #[arg(long)]
        country: Option<String>,
        /// The bank's BIC (SWIFT code).
        #[arg(long)]
        bic: Option<String>,
        /// Credits per request (0 = free).
        #[arg(long, default_value = "1", allow_negative_numbers = true)]
        cost: String,
        /// Extra data returned with the bank, as a JSON value.
        #[arg(long, default_value = "{}")]
        data: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// Meter requests under PREFIX and forward them to --upstream.
    Add {
        /// The path prefix, e.g. /weather (requests to /weather and /weather/…).
        prefix: String,
        /// http://host[:port][/base] or https://…
        #[arg(long)]
        upstream: String,
        /// Credits per request (0 = free).
        #[arg(long, default_value = "1", allow_negative_numbers = true)]
        cost: String,
        /// Allowed methods, comma-separated (default: any).
        #[arg(long, default_value = "")]
        methods: String,
        /// Which upstream answers are billed: 2xx, non-5xx or always.
        #[arg(long, default_value = "2xx")]
        charge_on: String,
        /// Connect + whole answer, 1 to 600000 ms.
        #[arg(long, default_value_t = 30_000, allow_negative_numbers = true)]
        timeout_ms: i64,
        /// Forward /prefix/x as /x.
        #[arg(long)]
        strip_prefix: bool,
        /// At most this many requests of the route at once on one instance
        /// (more: 503 route_busy); default half the handler threads.
        #[arg(long, allow_negative_numbers = true)]
        max_in_flight: Option<i64>,
        /// Priced by the upstream: hold this much per request, then charge
        /// the price the answer's --cost-header states (at most this).
        #[arg(long, allow_negative_numbers = true)]
        max_cost: Option<i64>,
        /// The answer header that states the price (default X-Credit-Cost).
        #[arg(long)]
        cost_header: Option<String>,
    },
    /// List routes.
    List {
        /// Print {"routes":[…]} as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the route with this prefix.
    Remove {
        /// The route's prefix, e.g. /weather.
        prefix: String,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub export: Option<UsageCommand>,
    /// Only this user.
    pub name: Option<String>,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD.
    #[arg(long)]
    pub to: Option<String>,
    /// Print {"rows":[…]} as the admin API does, not a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// The username.
    pub name: String,
    /// Rows per page, 1 to 1000.
    #[arg(long, default_value_t = ledger::DEFAULT_PAGE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only rows older than this row id (the previous page's next_before).
    #[arg(long)]
    pub before: Option<u64>,
    /// Print {"username","rows":[…],"next_before"} as the admin API does.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Stream usage per user, API key, day and endpoint to stdout, as CSV
    /// (RFC 4180) or JSON: for invoicing.
    Export(export::ExportArgs),
}

/// Why a command exits non-zero; printed as one line.
#[derive(Debug)]
pub enum CliError {
    /// A flag's value is refused; `flag` names it (`--add`, `--ttl`, …).
    Flag { flag: String, why: String },
    /// The command cannot run as it was asked (which flags go together,
    /// what must exist first).
    Usage(&'static str),
    /// The database could not be reached; `why` is the driver's words.
    Connect(String),
    /// A failure below the CLI (database, domain rule); its cause chain is
    /// printed.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl CliError {
    /// A refused flag value, with the parse error's own words.
    pub fn flag(flag: impl Into<String>, why: impl fmt::Display) -> CliError {
        CliError::Flag {
            flag: flag.into(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Flag { flag, why } => write!(f, "{flag}: {why}"),
            CliError::Usage(what) => f.write_str(what),
            CliError::Connect(why) => write!(f, "cannot connect to DATABASE_URL: {why}"),
            CliError::Failed(e) => f.write_str(&error_chain(&**e)),
        }
    }
}

impl std::error::Error for CliError {}

macro_rules! cli_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::Failed(Box::new(e))
            }
        }
    )*};
}
cli_error_from!(
    DbError,
    UserError,
    BankError,
    RouteError,
    crate::users::keys::KeyError,
    crate::services::ServiceError,
    crate::webhooks::WebhookError,
    ImportError,
    ConfigError,
    crate::app::StartError,
    crate::model::ParseError,
    std::io::Error
);

/// Turns clap's answer to a bad command line into a one-line reason and
/// exit code 2 (`--help` and `--version` are printed as clap has them).
/// Clap's own text spans several lines: reason, tip, usage, pointer.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    eprintln!("creditgate: {}", usage_error_line(&e));
    ExitCode::from(2)
}

fn usage_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    // "Usage: creditgate user add [OPTIONS] <NAME>" names the command that
    // was being parsed; its --help is the one to point to.
    let command: Vec<&str> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .unwrap_or("creditgate")
        .split_whitespace()
        .take_while(|w| !w.starts_with(['<', '[', '-']))
        .collect();
    let command = command.join(" ");
    let reason = if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        format!("`{command}` needs a subcommand")
    } else {
        // The first paragraph is the reason, possibly over several lines.
        text.split("\n\n")
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string()
    };
    format!("{reason}; try `{command} --help`")
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Ok(crate::app::serve(config)?),
        Command::Migrate => migrate(&config),
        Command::User(cmd) => user(&connect(&config)?, cmd),
        Command::Bank(BankCommand::Add {
            code,
            name,
            country,
            bic,
            cost,
            data,
        }) => {
            let data: serde_json::Value = serde_json::from_str(&data)
                .map_err(|e| CliError::flag("--data", format!("not JSON: {e}")))?;
            let bank = banks::add(
                &connect(&config)?,
                NewBank {
                    code: BankCode::parse(&code)?,
                    name,
                    country,
                    bic,
                    cost: Credit::parse(&cost)?,
                    data,
                },
            )?;
            eprintln!(
                "added bank {} ({}), cost {}",
                bank.code, bank.name, bank.cost
            );
            Ok(())
        }
        Command::Route(cmd) => route(&connect(&config)?, cmd),
        Command::Key(cmd) => keys::run(&connect(&config)?, cmd),
        Command::Service(cmd) => services::run(&connect(&config)?, cmd),
        Command::Webhook(cmd) => webhooks::run(&connect(&config)?, cmd),
        Command::Refill { period } => {
            let now = Utc::now();
            let period = match period {
                Some(p) => Period::parse(&p)?,
                None => Period::of(now.date_naive()),
            };
            let n = bank::refill(&connect(&config)?, period, now, &actor())?;
            eprintln!("{n} user(s) refilled for {period}");
            Ok(())
        }
        Command::Usage(UsageArgs {
            export: Some(UsageCommand::Export(args)),
            ..
        }) => {
            let request = export::parse(&args)?;
            export::run(&connect(&config)?, request)
        }
        Command::Usage(args) => usage_report(&connect(&config)?, args),
        Command::Ledger(args) => ledger_report(&connect(&config)?, args),
        Command::ImportLegacy { from, table } => import_legacy(&connect(&config)?, &from, &table),
    }
}

/// The actor written to the ledger: `cli:<os user>`.
pub fn actor() -> String {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{who}")
}

fn connect(config: &Config) -> Result<Pool, CliError> {
    probe(config.database_url.expose())?;
    let pool = db::pool(config.database_url.expose(), 2, config.db_timeout)?;
    db::check_schema(&pool)?;
    Ok(pool)
}

/// One direct connection before the pool: a pool that cannot connect only
/// reports a timeout, after waiting for it, and loses why.
fn probe(url: &str) -> Result<(), CliError> {
    match db::connect_once(url) {
        Ok(_) => Ok(()),
        // `migrate` creates the database.
        Err(DbError::UnknownDatabase(_)) => Err(CliError::Usage(
            "the database of DATABASE_URL does not exist yet: run `creditgate migrate`",
        )),
        Err(DbError::Query(e)) => Err(CliError::Connect(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn migrate(config: &Config) -> Result<(), CliError> {
    db::create_database_if_missing(config.database_url.expose())?;
    let pool = db::pool(config.database_url.expose(), 1, config.db_timeout)?;
    let applied = db::migrate(&pool)?;
    if applied.is_empty() {
        eprintln!(
            "schema is up to date (version {})",
            db::expected_schema_version()
        );
    }
    for file in applied {
        eprintln!("applied {file}");
    }
    Ok(())
}

fn user(pool: &Pool, cmd: UserCommand) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            name,
            credit,
            monthly,
            refill_day,
            email,
            token,
            rate,
            low_credit,
        } => {
            let new = NewUser {
                username: Username::parse(&name)?,
                credit: credit.as_deref().map(Credit::parse).transpose()?,
                monthly_credit: monthly.as_deref().map(Credit::parse).transpose()?,
                refill_day: RefillDay::parse(refill_day)?,
                email: email.as_deref().map(Email::parse).transpose()?,
                token: token.as_deref().map(ImportedToken::parse).transpose()?,
                rate_limit: rate.as_deref().map(RateLimit::parse).transpose()?,
                low_credit: low_credit.as_deref().map(Credit::parse).transpose()?,
            };
            let (user, token) = users::create(pool, new, Reason::Create, &actor(), Utc::now())?;
            println!("{token}");
            eprintln!(
                "created user {} with credit {} (token {}…, shown this once)",
                user.username, user.credit, user.token_prefix
            );
        }
        UserCommand::List { json } => {
            let list = users::list(pool)?;
            if json {
                // The admin API's shape, so one script reads both.
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "users": list }))
                        .expect("users serialise")
                );
            } else {
                print!("{}", user_table(&list));
            }
        }
        UserCommand::Show { name, json } => {
            print_user(&users::show(pool, &Username::parse(&name)?)?, json)
        }
        UserCommand::Credit { name, add, set } => {
            let change = match (add, set) {
                (Some(a), None) => {
                    CreditChange::Add(parse_delta(&a).map_err(|e| CliError::flag("--add", e))?)
                }
                (None, Some(s)) => CreditChange::Set(Credit::parse(&s)?),
                _ => return Err(CliError::Usage("give exactly one of --add N or --set N")),
            };
            print_user(
                &users::change_credit(pool, &Username::parse(&name)?, change, &actor())?,
                false,
            );
        }
        UserCommand::Rotate { name, grace } => keys::rotate(pool, &name, &grace)?,
        UserCommand::Limit { name, rate } => print_user(&keys::limit(pool, &name, &rate)?, false),
        UserCommand::Notify { name, low_credit } => {
            print_user(&keys::notify(pool, &name, &low_credit)?, false)
        }
        UserCommand::Disable { name } => print_user(
            &users::set_disabled(pool, &Username::parse(&name)?, true)?,
            false,
        ),
        UserCommand::Enable { name } => print_user(
            &users::set_disabled(pool, &Username::parse(&name)?, false)?,
            false,
        ),
    }
    Ok(())
}

fn route(pool: &Pool, cmd: RouteCommand) -> Result<(), CliError> {
    match cmd {
        RouteCommand::Add {
            prefix,
            upstream,
            cost,
            methods,
            charge_on,
            timeout_ms,
            strip_prefix,
            max_in_flight,
            max_cost,
            cost_header,
        } => {
            let raw = RawRoute {
                prefix,
                upstream,
                cost: Some(
                    Credit::parse(&cost)
                        .map_err(|e| CliError::flag("--cost", e))?
                        .get(),
                ),
                methods: vec![methods],
                charge_on: Some(charge_on),
                timeout_ms: Some(timeout_ms),
                strip_prefix,
                max_in_flight,
                max_cost,
                cost_header,
            };
            let new = NewRoute::from_raw(&raw).map_err(RouteError::Invalid)?;
            let r = store::add(pool, new)?;
            eprintln!(
                "added route {} -> {} (cost {}, id {}); running servers pick it up within {} s",
                r.prefix,
                r.upstream,
                r.cost,
                r.id,
                crate::gateway::REFRESH.as_secs()
            );
        }
        RouteCommand::List { json } => {
            let list = store::list(pool)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "routes": list }))
                        .expect("routes serialise")
                );
            } else {
                print!("{}", route_table(&list));
            }
        }
        RouteCommand::Remove { prefix } => {
            let r = store::remove_prefix(pool, &Prefix::parse(&prefix)?)?;
            eprintln!("removed route {} -> {}", r.prefix, r.upstream);
        }
    }
    Ok(())
}

fn route_table(list: &[Route]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.prefix.to_string(),
                r.upstream.to_string(),
                r.cost.to_string(),
                if r.methods.as_slice().is_empty() {
                    "any".into()
                } else {
                    r.methods.as_slice().join(",")
                },
                r.charge_on.as_str().into(),
                r.timeout_ms.to_string(),
                if r.strip_prefix { "yes" } else { "no" }.into(),
                match r.max_cost {
                    Some(m) => format!("{m} by {}", r.cost_header),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "PREFIX",
            "UPSTREAM",
            "COST",
            "METHODS",
            "CHARGE_ON",
            "TIMEOUT_MS",
            "STRIP",
            "MAX_COST",
        ],
        &rows,
    )
}

/// `import-legacy`: the import reports, this prints. On a terminal the
/// progress is one line rewritten in place; in a log or a pipe, a line per
/// tenth of the rows, at most every 1000.
fn import_legacy(pool: &Pool, from: &str, table: &str) -> Result<(), CliError> {
    use std::io::Write;
    let on_terminal = std::io::stderr().is_terminal();
    let mut report = |p: Progress<'_>| match p {
        Progress::Skipped { name, why } => {
            if on_terminal {
                eprint!("\r");
            }
            eprintln!("skipped {name:?}: {why}");
        }
        Progress::Rows { done, total } if on_terminal => {
            eprint!("\r{done}/{total} rows");
            let _ = std::io::stderr().flush();
            if done == total {
                eprintln!();
            }
        }
        Progress::Rows { done, total } => {
            if done % (total / 10).clamp(1, 1000) == 0 || done == total {
                eprintln!("{done}/{total} rows");
            }
        }
    };
    let s = crate::users::import::import(pool, from, table, &actor(), &mut report)?;
    eprintln!(
        "imported {} user(s); skipped {} existing and {} invalid",
        s.imported, s.existing, s.invalid
    );
    Ok(())
}

fn print_user(u: &User, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(u).expect("users serialise")
        );
        return;
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("username:       {}", u.username);
    println!("token_prefix:   {}", u.token_prefix);
    println!("credit:         {}", u.credit);
    println!(
        "monthly_credit: {}",
        opt(u.monthly_credit.map(|m| m.to_string()))
    );
    println!("refill_day:     {}", u.refill_day);
    println!("credit_period:  {}", opt(u.credit_period.clone()));
    println!("email:          {}", opt(u.email.clone()));
    println!("disabled:       {}", u.disabled);
    println!(
        "rate_limit:     {}",
        opt(u.rate_limit.map(|r| r.to_string()))
    );
    println!(
        "low_credit:     {}",
        opt(u.low_credit.map(|n| n.to_string()))
    );
    println!("created_at:     {}", u.created_at);
}

/// Left-aligned columns, as wide as their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn user_table(list: &[User]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            vec![
                u.username.clone(),
                u.credit.to_string(),
                u.monthly_credit
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                u.refill_day.to_string(),
                u.credit_period.clone().unwrap_or_else(|| "-".into()),
                if u.disabled { "yes" } else { "no" }.into(),
                u.token_prefix.clone(),
                u.email.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "USERNAME",
            "CREDIT",
            "MONTHLY",
            "REFILL_DAY",
            "PERIOD",
            "DISABLED",
            "TOKEN",
            "EMAIL",
        ],
        &rows,
    )
}

/// `ledger NAME`: one page, newest first; the id of the next page's
/// `--before` on stderr when there is one.
fn ledger_report(pool: &Pool, args: LedgerArgs) -> Result<(), CliError> {
    let name = Username::parse(&args.name)?;
    let Some(page) = ledger::page(pool, &name, args.limit, args.before)? else {
        return Err(UserError::Unknown(name.as_str().to_string()).into());
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&page).expect("a ledger page serialises")
        );
        return Ok(());
    }
    let cells: Vec<Vec<String>> = page
        .rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.at.clone(),
                format!("{:+}", r.delta),
                r.balance_after.to_string(),
                r.reason.clone(),
                r.period.clone().unwrap_or_else(|| "-".into()),
                r.actor.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "TIME", "DELTA", "BALANCE", "REASON", "PERIOD", "ACTOR"],
            &cells
        )
    );
    if let Some(next) = page.next_before {
        eprintln!("more: creditgate ledger {name} --before {next}");
    }
    Ok(())
}

fn usage_report(pool: &Pool, args: UsageArgs) -> Result<(), CliError> {
    let day = |flag: &str, v: Option<String>| {
        v.map(|v| Day::parse(&v).map_err(|e| CliError::flag(flag, e)))
            .transpose()
    };
    let filter = Filter {
        user: args.name.as_deref().map(Username::parse).transpose()?,
        from: day("--from", args.from)?,
        to: day("--to", args.to)?,
    };
    let rows = usage::report(pool, &filter)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "rows": rows }))
                .expect("rows serialise")
        );
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.day.clone(),
                r.username.clone(),
                r.endpoint.clone(),
                r.calls.to_string(),
                r.credits.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["DAY", "USERNAME", "ENDPOINT", "CALLS", "CREDITS"], &cells)
    );
    if std::io::stdout().is_terminal() && rows.is_empty() {
        eprintln!("(no usage in this range)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: #24 (`user credit --help` listed --add and --set without a word).
    #[test]
    fn every_argument_of_every_command_says_what_it_is_in_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "creditgate", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:#?}");
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["A", "LONG"],
            &[
                vec!["wide cell".into(), "1".into()],
                vec!["x".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A          LONG\nwide cell  1\nx          22\n");
    }

    #[test]
    fn usage_errors_become_one_line_naming_the_command() {
        use clap::CommandFactory;
        let err = |args: &[&str]| {
            let e = Cli::command().try_get_matches_from(args).unwrap_err();
            usage_error_line(&e)
        };
        assert_eq!(
            err(&["creditgate", "user", "add"]),
            "the following required arguments were not provided: <NAME>; try `creditgate user add --help`"
        );
        assert_eq!(
            err(&["creditgate", "user"]),
            "`creditgate user` needs a subcommand; try `creditgate user --help`"
        );
        let line = err(&["creditgate", "frob"]);
        assert!(line.starts_with("unrecognized subcommand 'frob'"), "{line}");
        assert!(line.ends_with("; try `creditgate --help`"), "{line}");
    }

    #[test]
    fn every_level_has_help() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
