//! Configuration from the environment: raw strings first, then one validated
//! `Config`. Every error names the variable and what it accepts. Secrets are
//! wrapped so that `Debug` (and so any log line) never shows them. Std,
//! `model` and the database's default retries only.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::model::Email;
use crate::net::TrustedProxies;

/// A value that must not be shown: `Debug` prints `"[redacted]"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds a password when there is one, hence secret.
    pub database_url: Secret,
    pub bind: SocketAddr,
    pub threads: usize,
    pub db_pool: u32,
    /// How long a request waits for a pooled connection before 503.
    pub db_timeout: Duration,
    /// How often a transaction the database rolled back is run again
    /// (within `db_timeout`).
    pub db_retries: u32,
    /// How long `serve` waits for the database at start before giving up.
    pub db_start_wait: Duration,
    pub admin_token: Option<Secret>,
    /// What a proxy presents to `/v1/forward-auth`; unset, it answers 403.
    pub forward_auth_secret: Option<Secret>,
    pub smtp_url: Option<Secret>,
    pub mail_from: Option<String>,
    pub alert_to: Vec<String>,
    pub mail_prefix: String,
    pub heartbeat: Duration,
    pub query_token: bool,
    pub auth_fails_per_min: u32,
    /// The bank route answers as the Flask sample did (201 and its bodies).
    pub legacy_answers: bool,
    /// Charge waiting requests together (`billing::group`).
    pub coalesce: bool,
    /// With `coalesce`: how many batches of different users' requests may
    /// run at once (`CREDITGATE_COALESCE_BATCHES`).
    pub coalesce_batches: usize,
    /// The largest request body a gateway route takes (it is buffered).
    pub max_body_bytes: u64,
    /// What the HTTP edge holds every client to.
    pub edge: Edge,
    /// How webhooks are delivered (`webhooks::deliver`).
    pub webhooks: WebhookDelivery,
}

/// Webhook delivery: how long a receiver may take, and the first retry's
/// delay (the later ones double it, up to an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub timeout: Duration,
    /// At most 5 s, as the contract says; shorter only to make tests quick.
    pub first_retry: Duration,
}

/// The HTTP edge's limits and trust (docs/guarantees.md, "Exposing creditgate").
#[derive(Debug, Clone)]
pub struct Edge {
    /// A request head must be complete this long after its first byte; a
    /// body or an answer gets this long before `min_rate` applies.
    pub head_timeout: Duration,
    /// Bytes a second a body must arrive at, and an answer be taken at.
    pub min_rate: u64,
    /// Connections one client address may hold at once (0 = no cap).
    pub max_conns_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// The largest gateway answer stored for an idempotent replay.
    pub idempotent_answer_bytes: u64,
    /// PEM certificate chain and key: serve HTTPS.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/creditgate";

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any source of variables, so tests need not touch the process
    /// environment. An empty value counts as unset. Each field is read and
    /// validated by one small function below.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = number(&var, "CREDITGATE_THREADS", 1, 4096)?
            .unwrap_or(default_threads(cores) as u64) as usize;
        Ok(Config {
            database_url: Secret::new(database_url(var("DATABASE_URL"))?),
            bind: bind(var("CREDITGATE_BIND"))?,
            threads,
            // Not one per handler thread: most of them wait on clients and
            // upstreams, and more connections on one hot row only queue.
            db_pool: number(&var, "CREDITGATE_DB_POOL", 1, 1024)?
                .unwrap_or(threads.min(8 * cores) as u64) as u32,
            db_timeout: Duration::from_millis(
                number(&var, "CREDITGATE_DB_TIMEOUT_MS", 10, 600_000)?.unwrap_or(3000),
            ),
            db_retries: number(&var, "CREDITGATE_DB_RETRIES", 0, 100)?
                .unwrap_or(crate::db::DEFAULT_RETRIES.into()) as u32,
            db_start_wait: Duration::from_secs(
                number(&var, "CREDITGATE_DB_START_WAIT_SECS", 0, 3600)?.unwrap_or(20),
            ),
            admin_token: var("CREDITGATE_ADMIN_TOKEN").map(Secret::new),
            forward_auth_secret: var("CREDITGATE_FORWARD_AUTH_SECRET").map(Secret::new),
            smtp_url: smtp_url(var("CREDITGATE_SMTP_URL"))?.map(Secret::new),
            mail_from: var("CREDITGATE_MAIL_FROM")
                .map(|v| mailbox("CREDITGATE_MAIL_FROM", &v).map(|_| v))
                .transpose()?,
            alert_to: mailbox_list("CREDITGATE_ALERT_TO", var("CREDITGATE_ALERT_TO"))?,
            // The prefix keeps its spaces on purpose: it is glued to the subject.
            mail_prefix: get("CREDITGATE_MAIL_PREFIX")
                .unwrap_or_else(|| "creditgate - ".to_string()),
            heartbeat: Duration::from_secs(
                number(&var, "CREDITGATE_HEARTBEAT_SECS", 1, 86_400)?.unwrap_or(10),
            ),
            query_token: switch(
                "CREDITGATE_QUERY_TOKEN",
                var("CREDITGATE_QUERY_TOKEN"),
                true,
            )?,
            auth_fails_per_min: number(&var, "CREDITGATE_AUTH_FAILS_PER_MIN", 1, 1_000_000)?
                .unwrap_or(30) as u32,
            coalesce: switch("CREDITGATE_COALESCE", var("CREDITGATE_COALESCE"), false)?,
            coalesce_batches: number(&var, "CREDITGATE_COALESCE_BATCHES", 1, 64)?.unwrap_or(2)
                as usize,
            legacy_answers: switch(
                "CREDITGATE_LEGACY_ANSWERS",
                var("CREDITGATE_LEGACY_ANSWERS"),
                false,
            )?,
            max_body_bytes: number(&var, "CREDITGATE_MAX_BODY_BYTES", 0, 1 << 30)?
                .unwrap_or(1_048_576),
            edge: edge(&var)?,
            webhooks: WebhookDelivery {
                timeout: Duration::from_secs(
                    number(&var, "CREDITGATE_WEBHOOK_TIMEOUT_SECS", 1, 300)?.unwrap_or(10),
                ),
                first_retry: Duration::from_millis(
                    number(&var, "CREDITGATE_WEBHOOK_FIRST_RETRY_MS", 100, 5000)?.unwrap_or(5000),
                ),
            },
        })
    }
}

