//! Credentials: the four accepted forms, the ambiguous case, and one 401 for
//! every way of not being let in.

use base64::Engine;

use crate::support::helpers::{spawn_app, spawn_app_with};

#[test]
fn all_four_credential_forms_are_accepted_and_charged() {
    // Arrange
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}"));
    let forms: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "/api/v1.0/banks_data/BOFA/".into(),
            vec![("Authorization", format!("Bearer alice:{token}"))],
        ),
        (
            "/api/v1.0/banks_data/BOFA/".into(),
            vec![("Authorization", format!("Basic {basic}"))],
        ),
        (
            "/api/v1.0/banks_data/BOFA/".into(),
            vec![("Authorization", format!("alice:{token}"))],
        ),
        (
            format!("/api/v1.0/banks_data/BOFA/?token=alice:{token}"),
            vec![],
        ),
    ];
    for (i, (path, headers)) in forms.iter().enumerate() {
        // Act
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = app.get(path, &h);
        // Assert
        assert_eq!(r.status, 200, "form {i}: {}", r.body);
        assert_eq!(r.json()["credit_remaining"], 10 - 1 - i as i64);
    }
    assert_eq!(app.db.credit("alice"), 6);
}

#[test]
fn a_token_containing_colons_is_split_at_the_first_colon() {
    let app = spawn_app();
    app.db
        .add_user_with("legacy", Some(5), None, Some("old:style:token"));
    let r = app.bank("legacy", "old:style:token", "bofa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.credit("legacy"), 4);
}

#[test]
fn credentials_in_two_places_are_ambiguous_and_not_charged() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    let header_and_query = app.get(
        &format!("/api/v1.0/banks_data/bofa/?token=alice:{token}"),
        &[("Authorization", &auth)],
    );
    let two_headers = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", &auth), ("Authorization", &auth)],
    );
    for r in [header_and_query, two_headers] {
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.error(), "ambiguous_credentials");
    }
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn unknown_user_wrong_token_and_disabled_user_get_the_same_401() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let other = app.db.add_user("bob", 10);
    app.db
        .exec("UPDATE users SET disabled = TRUE WHERE username = 'bob'");
    let answers = [
        app.bank("nobody", &token, "bofa"),
        app.bank("alice", "cg_wrong", "bofa"),
        app.bank("alice", &other, "bofa"),
        app.bank("bob", &other, "bofa"),
        app.get("/api/v1.0/banks_data/bofa/", &[]),
        app.get(
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", "Bearer alice")],
        ),
    ];
    for r in &answers {
        assert_eq!(r.status, 401);
        assert_eq!(r.body, answers[0].body);
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer realm=\"creditgate\"")
        );
    }
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(app.db.credit("bob"), 10);
}

#[test]
fn usernames_are_case_sensitive() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    assert_eq!(app.bank("Alice", &token, "bofa").status, 401);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
}

#[test]
fn query_tokens_can_be_turned_off() {
    let app = spawn_app_with(&[("CREDITGATE_QUERY_TOKEN", "off")]);
    let token = app.db.add_user("alice", 10);
    let r = app.get(
        &format!("/api/v1.0/banks_data/bofa/?token=alice:{token}"),
        &[],
    );
    assert_eq!(r.status, 401);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    assert_eq!(app.db.credit("alice"), 9);
}

#[test]
fn repeated_failures_from_one_address_are_throttled() {
    let app = spawn_app_with(&[("CREDITGATE_AUTH_FAILS_PER_MIN", "3")]);
    let token = app.db.add_user("alice", 10);
    for _ in 0..3 {
        assert_eq!(app.bank("alice", "cg_wrong", "bofa").status, 401);
    }
    let r = app.bank("alice", &token, "bofa");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error(), "too_many_failures");
    let wait: u64 = r
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    assert_eq!(app.db.credit("alice"), 10);
}
