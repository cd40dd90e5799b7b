//! The usage export (issue #22) against the real server and database: the
//! key each paid path writes into usage (bank route, gateway route,
//! `/v1/charge`, hold capture, a gateway refund) under concurrency from two
//! instances with the ledger invariant; the export's sums against
//! `usage_daily`; its CSV read back by a real RFC 4180 parser (Python's
//! `csv` module) with a key name holding a comma and quotes; who may call
//! it; the CLI; and a 300,000-row export through the real binary with its
//! peak RSS checked.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use creditgate::model::Username;
use creditgate::services::{self, Scopes};
use creditgate::users::keys::{self, NewKey};
use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::daemon::Daemon;
use crate::support::helpers::*;
use crate::support::upstream::Upstream;

/// A second key for `user`, labelled `label`: (key id, token).
fn add_key(db: &TestDb, user: &str, label: &str) -> (u64, String) {
    let new = NewKey {
        label: Some(label.to_string()),
        expires_at: None,
    };
    let (key, token) =
        keys::create(&db.pool, &Username::parse(user).unwrap(), &new, None).expect("add key");
    (key.id, token)
}

fn service(db: &TestDb, name: &str, scopes: &str) -> String {
    services::add(&db.pool, name, Scopes::parse(scopes).unwrap())
        .expect("add service")
        .1
}

/// A GET with a bearer token: (status, headers, body with any chunked
/// framing removed).
fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&out[at..])
    } else {
        out[at..].to_vec()
    };
    (status, head, String::from_utf8(body).unwrap())
}