/// Handler threads mostly wait (on clients, upstreams, the database), so
/// there are more than the 8 per core of old: a blocked one costs its
/// touched stack (about 320 KB with its connection), not a core. Not too
/// many either: at 64 on 2 cores the paid path lost 15–25 % against 16 or
/// 32 (more runnable threads than database connections). BENCHMARKS.md,
/// "Handler threads".
pub fn default_threads(cores: usize) -> usize {
    (16 * cores).max(32)
}

fn edge(var: &impl Fn(&str) -> Option<String>) -> Result<Edge, ConfigError> {
    let trusted_proxies = match var("CREDITGATE_TRUSTED_PROXIES") {
        None => TrustedProxies::default(),
        Some(v) => TrustedProxies::parse(&v)
            .map_err(|e| bad("CREDITGATE_TRUSTED_PROXIES", &format!("{e} (expected a comma-separated list of CIDR blocks, e.g. 10.0.0.0/8,127.0.0.1)")))?,
    };
    Ok(Edge {
        head_timeout: Duration::from_millis(
            number(var, "CREDITGATE_HEAD_TIMEOUT_MS", 100, 600_000)?.unwrap_or(10_000),
        ),
        min_rate: number(var, "CREDITGATE_MIN_RATE_BYTES", 1, 1 << 30)?.unwrap_or(1024),
        max_conns_per_ip: number(var, "CREDITGATE_MAX_CONNS_PER_IP", 0, 1_000_000)?.unwrap_or(64)
            as usize,
        trusted_proxies,
        idempotent_answer_bytes: number(var, "CREDITGATE_IDEMPOTENT_ANSWER_BYTES", 0, 16 << 20)?
            .unwrap_or(1 << 20),
        tls: tls_files(var("CREDITGATE_TLS_CERT"), var("CREDITGATE_TLS_KEY"))?,
    })
}

fn tls_files(cert: Option<String>, key: Option<String>) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        })),
        (Some(_), None) => Err(bad(
            "CREDITGATE_TLS_CERT",
            "is set but CREDITGATE_TLS_KEY is not; set both (PEM files) or neither",
        )),
        (None, Some(_)) => Err(bad(
            "CREDITGATE_TLS_KEY",
            "is set but CREDITGATE_TLS_CERT is not; set both (PEM files) or neither",
        )),
    }
}

fn bad(variable: &'static str, message: &str) -> ConfigError {
    ConfigError {
        variable,
        message: message.to_string(),
    }
}

fn database_url(v: Option<String>) -> Result<String, ConfigError> {
    let url = v.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    if !url.starts_with("mysql://") {
        return Err(bad(
            "DATABASE_URL",
            "expected mysql://user[:password]@host:port/database",
        ));
    }
    Ok(url)
}

fn bind(v: Option<String>) -> Result<SocketAddr, ConfigError> {
    match v {
        None => Ok("127.0.0.1:5000".parse().expect("default address")),
        Some(v) => v.trim().parse().map_err(|_| {
            bad(
                "CREDITGATE_BIND",
                &format!("expected host:port such as 127.0.0.1:5000, not {v:?}"),
            )
        }),
    }
}

fn smtp_url(v: Option<String>) -> Result<Option<String>, ConfigError> {
    match v {
        Some(url) if !(url.starts_with("smtp://") || url.starts_with("smtps://")) => Err(bad(
            "CREDITGATE_SMTP_URL",
            "expected smtp://[user:pass@]host:port or smtps://…",
        )),
        v => Ok(v),
    }
}

