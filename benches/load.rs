//! `make bench`: creditgate side by side with the database's own ceiling, in
//! one run, on this machine.
//!
//! - ceiling: the per-request transaction (lock the user row, charge,
//!   upsert usage, commit; the bank is in creditgate's memory) sent straight to MariaDB from N threads
//!   over N connections with prepared statements — no HTTP;
//! - creditgate: the release binary under HTTP/1.1 keep-alive load from N
//!   client threads (the load generator is below, in this file).
//!
//! Both for users spread over the table and for one hot user, at 8 and 32
//! connections. Then the gateway rows: the same paid transaction through a
//! route to a trivial loopback upstream (in this process) against the
//! built-in bank route. Then the service API rows: `/v1/charge` against
//! the bank route, and a hold and its capture against two bank-route
//! requests. Only ratios measured in the same run mean anything.
//!
//! Environment: CREDITGATE_BENCH_DATABASE_URL (server, no database name),
//! BENCH_QUICK=1 (one short row, a smoke test), BENCH_SECS (default 10),
//! BENCH_USERS (default 1000), BENCH_GROWTH=1 (spread throughput at 1k, 100k
//! and 1M users instead of the table), BENCH_BIN (another creditgate binary),
//! BENCH_CREDITGATE_THREADS / BENCH_CREDITGATE_DB_POOL (server settings),
//! BENCH_ONLY=spread|hot|gateway|service|forward-auth (only those rows).
//!
//! The forward-auth rows (`/v1/forward-auth` behind a real nginx against the
//! gateway route) run when nginx is installed (`apt-get install nginx`);
//! otherwise they say so and are skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

const TOKEN: &str = "cg_bench_token_for_every_user";
const CREDIT: i64 = 1_000_000_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Users {
    Spread(u64),
    Hot,
}

impl Users {
    fn label(self) -> String {
        match self {
            Users::Spread(n) => format!("spread over {n}"),
            Users::Hot => "one hot user".into(),
        }
    }
    fn pick(self, rng: &mut u64) -> u64 {
        match self {
            Users::Spread(n) => {
                // xorshift64: cheap, and the same for both sides.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                *rng % n
            }
            Users::Hot => 0,
        }
    }
}

#[derive(Default)]
struct Stats {
    ok: u64,
    non2xx: u64,
    latencies_us: Vec<u32>,
    secs: f64,
    peak_rss_kb: Option<u64>,
}