/// A chunked body's data; panics on a body cut short (no last chunk).
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16)
            .expect("chunk size");
        b = &b[eol + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The CSV's records, as Python's `csv` module (RFC 4180 dialect, strict)
/// reads them.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import csv, io, json, sys\n\
             data = sys.stdin.buffer.read().decode('utf-8')\n\
             assert data == '' or data.endswith('\\r\\n'), 'records end in CRLF'\n\
             rows = list(csv.reader(io.StringIO(data, newline=''), strict=True))\n\
             print(json.dumps(rows))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python's csv refused the export");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (calls, credits) per (user, key id or 0, endpoint) in `usage_daily`.
type Books = BTreeMap<(String, u64, String), (i64, i64)>;

fn books(db: &TestDb) -> Books {
    let rows: Vec<(String, u64, String, i64, i64)> = db
        .conn()
        .query(
            "SELECT u.username, d.key_id, d.endpoint, CAST(SUM(d.calls) AS SIGNED), \
             CAST(SUM(d.credits) AS SIGNED) FROM usage_daily d JOIN users u ON u.id = d.user_id \
             GROUP BY u.username, d.key_id, d.endpoint",
        )
        .unwrap();
    rows.into_iter()
        .map(|(u, k, e, c, cr)| ((u, k, e), (c, cr)))
        .collect()
}

/// The same sums from an export's CSV records (header first).
fn books_of_csv(records: &[Vec<String>]) -> Books {
    let mut b = Books::new();
    for r in &records[1..] {
        let key = r[1].parse().unwrap_or(0);
        let sums = b.entry((r[0].clone(), key, r[4].clone())).or_default();
        sums.0 += r[5].parse::<i64>().unwrap();
        sums.1 += r[6].parse::<i64>().unwrap();
    }
    b
}

fn export_path(from: &str, to: &str, format: &str) -> String {
    format!("/admin/v1/usage/export?from={from}&to={to}&format={format}")
}

#[test]
fn every_paid_path_counts_the_key_that_authenticated_it_under_concurrency() {
    let db = TestDb::new();
    let first = db.add_user("alice", 100_000);
    let first_id = db.scalar("SELECT id FROM api_keys") as u64;
    let (second_id, second) = add_key(&db, "alice", "batch");
    let upstream = Upstream::start();
    let a = TestServer::start(&db.url, &[]);
    a.add_route(
        "/up",
        &upstream.url(),
        json!({ "strip_prefix": true, "cost": 2 }),
    );
    // Started after the route exists: both instances know it at once.
    let b = TestServer::start(&db.url, &[]);
    let svc = service(&db, "billing", "charge");
    let addrs = [a.addr, b.addr];
    const N: usize = 8;
    let (first2, second2, svc2) = (first.clone(), second.clone(), svc.clone());
    in_parallel(N, move |i| {
        let addr = addrs[i % 2];
        let post = |path: &str, body: Value| {
            let auth = format!("Bearer {svc2}");
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ];
            request(addr, "POST", path, &headers, Some(&body.to_string()))
        };
        for _ in 0..5 {
            // The bank route with the first key (cost 1).
            let r = request(
                addr,
                "GET",
                "/api/v1.0/banks_data/BOFA/",
                &[("Authorization", &format!("Bearer alice:{first2}"))],
                None,
            );
            assert_eq!(r.status, 200, "{}", r.body);
            // A gateway route with the second key (cost 2), billed...
            let auth = format!("Bearer alice:{second2}");
            let r = request(addr, "GET", "/up/echo", &[("Authorization", &auth)], None);
            assert_eq!(r.status, 200, "{}", r.body);
            // ...and refunded (a 500 is not billable under charge_on 2xx).
            let r = request(
                addr,
                "GET",
                "/up/status/500",
                &[("Authorization", &auth)],
                None,
            );
            assert_eq!(r.status, 500, "{}", r.body);
            // /v1/charge with the end user's credentials (first key)...
            let creds = format!("alice:{first2}");
            let r = post(
                "/v1/charge",
                json!({"credentials": creds, "cost": 3, "endpoint": "llm"}),
            );
            assert_eq!(r.json()["code"], "VALID", "{}", r.body);
            // ...and for a user the service names (no key).
            let r = post(
                "/v1/charge",
                json!({"user": "alice", "cost": 4, "endpoint": "llm"}),
            );
            assert_eq!(r.json()["code"], "VALID", "{}", r.body);
            // A hold placed with the second key, captured at 5 of 9.
            let creds = format!("alice:{second2}");
            let h = post(
                "/v1/holds",
                json!({"credentials": creds, "amount": 9, "endpoint": "job"}),
            );
            assert_eq!(h.status, 201, "{}", h.body);
            let id = h.json()["hold"]["id"].clone();
            let c = post(&format!("/v1/holds/{id}/capture"), json!({"amount": 5}));
            assert_eq!(c.status, 200, "{}", c.body);
        }
    });
    let n = (N * 5) as i64;
    let want: Books = [
        (("alice".into(), first_id, "banks_data".into()), (n, n)),
        (
            ("alice".into(), second_id, "route:/up".into()),
            (2 * n, 2 * n),
        ),
        (("alice".into(), first_id, "llm".into()), (n, 3 * n)),
        (("alice".into(), 0, "llm".into()), (n, 4 * n)),
        (("alice".into(), second_id, "job".into()), (n, 5 * n)),
    ]
    .into_iter()
    .collect();
    assert_eq!(books(&db), want);
    assert_eq!(db.credit("alice"), 100_000 - 15 * n);
    assert_eq!(db.scalar("SELECT held FROM users"), 0);
    assert_eq!(db.ledger_mismatches(), vec![]);
    // The export says the same.
    let (status, _, csv) = get(
        a.addr,
        &export_path("2000-01-01", "2999-12-31", "csv"),
        Some(&a.admin_token),
    );
    assert_eq!(status, 200);
    assert_eq!(books_of_csv(&parse_csv(&csv)), want);
}

/// alice with a key whose name holds a comma and quotes and the key she was
/// created with; bob without keys in his rows (usage from before keys were
/// counted); rows on three days, one outside the exported range.
fn seeded() -> (TestApp, u64) {
    let app = spawn_app();
    let alice = app.db.add_user("alice", 100);
    app.db.add_user("bob", 100);
    let (odd_id, odd) = add_key(&app.db, "alice", "ops, \"night\" batch");
    for token in [&alice, &odd, &odd] {
        assert_eq!(app.bank("alice", token, "BOFA").status, 200);
    }
    app.db.exec(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) \
         SELECT id, '2026-01-02', 'old,\"endpoint\"', 7, 70 FROM users WHERE username = 'bob' \
         UNION ALL SELECT id, '2026-01-03', 'banks_data', 1, 10 FROM users WHERE username = 'bob' \
         UNION ALL SELECT id, '2025-12-31', 'banks_data', 5, 50 FROM users WHERE username = 'bob'",
    );
    (app, odd_id)
}