/// `on`/`off` (also `true`/`false`, `1`/`0`); unset is `default`.
fn switch(name: &'static str, v: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::trim) {
        None => Ok(default),
        Some("on") | Some("true") | Some("1") => Ok(true),
        Some("off") | Some("false") | Some("0") => Ok(false),
        Some(v) => Err(bad(name, &format!("expected on or off, not {v:?}"))),
    }
}

/// A mailbox, `a@b` or `Name <a@b>`, whose address is an `Email`.
fn mailbox(name: &'static str, v: &str) -> Result<Email, ConfigError> {
    let v = v.trim();
    let address = match (v.rfind('<'), v.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => v,
    };
    Email::parse(address).map_err(|e| bad(name, &format!("expected an e-mail address: {e}")))
}

fn mailbox_list(name: &'static str, v: Option<String>) -> Result<Vec<String>, ConfigError> {
    let list: Vec<String> = v
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for addr in &list {
        mailbox(name, addr)?;
    }
    Ok(list)
}

fn number(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    match var(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad(
                name,
                &format!("expected a whole number from {min} to {max}, not {v:?}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.bind.to_string(), "127.0.0.1:5000");
        assert!(c.threads >= 32);
        assert!(c.db_pool as usize <= c.threads);
        assert_eq!(c.edge.head_timeout, Duration::from_secs(10));
        assert_eq!(c.edge.min_rate, 1024);
        assert_eq!(c.edge.max_conns_per_ip, 64);
        assert!(c.edge.trusted_proxies.is_empty());
        assert_eq!(c.edge.idempotent_answer_bytes, 1 << 20);
        assert!(c.edge.tls.is_none());
        assert!(c.admin_token.is_none());
        assert!(c.forward_auth_secret.is_none());
        assert_eq!(c.mail_prefix, "creditgate - ");
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert!(c.query_token);
        assert_eq!(c.auth_fails_per_min, 30);
        assert_eq!(c.db_start_wait, Duration::from_secs(20));
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.db_retries, 5);
        assert!(!c.legacy_answers);
        assert!(!c.coalesce);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("CREDITGATE_BIND", "nowhere"),
            ("CREDITGATE_THREADS", "0"),
            ("CREDITGATE_THREADS", "many"),
            ("CREDITGATE_DB_POOL", "-3"),
            ("CREDITGATE_HEARTBEAT_SECS", "1.5"),
            ("CREDITGATE_QUERY_TOKEN", "maybe"),
            ("CREDITGATE_AUTH_FAILS_PER_MIN", "0"),
            ("CREDITGATE_MAX_BODY_BYTES", "2GB"),
            ("CREDITGATE_DB_RETRIES", "101"),
            ("CREDITGATE_LEGACY_ANSWERS", "yes please"),
            ("CREDITGATE_COALESCE", "sometimes"),
            ("CREDITGATE_SMTP_URL", "http://x"),
            ("CREDITGATE_ALERT_TO", "ops"),
            ("DATABASE_URL", "postgres://x"),
            ("CREDITGATE_HEAD_TIMEOUT_MS", "5"),
            ("CREDITGATE_MIN_RATE_BYTES", "0"),
            ("CREDITGATE_MAX_CONNS_PER_IP", "lots"),
            ("CREDITGATE_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("CREDITGATE_IDEMPOTENT_ANSWER_BYTES", "1e6"),
            ("CREDITGATE_TLS_CERT", "/etc/cert.pem"),
        ] {
            let e = config(&[(name, value)]).unwrap_err();
            assert_eq!(e.variable, name, "{e}");
        }
    }

    #[test]
    fn debug_redacts_every_secret() {
        let c = config(&[
            ("DATABASE_URL", "mysql://u:dbpass123@h:3306/d"),
            ("CREDITGATE_ADMIN_TOKEN", "admintoken123"),
            ("CREDITGATE_SMTP_URL", "smtp://u:smtppass123@h:25"),
            ("CREDITGATE_FORWARD_AUTH_SECRET", "forwardsecret123"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in [
            "dbpass123",
            "admintoken123",
            "smtppass123",
            "forwardsecret123",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn mail_addresses_may_carry_a_display_name() {
        let c = config(&[
            ("CREDITGATE_MAIL_FROM", "creditgate <svc@example.org>"),
            ("CREDITGATE_ALERT_TO", "Ops <ops@example.org>, b@y.org"),
        ])
        .unwrap();
        assert_eq!(c.alert_to.len(), 2);
        let e = config(&[("CREDITGATE_MAIL_FROM", "svc <nobody>")]).unwrap_err();
        assert_eq!(e.variable, "CREDITGATE_MAIL_FROM");
    }

    #[test]
    fn alert_list_is_comma_separated() {
        let c = config(&[("CREDITGATE_ALERT_TO", "a@x.org, b@y.org,")]).unwrap();
        assert_eq!(c.alert_to, vec!["a@x.org", "b@y.org"]);
    }
}