/// The head of every table the bench prints.
fn print_header() {
    println!(
        "| users | conns | side | req/s | p50 ms | p99 ms | non-2xx | server peak RSS | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// One row of such a table: `s` measured for `side`, with its `ratio` text.
fn print_row(users: Users, conns: usize, side: &str, s: &Stats, ratio: &str) {
    println!(
        "| {} | {conns} | {side} | {:.0} | {:.2} | {:.2} | {} | {} | {ratio} |",
        users.label(),
        s.rps(),
        s.pct(0.50),
        s.pct(0.99),
        s.non2xx,
        s.peak_rss_kb
            .map(|k| format!("{:.1} MB", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into()),
    );
}

impl Stats {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

fn main() {
    let server = std::env::var("CREDITGATE_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 10 });
    let warmup = Duration::from_secs(if quick { 1 } else { 2 });
    let run = Duration::from_secs(secs);
    let url = format!("{server}/cg_bench");
    creditgate::db::drop_database(&url).expect("drop the old bench database");
    creditgate::db::create_database_if_missing(&url).expect("create the bench database");
    let pool = creditgate::db::pool(&url, 2, Duration::from_secs(10)).unwrap();
    creditgate::db::migrate(&pool).expect("migrate");

    if std::env::var("BENCH_GROWTH").is_ok_and(|v| v == "1") {
        growth(&url, &pool, warmup, run);
        return;
    }
    let users: u64 = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    insert_users(&pool, 0, users);
    let mut server = start_server(&url);

    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "coalesce") {
        coalesce_rows(&url, &server, users, warmup, run);
        server.stop();
        let _ = creditgate::db::drop_database(&url);
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "service") {
        service_rows(&pool, &server, users, quick, warmup, run);
        server.stop();
        let _ = creditgate::db::drop_database(&url);
        return;
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "forward-auth") {
        forward_auth_rows(&url, &pool, users, quick, warmup, run);
        server.stop();
        let _ = creditgate::db::drop_database(&url);
        return;
    }
    if only_gateway() {
        gateway_rows(&pool, &server, users, quick, warmup, run);
        server.stop();
        let _ = creditgate::db::drop_database(&url);
        return;
    }
    let rows: Vec<(Users, usize)> = if quick {
        vec![(Users::Spread(users), 8)]
    } else {
        vec![
            (Users::Spread(users), 8),
            (Users::Spread(users), 32),
            (Users::Hot, 8),
            (Users::Hot, 32),
        ]
    };
    // BENCH_ONLY=hot or =spread keeps those rows.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let rows: Vec<(Users, usize)> = rows
        .into_iter()
        .filter(|(u, _)| match only.as_str() {
            "hot" => *u == Users::Hot,
            "spread" => *u != Users::Hot,
            _ => true,
        })
        .collect();
    println!(
        "\ncreditgate bench: {} cores, {secs} s per measurement after {warmup:?} warm-up\n",
        cores()
    );
    print_header();
    let mut plain = Vec::new();
    for &(users, conns) in &rows {
        let ceiling = measure(warmup, run, conns, None, |_| ceiling_worker(&url, users));
        let cg = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, BANK_PATH)
        });
        plain.push(cg.rps());
        print_row(users, conns, "ceiling", &ceiling, "");
        let ratio = format!("{:.2}", cg.rps() / ceiling.rps());
        print_row(users, conns, "creditgate", &cg, &ratio);
    }
    if only.is_empty() && !quick {
        rate_limited_rows(&pool, &server, &rows, &plain, warmup, run);
    }
    if only.is_empty() {
        gateway_rows(&pool, &server, users, quick, warmup, run);
    }
    if only.is_empty() {
        service_rows(&pool, &server, users, quick, warmup, run);
    }
    if only.is_empty() && !quick {
        forward_auth_rows(&url, &pool, users, quick, warmup, run);
    }
    if only.is_empty() && !quick {
        coalesce_rows(&url, &server, users, warmup, run);
    }
    server.stop();
    let _ = creditgate::db::drop_database(&url);
}

const BANK_PATH: &str = "/api/v1.0/banks_data/BOFA/";

/// The same rows with a rate limit on every user, high enough never to
/// refuse (1,000,000/s): what the limiter's check and its state write in
/// the charge's UPDATE cost. `ratio` is against the same row without one.
fn rate_limited_rows(
    pool: &creditgate::db::Pool,
    server: &Server,
    rows: &[(Users, usize)],
    plain: &[f64],
    warmup: Duration,
    run: Duration,
) {
    pool.get()
        .unwrap()
        .query_drop("UPDATE users SET rate_quota = 1000000, rate_window_secs = 1")
        .unwrap();
    println!("\nthe same rows with a rate limit (1000000/s) on every user\n");
    print_header();
    for (&(users, conns), &without) in rows.iter().zip(plain) {
        let s = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, BANK_PATH)
        });
        let ratio = format!("{:.2}", s.rps() / without);
        print_row(users, conns, "creditgate, rate limited", &s, &ratio);
    }
    pool.get()
        .unwrap()
        .query_drop("UPDATE users SET rate_quota = NULL, rate_window_secs = NULL, rate_tat = NULL")
        .unwrap();
}
const GATEWAY_PATH: &str = "/up/item";
const PRICED_PATH: &str = "/upm/item";

fn only_gateway() -> bool {
    std::env::var("BENCH_ONLY").is_ok_and(|v| v == "gateway")
}