#[test]
fn the_csv_export_is_rfc_4180_and_sums_to_usage_daily_per_user() {
    let (app, odd_id) = seeded();
    let today = chrono::Utc::now().date_naive().to_string();
    let (status, head, csv) = get(
        app.addr,
        &export_path("2026-01-01", &today, "csv"),
        Some(&app.admin_token),
    );
    assert_eq!(status, 200, "{csv}");
    assert!(head.contains("Content-Type: text/csv"), "{head}");
    let records = parse_csv(&csv);
    assert_eq!(
        records[0],
        ["username", "key_id", "key_name", "day", "endpoint", "calls", "credits"]
    );
    let odd_row = records
        .iter()
        .find(|r| r[1] == odd_id.to_string())
        .expect("the odd key's row");
    assert_eq!(odd_row[2], "ops, \"night\" batch");
    assert_eq!(odd_row[4], "banks_data");
    assert_eq!((odd_row[5].as_str(), odd_row[6].as_str()), ("2", "2"));
    let old = records
        .iter()
        .find(|r| r[4] == "old,\"endpoint\"")
        .expect("the old row");
    assert_eq!(
        (old[0].as_str(), old[1].as_str(), old[2].as_str()),
        ("bob", "", "")
    );
    // Per user, the export's credits are usage_daily's in the range.
    let mut per_user: BTreeMap<String, i64> = BTreeMap::new();
    for r in &records[1..] {
        *per_user.entry(r[0].clone()).or_default() += r[6].parse::<i64>().unwrap();
    }
    let want: Vec<(String, i64)> = app
        .db
        .conn()
        .exec(
            "SELECT u.username, CAST(SUM(d.credits) AS SIGNED) FROM usage_daily d \
             JOIN users u ON u.id = d.user_id WHERE d.day BETWEEN '2026-01-01' AND ? \
             GROUP BY u.username ORDER BY u.username",
            (&today,),
        )
        .unwrap();
    assert_eq!(per_user.into_iter().collect::<Vec<_>>(), want);
    assert_eq!(want, [("alice".to_string(), 3), ("bob".to_string(), 80)]);
    let in_range = app
        .db
        .scalar("SELECT COUNT(*) FROM usage_daily WHERE day >= '2026-01-01'");
    assert_eq!(records.len() as i64 - 1, in_range);
}

#[test]
fn the_json_export_is_one_array_of_the_same_rows() {
    let (app, odd_id) = seeded();
    let (status, head, body) = get(
        app.addr,
        &export_path("2025-01-01", "2999-12-31", "json"),
        Some(&app.admin_token),
    );
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        rows.len() as i64,
        app.db.scalar("SELECT COUNT(*) FROM usage_daily")
    );
    let odd = rows.iter().find(|r| r["key_id"] == json!(odd_id)).unwrap();
    assert_eq!(odd["key_name"], "ops, \"night\" batch");
    let old = rows.iter().find(|r| r["day"] == "2025-12-31").unwrap();
    assert_eq!(
        *old,
        json!({"username": "bob", "key_id": null, "key_name": null, "day": "2025-12-31",
               "endpoint": "banks_data", "calls": 5, "credits": 50})
    );
    // An empty range is an empty array.
    let (_, _, empty) = get(
        app.addr,
        &export_path("2001-01-01", "2001-01-31", "json"),
        Some(&app.admin_token),
    );
    assert_eq!(serde_json::from_str::<Value>(&empty).unwrap(), json!([]));
}

#[test]
fn the_export_takes_the_admin_or_a_read_service_token_and_refuses_bad_input() {
    let (app, _) = seeded();
    let reader = service(&app.db, "invoicing", "read");
    let charger = service(&app.db, "billing", "charge");
    let path = export_path("2026-01-01", "2026-01-31", "csv");
    let (status, _, by_reader) = get(app.addr, &path, Some(&reader));
    assert_eq!(status, 200, "{by_reader}");
    let (_, _, by_admin) = get(app.addr, &path, Some(&app.admin_token));
    assert_eq!(by_reader, by_admin);
    let refused = |bearer: Option<&str>, path: &str| {
        let (status, _, body) = get(app.addr, path, bearer);
        let error = serde_json::from_str::<Value>(&body).unwrap()["error"].clone();
        (status, error.as_str().unwrap_or_default().to_string())
    };
    assert_eq!(refused(Some(&charger), &path), (403, "scope_denied".into()));
    assert_eq!(refused(None, &path), (401, "unauthorized".into()));
    assert_eq!(
        refused(Some("not-the-admin"), &path),
        (401, "unauthorized".into())
    );
    assert_eq!(
        refused(Some("cgs_wrong"), &path),
        (401, "unauthorized".into())
    );
    let admin = Some(app.admin_token.as_str());
    for bad in [
        "/admin/v1/usage/export?to=2026-01-31",
        "/admin/v1/usage/export?from=2026-01-01",
        "/admin/v1/usage/export?from=2026-1-01&to=2026-01-31",
        "/admin/v1/usage/export?from=2026-02-30&to=2026-03-01",
        "/admin/v1/usage/export?from=2026-02-01&to=2026-01-31",
    ] {
        assert_eq!(refused(admin, bad), (400, "invalid_range".into()), "{bad}");
    }
    let xml = export_path("2026-01-01", "2026-01-31", "xml");
    assert_eq!(refused(admin, &xml), (400, "invalid_format".into()));
    let posted = request(
        app.addr,
        "POST",
        &path,
        &[("Authorization", &format!("Bearer {}", app.admin_token))],
        Some("{}"),
    );
    assert_eq!(posted.status, 405, "{}", posted.body);
}

#[test]
fn the_cli_exports_what_the_api_does_and_names_bad_flags() {
    let (app, _) = seeded();
    let path = export_path("2026-01-01", "2999-12-31", "csv");
    let (_, _, api) = get(app.addr, &path, Some(&app.admin_token));
    let cli = creditgate(
        &app.db.url,
        &[
            "usage",
            "export",
            "--from",
            "2026-01-01",
            "--to",
            "2999-12-31",
        ],
    );
    assert_eq!(cli.ok().stdout, api);
    let json = creditgate(
        &app.db.url,
        &[
            "usage",
            "export",
            "--from",
            "2026-01-01",
            "--to",
            "2999-12-31",
            "--format",
            "json",
        ],
    );
    let rows: Vec<Value> = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(rows.len(), parse_csv(&api).len() - 1);
    for (args, names) in [
        (
            vec!["--from", "2026-02-01", "--to", "2026-01-31"],
            "--from/--to",
        ),
        (vec!["--from", "2026-13-01", "--to", "2026-01-31"], "--from"),
        (
            vec![
                "--from",
                "2026-01-01",
                "--to",
                "2026-01-31",
                "--format",
                "xml",
            ],
            "--format",
        ),
        (vec!["--from", "2026-01-01"], "--to"),
    ] {
        let out = creditgate(&app.db.url, &[&["usage", "export"], &args[..]].concat());
        assert!(out.failed().contains(names), "{args:?}: {out:?}");
    }
}

/// Resident memory of a process, in bytes: (now, peak).
fn rss(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Reads a whole answer, holding none of it: (bytes, ended with the last
/// chunk).
fn count_export(addr: SocketAddr, path: &str, bearer: &str) -> (u64, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut tail = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n as u64;
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(5);
                tail.drain(..keep);
            }
        }
    }
    (total, tail == b"0\r\n\r\n")
}

#[test]
fn three_hundred_thousand_rows_stream_out_with_little_memory() {
    let db = TestDb::new();
    let admin = "export-admin-token-0123456789";
    // 100 users × 30 days × 100 endpoints, in two statements.
    db.exec(
        "INSERT INTO users (username) \
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100) \
         SELECT CONCAT('user', n) FROM s",
    );
    db.exec(
        "INSERT INTO usage_daily (user_id, key_id, day, endpoint, calls, credits) \
         WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 999) \
         SELECT u.id, 0, '2026-11-01' + INTERVAL (a.n MOD 30) DAY, \
                CONCAT('endpoint-', a.n DIV 30, '-', b.n), 1, 3 \
         FROM s a JOIN s b ON b.n < 3 JOIN users u",
    );
    let rows = db.scalar("SELECT COUNT(*) FROM usage_daily");
    assert_eq!(rows, 300_000);
    let daemon = Daemon::start(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("CREDITGATE_BIND", "127.0.0.1:0"),
            ("CREDITGATE_ADMIN_TOKEN", admin),
        ],
    );
    let addr = daemon.addr();
    // Warm up the path (its thread, the statement, the pool's connection)
    // with a small export, then measure the big one.
    let (status, _, small) = get(
        addr,
        &export_path("2026-11-01", "2026-11-01", "csv"),
        Some(admin),
    );
    assert_eq!(status, 200);
    let first_day = db.scalar("SELECT COUNT(*) FROM usage_daily WHERE day = '2026-11-01'");
    assert_eq!(parse_csv(&small).len() as i64, first_day + 1);
    let (_, before) = rss(daemon.pid());
    let path = export_path("2026-11-01", "2026-11-30", "csv");
    let (bytes, whole) = count_export(addr, &path, admin);
    let (_, after) = rss(daemon.pid());
    assert!(whole, "the answer ended without its last chunk");
    assert!(bytes > 300_000 * 30, "only {bytes} bytes");
    let grown = after.saturating_sub(before);
    eprintln!(
        "300,000-row export: {bytes} bytes, peak RSS {} MB → {} MB (+{:.1} MB)",
        before / 1_000_000,
        after / 1_000_000,
        grown as f64 / 1e6
    );
    assert!(grown < 50_000_000, "peak RSS grew by {grown} bytes");
    // And all of it arrived: the same export through the CLI has every row.
    let cli = creditgate(
        &db.url,
        &[
            "usage",
            "export",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
        ],
    );
    let lines = cli.ok().stdout.matches("\r\n").count();
    assert_eq!(lines, 300_001);
}