/// Coalescing on (a second server, CREDITGATE_COALESCE=on) against the
/// per-request path and the ceiling, side by side per row.
/// BENCH_COALESCE_BATCHES=1,2,4 runs one coalescing server per value of
/// CREDITGATE_COALESCE_BATCHES, each measured in every row (how the default
/// was chosen); BENCH_COALESCE_ROWS=spread or =hot keeps those rows.
fn coalesce_rows(url: &str, plain: &Server, users: u64, warmup: Duration, run: Duration) {
    let batches: Vec<String> = std::env::var("BENCH_COALESCE_BATCHES")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec![String::new()]);
    let mut servers: Vec<(String, Server)> = batches
        .iter()
        .map(|b| {
            let mut extra = vec![("CREDITGATE_COALESCE", "on")];
            if !b.is_empty() {
                extra.push(("CREDITGATE_COALESCE_BATCHES", b.as_str()));
            }
            let side = if b.is_empty() {
                "coalescing on".to_string()
            } else {
                format!("coalescing on, batches {b}")
            };
            (side, start_server_with(url, &extra))
        })
        .collect();
    println!("\ncoalesced charging (CREDITGATE_COALESCE=on) against the per-request path\n");
    print_header();
    let only = std::env::var("BENCH_COALESCE_ROWS").unwrap_or_default();
    let rows = [
        (Users::Spread(users), 32),
        (Users::Spread(users), 8),
        (Users::Hot, 32),
        (Users::Hot, 8),
    ];
    for (users, conns) in rows.into_iter().filter(|(u, _)| match only.as_str() {
        "hot" => *u == Users::Hot,
        "spread" => *u != Users::Hot,
        _ => true,
    }) {
        let ceiling = measure(warmup, run, conns, None, |_| ceiling_worker(url, users));
        let off = measure(warmup, run, conns, Some(plain.pid), |_| {
            http_worker(plain.addr, users, BANK_PATH)
        });
        print_row(users, conns, "ceiling", &ceiling, "");
        let ratio = format!("{:.2} × ceiling", off.rps() / ceiling.rps());
        print_row(users, conns, "coalescing off", &off, &ratio);
        for (side, server) in &servers {
            let on = measure(warmup, run, conns, Some(server.pid), |_| {
                http_worker(server.addr, users, BANK_PATH)
            });
            let ratio = format!(
                "{:.2} × off, {:.2} × ceiling",
                on.rps() / off.rps(),
                on.rps() / ceiling.rps()
            );
            print_row(users, conns, side, &on, &ratio);
        }
    }
    for (_, server) in &mut servers {
        server.stop();
    }
}

/// The gateway against the bank route, side by side: one cost-1 charge
/// each, the gateway's plus a forward to a trivial upstream.
fn gateway_rows(
    pool: &creditgate::db::Pool,
    server: &Server,
    users: u64,
    quick: bool,
    warmup: Duration,
    run: Duration,
) {
    let upstream = trivial_upstream();
    let raw = creditgate::gateway::routes::RawRoute {
        prefix: "/up".into(),
        upstream: format!("http://{upstream}"),
        cost: Some(1),
        ..Default::default()
    };
    let route = creditgate::gateway::routes::NewRoute::from_raw(&raw).unwrap();
    creditgate::gateway::store::add(pool, route).expect("add the bench route");
    // The same route priced by its upstream (which states no price: the
    // route's cost 1 is captured from a hold of 2).
    let priced = creditgate::gateway::routes::RawRoute {
        prefix: "/upm".into(),
        max_cost: Some(2),
        ..raw
    };
    let priced = creditgate::gateway::routes::NewRoute::from_raw(&priced).unwrap();
    creditgate::gateway::store::add(pool, priced).expect("add the priced bench route");
    // Every instance re-reads its routes within this.
    std::thread::sleep(creditgate::gateway::REFRESH + Duration::from_millis(500));
    // A route holds at most half the handler threads at once (its
    // bulkhead; 16 of the default 32 on 2 cores): 32 connections would
    // measure its 503 route_busy answers, not the route.
    let conns_list: &[usize] = if quick { &[8] } else { &[8, 16] };
    println!(
        "
gateway route (to a trivial loopback upstream) against the bank route
"
    );
    print_header();
    for &conns in conns_list {
        let users = Users::Spread(users);
        let bank = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, BANK_PATH)
        });
        let gw = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, GATEWAY_PATH)
        });
        let priced = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, PRICED_PATH)
        });
        print_row(users, conns, "bank route", &bank, "");
        let ratio = format!(
            "{:.2} (p50 +{:.2} ms)",
            gw.rps() / bank.rps(),
            gw.pct(0.5) - bank.pct(0.5)
        );
        print_row(users, conns, "gateway route", &gw, &ratio);
        let ratio = format!(
            "{:.2} (× fixed {:.2})",
            priced.rps() / bank.rps(),
            priced.rps() / gw.rps()
        );
        print_row(users, conns, "gateway, max_cost", &priced, &ratio);
    }
}