#[test]
fn an_export_whose_query_fails_at_the_start_is_a_503_not_a_broken_200() {
    let (app, _) = seeded();
    app.db.exec("RENAME TABLE usage_daily TO usage_daily_gone");
    let path = export_path("2026-01-01", "2026-01-31", "csv");
    let (status, _, body) = get(app.addr, &path, Some(&app.admin_token));
    app.db.exec("RENAME TABLE usage_daily_gone TO usage_daily");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "unavailable"
    );
    let (status, _, _) = get(app.addr, &path, Some(&app.admin_token));
    assert_eq!(status, 200);
}

#[test]
fn a_coalesced_batch_counts_each_request_under_its_own_key() {
    let app = spawn_app_with(&[("CREDITGATE_COALESCE", "on")]);
    let first = app.db.add_user("alice", 1_000);
    let first_id = app.db.scalar("SELECT id FROM api_keys") as u64;
    let (second_id, second) = add_key(&app.db, "alice", "second");
    let addr = app.addr;
    // 16 clients at once on one user: the batches mix both keys.
    in_parallel(16, move |i| {
        let token = if i % 2 == 0 { &first } else { &second };
        for _ in 0..10 {
            let r = request(
                addr,
                "GET",
                "/api/v1.0/banks_data/BOFA/",
                &[("Authorization", &format!("Bearer alice:{token}"))],
                None,
            );
            assert_eq!(r.status, 200, "{}", r.body);
        }
    });
    let want: Books = [
        (("alice".into(), first_id, "banks_data".into()), (80, 80)),
        (("alice".into(), second_id, "banks_data".into()), (80, 80)),
    ]
    .into_iter()
    .collect();
    assert_eq!(books(&app.db), want);
    assert_eq!(app.db.credit("alice"), 1_000 - 160);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
    let metric = |name: &str| -> i64 {
        let text = app.get("/metrics", &[]).body;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text}"))
    };
    let batches = metric("creditgate_coalesced_batches_total");
    assert!(batches < 160, "nothing was coalesced: {batches} batches");
}

/// Opens an export and reads only its head, leaving the rest unread: the
/// producer blocks (socket buffers full) holding its connection and place.
fn open_unread(addr: SocketAddr, path: &str, bearer: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..], b"HTTP/1.1 200", "the export did not start");
    s
}

#[test]
fn exports_left_unread_cannot_take_the_pool_from_paid_requests() {
    let app = spawn_app();
    let alice = app.db.add_user("alice", 100);
    // ~34 MB of CSV: far more than the socket buffers between a client
    // that stops reading and the server, so the export stays running.
    app.db.exec(
        "INSERT INTO usage_daily (user_id, key_id, day, endpoint, calls, credits) \
         WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 499) \
         SELECT u.id, 0, '2026-11-01' + INTERVAL (a.n MOD 30) DAY, \
                CONCAT(REPEAT('e', 120), '-', a.n, '-', b.n), 1, 1 \
         FROM s a JOIN s b JOIN users u WHERE a.n * 500 + b.n < 200000",
    );
    let path = export_path("2026-11-01", "2026-11-30", "csv");
    let held: Vec<TcpStream> = (0..export_limit())
        .map(|_| open_unread(app.addr, &path, &app.admin_token))
        .collect();
    // One more is refused at once, and says when to come back.
    let (status, head, body) = get(app.addr, &path, Some(&app.admin_token));
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("Retry-After: 1"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "exports_busy", "{body}");
    // Paid requests are answered while the exports hang.
    for _ in 0..20 {
        assert_eq!(app.bank("alice", &alice, "BOFA").status, 200);
    }
    // A client that goes away gives its place back.
    drop(held);
    let free = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        get(
            app.addr,
            &export_path("2026-11-01", "2026-11-01", "csv"),
            Some(&app.admin_token),
        )
        .0 == 200
    });
    assert!(free, "the places of closed exports were not given back");
}

fn export_limit() -> usize {
    creditgate::billing::export::MAX_RUNNING
}