/// nginx in front of a trivial upstream, metering through creditgate's
/// `/v1/forward-auth` (`auth_request`, as the README configures it), against
/// the same upstream behind a creditgate gateway route; plus nginx passing
/// the requests to that gateway route, to tell nginx's own cost apart.
fn forward_auth_rows(
    url: &str,
    pool: &creditgate::db::Pool,
    users: u64,
    quick: bool,
    warmup: Duration,
    run: Duration,
) {
    let Some(nginx_bin) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        println!(
            "
forward-auth rows skipped: nginx is not installed (apt-get install nginx)"
        );
        return;
    };
    let upstream = trivial_upstream();
    let raw = creditgate::gateway::routes::RawRoute {
        prefix: "/fa".into(),
        upstream: format!("http://{upstream}"),
        cost: Some(1),
        ..Default::default()
    };
    let route = creditgate::gateway::routes::NewRoute::from_raw(&raw).unwrap();
    creditgate::gateway::store::add(pool, route).expect("add the forward-auth bench route");
    let secret = "bench-forward-auth-secret";
    let mut server = start_server_with(
        url,
        &[
            ("CREDITGATE_FORWARD_AUTH_SECRET", secret),
            ("CREDITGATE_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let mut nginx = Nginx::start(nginx_bin, server.addr, upstream, secret);
    println!(
        "
/v1/forward-auth behind nginx against the gateway route (the same trivial upstream)
"
    );
    print_header();
    let conns_list: &[usize] = if quick { &[8] } else { &[8, 16] };
    for &conns in conns_list {
        let users = Users::Spread(users);
        let gw = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, "/fa/item")
        });
        let via_nginx = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(nginx.addr, users, "/gw/fa/item")
        });
        let fa = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(nginx.addr, users, "/fa/item")
        });
        print_row(users, conns, "gateway route", &gw, "");
        let ratio = format!("{:.2}", via_nginx.rps() / gw.rps());
        print_row(users, conns, "nginx → gateway route", &via_nginx, &ratio);
        let ratio = format!(
            "{:.2} (× nginx → gateway {:.2})",
            fa.rps() / gw.rps(),
            fa.rps() / via_nginx.rps()
        );
        print_row(users, conns, "nginx + /v1/forward-auth", &fa, &ratio);
    }
    nginx.stop();
    server.stop();
}

/// A private nginx (its own config, pid and logs in a temp dir) on a free
/// port: `/fa/` metered by `auth_request` to creditgate's
/// `/v1/forward-auth` and passed to `upstream`, as the README's nginx block
/// does; `/gw/` passed to creditgate's gateway route instead.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(bin: &str, creditgate: SocketAddr, upstream: SocketAddr, secret: &str) -> Nginx {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("cg-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        // keepalive_requests: the load's keep-alive connections are never
        // closed under it (nginx closes after 1,000 by default).
        let conf = format!(
            r#"daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location /fa/ {{
            auth_request /_creditgate;
            auth_request_set $creditgate_user $upstream_http_x_creditgate_user;
            auth_request_set $credit_remaining $upstream_http_x_credit_remaining;
            add_header X-Credit-Remaining $credit_remaining always;
            proxy_set_header X-Creditgate-User $creditgate_user;
            proxy_set_header Authorization "";
            proxy_pass http://{upstream};
        }}
        location = /_creditgate {{
            internal;
            proxy_pass http://{creditgate}/v1/forward-auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Creditgate-Forward-Secret "{secret}";
        }}
        location /gw/ {{
            proxy_pass http://{creditgate}/;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: see {d}/error.log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, addr, dir }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service API against the bank route, side by side: `/v1/charge`
/// (cost 1) against one bank lookup; a hold of 2 and its capture at 1
/// against two bank lookups (one "op" is the pair).
fn service_rows(
    pool: &creditgate::db::Pool,
    server: &Server,
    users: u64,
    quick: bool,
    warmup: Duration,
    run: Duration,
) {
    let scopes = creditgate::services::Scopes::parse("charge").unwrap();
    let (_, token) = creditgate::services::add(pool, "bench", scopes).expect("a bench service");
    let token: &'static str = Box::leak(token.into_boxed_str());
    let conns_list: &[usize] = if quick { &[8] } else { &[8, 32] };
    println!(
        "
the service API against the bank route (one op: one call; a pair for holds)
"
    );
    print_header();
    for &conns in conns_list {
        let users = Users::Spread(users);
        let bank = measure(warmup, run, conns, Some(server.pid), |_| {
            http_worker(server.addr, users, BANK_PATH)
        });
        let charge = measure(warmup, run, conns, Some(server.pid), |_| {
            service_worker(server.addr, users, token, false)
        });
        let two_banks = measure(warmup, run, conns, Some(server.pid), |_| {
            let mut one = http_worker(server.addr, users, BANK_PATH);
            Box::new(move || one() & one())
        });
        let holds = measure(warmup, run, conns, Some(server.pid), |_| {
            service_worker(server.addr, users, token, true)
        });
        print_row(users, conns, "bank route", &bank, "");
        let ratio = format!("{:.2}", charge.rps() / bank.rps());
        print_row(users, conns, "POST /v1/charge", &charge, &ratio);
        print_row(users, conns, "two bank requests", &two_banks, "");
        let ratio = format!("{:.2}", holds.rps() / two_banks.rps());
        print_row(users, conns, "hold + capture", &holds, &ratio);
    }
}

/// One keep-alive connection sending `/v1/charge` calls, or (`holds`) a
/// hold of 2 then its capture at 1.
fn service_worker(addr: SocketAddr, users: Users, token: &'static str, holds: bool) -> Worker {
    let mut stream = BufReader::new(TcpStream::connect(addr).unwrap());
    stream.get_ref().set_nodelay(true).unwrap();
    let mut rng =
        0x2545_F491_4F6C_DD1Du64 ^ (stream.get_ref().local_addr().unwrap().port() as u64) << 17;
    Box::new(move || {
        let user = users.pick(&mut rng);
        if !holds {
            let body = format!(r#"{{"user":"u{user}","cost":1}}"#);
            return post(&mut stream, token, "/v1/charge", &body).0;
        }
        let body = format!(r#"{{"user":"u{user}","amount":2}}"#);
        let (ok, answer) = post(&mut stream, token, "/v1/holds", &body);
        let id = answer
            .split("\"id\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .unwrap_or("0")
            .to_string();
        let path = format!("/v1/holds/{id}/capture");
        ok && post(&mut stream, token, &path, r#"{"amount":1}"#).0
    })
}

/// One POST with a JSON body on a keep-alive connection: (2xx?, body).
fn post(stream: &mut BufReader<TcpStream>, token: &str, path: &str, body: &str) -> (bool, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(req.as_bytes()).expect("send");
    let (ok, answer) = read_answer(stream, &mut String::new());
    let valid = !answer.windows(15).any(|w| w == b"\"valid\":false");
    (ok && valid, String::from_utf8_lossy(&answer).into_owned())
}

/// An upstream that answers every request at once with a small JSON body,
/// on four threads, for the life of the process.
fn trivial_upstream() -> SocketAddr {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind the upstream"));
    let addr = server.server_addr().to_ip().expect("a TCP address");
    for _ in 0..4 {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let _ = request.respond(tiny_http::Response::from_string(r#"{"ok":true}"#));
            }
        });
    }
    addr
}

/// Spread throughput as the user table grows: nothing in the request path
/// may scan users.
fn growth(url: &str, pool: &creditgate::db::Pool, warmup: Duration, run: Duration) {
    println!("\n| users in table | conns | creditgate req/s | p99 ms |");
    println!("|---|---|---|---|");
    let mut have = 0;
    for n in [1_000u64, 100_000, 1_000_000] {
        let t = Instant::now();
        insert_users(pool, have, n);
        eprintln!(
            "inserted {} users in {:.1} s",
            n - have,
            t.elapsed().as_secs_f64()
        );
        have = n;
        let mut server = start_server(url);
        let s = measure(warmup, run, 32, Some(server.pid), |_| {
            http_worker(server.addr, Users::Spread(n), BANK_PATH)
        });
        println!("| {n} | 32 | {:.0} | {:.2} |", s.rps(), s.pct(0.99));
        server.stop();
    }
    let _ = creditgate::db::drop_database(url);
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Users `u<from>` … `u<to - 1>`, by bulk INSERTs of 5,000 rows.
fn insert_users(pool: &creditgate::db::Pool, from: u64, to: u64) {
    let hash = creditgate::auth::token::hash(TOKEN);
    let prefix = creditgate::auth::token::prefix(TOKEN);
    let mut conn = pool.get().unwrap();
    let mut i = from;
    while i < to {
        let end = (i + 5000).min(to);
        let values: Vec<String> = (i..end).map(|n| format!("('u{n}', {CREDIT})")).collect();
        conn.query_drop(format!(
            "INSERT INTO users (username, credit) VALUES {}",
            values.join(",")
        ))
        .unwrap();
        // Every user's one key, as `user add` makes it.
        conn.query_drop(format!(
            "INSERT INTO api_keys (user_id, label, token_hash, prefix) \
             SELECT id, 'bench', '{hash}', '{prefix}' FROM users WHERE id NOT IN (SELECT user_id FROM api_keys)"
        ))
        .unwrap();
        i = end;
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl Server {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_server(url: &str) -> Server {
    start_server_with(url, &[])
}

fn start_server_with(url: &str, extra: &[(&str, &str)]) -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // BENCH_BIN runs another build (say, the previous commit's) for a
    // before/after comparison.
    let bin =
        std::env::var("BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_creditgate").to_string());
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("DATABASE_URL", url)
        .env("CREDITGATE_BIND", addr.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for var in ["CREDITGATE_THREADS", "CREDITGATE_DB_POOL"] {
        if let Ok(v) = std::env::var(format!("BENCH_{var}")) {
            cmd.env(var, v);
        }
    }
    cmd.envs(extra.iter().copied());
    let mut child = cmd.spawn().expect("start creditgate");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "creditgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id();
    Server { child, addr, pid }
}

/// One client's loop: `step` does one request and says whether it was a 2xx.
type Worker = Box<dyn FnMut() -> bool + Send>;

/// Runs `conns` workers for `warmup` then `run`, counting only `run`.
fn measure(
    warmup: Duration,
    run: Duration,
    conns: usize,
    pid: Option<u32>,
    make: impl Fn(usize) -> Worker,
) -> Stats {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(conns + 1));
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let mut work = make(i);
            let (measuring, stop, barrier) = (measuring.clone(), stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut s = Stats::default();
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = work();
                    if measuring.load(Ordering::Relaxed) {
                        s.latencies_us
                            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if ok {
                            s.ok += 1;
                        } else {
                            s.non2xx += 1;
                        }
                    }
                }
                s
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(warmup);
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = pid.map(|pid| {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    });
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(run);
    measuring.store(false, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut total = Stats {
        secs,
        ..Stats::default()
    };
    for h in handles {
        let s = h.join().unwrap();
        total.ok += s.ok;
        total.non2xx += s.non2xx;
        total.latencies_us.extend(s.latencies_us);
    }
    if let Some(s) = sampler {
        s.join().unwrap();
        total.peak_rss_kb = Some(peak.load(Ordering::Relaxed));
    }
    total.latencies_us.sort_unstable();
    total
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The database's own ceiling: creditgate's transaction, without HTTP.
fn ceiling_worker(url: &str, users: Users) -> Worker {
    let opts = mysql::Opts::from_url(url).unwrap();
    let mut conn = mysql::Conn::new(opts).unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64
        ^ (conn.connection_id() as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let hash = creditgate::auth::token::hash(TOKEN);
    Box::new(move || {
        let name = format!("u{}", users.pick(&mut rng));
        // The bank comes from creditgate's memory (`banks::Cache`): no
        // statement for it, on either side.
        let cost: i64 = 1;
        let mut tx = conn.start_transaction(mysql::TxOpts::default()).unwrap();
        // The very query creditgate's charge runs (account::lock): the
        // user's row, the key joined by the token's hash, the database's clock.
        let row: Option<mysql::Row> = tx
            .exec_first(
                creditgate::billing::account::ACCOUNT_FOR_UPDATE,
                (&hash, &name),
            )
            .unwrap();
        let row = row.expect("user exists");
        let id: u64 = row.get(0).unwrap();
        let key_id: u64 = row.get(15).unwrap();
        tx.exec_drop(
            creditgate::billing::account::TAKE,
            (cost, None::<i64>, false, id, cost),
        )
        .unwrap();
        tx.exec_drop(
            creditgate::billing::usage::RECORD,
            (id, key_id, &today, "banks_data", cost),
        )
        .unwrap();
        tx.commit().unwrap();
        true
    })
}

/// One keep-alive HTTP/1.1 connection sending paid requests.
fn http_worker(addr: SocketAddr, users: Users, path: &'static str) -> Worker {
    let mut stream = BufReader::new(TcpStream::connect(addr).unwrap());
    stream.get_ref().set_nodelay(true).unwrap();
    let mut rng =
        0x2545_F491_4F6C_DD1Du64 ^ (stream.get_ref().local_addr().unwrap().port() as u64) << 17;
    let mut line = String::new();
    Box::new(move || {
        let user = users.pick(&mut rng);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer u{user}:{TOKEN}\r\n\r\n"
        );
        stream.get_mut().write_all(req.as_bytes()).expect("send");
        read_answer(&mut stream, &mut line).0
    })
}

/// One answer on a keep-alive connection (Content-Length framed): whether
/// it was a 2xx, and its body. `line` is a buffer kept between calls.
fn read_answer(stream: &mut BufReader<TcpStream>, line: &mut String) -> (bool, Vec<u8>) {
    line.clear();
    stream.read_line(line).expect("status line");
    let ok = line.split(' ').nth(1).is_some_and(|s| s.starts_with('2'));
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    (ok, body)
}
