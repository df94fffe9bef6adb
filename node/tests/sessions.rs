//! Accounts and tokens through the REST edge of real `mart` processes:
//! refresh tokens with rotation and reuse detection, logout, revocation on
//! password change, role change and delete (on every node within a second),
//! RFC 6749 token errors, throttled logins and a password policy.

mod support;

use std::time::Duration;

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, Node, NodeSpec, free_port, problem};

const PASSWORD: &str = "tangerine-57-orbit";

/// `token` works on `api`'s node, or not, within a second.
async fn settles(api: &Api, token: &str, works: bool) {
    let what = if works {
        "the token still fails"
    } else {
        "the token still works"
    };
    support::profile_settles(
        api,
        token,
        |status| (status == StatusCode::OK) == works,
        what,
    )
    .await;
}

async fn token_form(api: &Api, form: &[(&str, &str)]) -> reqwest::Response {
    api.client
        .post(api.url("/token"))
        .form(form)
        .send()
        .await
        .expect("token")
}

async fn login(api: &Api, username: &str, password: &str) -> Value {
    let form = [("username", username), ("password", password)];
    let response = token_form(api, &form).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    response.json().await.expect("grant")
}

async fn refresh(api: &Api, refresh_token: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    token_form(api, &form).await
}

fn field<'a>(grant: &'a Value, name: &str) -> &'a str {
    grant[name].as_str().expect(name)
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_its_session() {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);
    api.customer("rita").await;

    let first = login(&api, "rita", PASSWORD).await;
    let other_session = login(&api, "rita", PASSWORD).await;
    let rotated = refresh(&api, field(&first, "refresh_token")).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("grant");
    assert_ne!(rotated["refresh_token"], first["refresh_token"]);
    settles(&api, field(&rotated, "access_token"), true).await;

    // The rotated-out token comes back: someone copied it. The session ends,
    // the newest pair with it; the other session lives on.
    let reused = refresh(&api, field(&first, "refresh_token")).await;
    let body = problem(reused, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["error"], "invalid_grant");
    problem(
        refresh(&api, field(&rotated, "refresh_token")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    settles(&api, field(&rotated, "access_token"), false).await;
    settles(&api, field(&first, "access_token"), false).await;
    settles(&api, field(&other_session, "access_token"), true).await;

    // Logout ends the other session too.
    let out = api.client.post(api.url("/logout"));
    let out = out
        .form(&[("refresh_token", field(&other_session, "refresh_token"))])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    settles(&api, field(&other_session, "access_token"), false).await;
    problem(
        refresh(&api, field(&other_session, "refresh_token")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // RFC 6749 errors from the token endpoint, never cached.
    let wrong = token_form(&api, &[("username", "rita"), ("password", "not it at all")]).await;
    assert_eq!(
        wrong.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    assert_eq!(
        problem(wrong, StatusCode::UNAUTHORIZED).await["error"],
        "invalid_grant"
    );
    let odd = token_form(&api, &[("grant_type", "client_credentials")]).await;
    let odd = problem(odd, StatusCode::BAD_REQUEST).await;
    assert_eq!(odd["error"], "unsupported_grant_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_node_within_a_second() {
    let db = TestDb::empty().await;
    let ports = [free_port(), free_port()];
    let a = Node::start(NodeSpec::member(&db.url, &ports, 0, "all")).await;
    let b = Node::start(NodeSpec::member(&db.url, &ports, 1, "none")).await;
    b.wait_reachable("users", Duration::from_secs(30)).await;
    let (on_a, on_b) = (Api::new(&a.http), Api::new(&b.http));
    let admin = on_a.admin_token().await;

    // A password change on A: the old token fails on B.
    let (_, old) = on_a.customer("paul").await;
    settles(&on_b, &old, true).await;
    let change = json!({"current_password": PASSWORD, "new_password": "kept-secret-77"});
    let wrong = json!({"current_password": "not my password", "new_password": "kept-secret-77"});
    let body = problem(
        on_a.post_json("/user_profile/password", Some(&old), wrong)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["errors"]["current_password"].is_array(), "{body}");
    let changed = on_a
        .post_json("/user_profile/password", Some(&old), change)
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    settles(&on_b, &old, false).await;
    let new = on_b.token("paul", "kept-secret-77").await;
    settles(&on_b, &new, true).await;

    // An admin reset on B: the user's tokens fail on A.
    let paul = on_a.get_json("/user_profile", Some(&new)).await;
    let reset = format!("/users/{}/password", field(&paul, "id"));
    let weak = on_b.post_json(&reset, Some(&admin), json!({"new_password": "paul1234"}));
    problem(weak.await, StatusCode::UNPROCESSABLE_ENTITY).await;
    let body = json!({"new_password": "fresh-start-2026"});
    let done = on_b.post_json(&reset, Some(&admin), body).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    settles(&on_a, &new, false).await;

    // A demoted admin keeps no admin rights; a deleted user no access.
    let (helper, helper_token) = on_a.customer("helper").await;
    let helper_path = format!("/users/{}", field(&helper, "id"));
    // An admin setting a password here is held to the same rule as a reset:
    // not built from the account's own names.
    let own_name = on_a
        .patch(
            &helper_path,
            &admin,
            json!({"password": "helper@example.test"}),
        )
        .await;
    let refused = problem(own_name, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(refused["errors"]["password"].is_array(), "{refused}");
    let promote = on_a
        .patch(&helper_path, &admin, json!({"role": "admin"}))
        .await;
    assert_eq!(promote.status(), StatusCode::OK);
    let as_admin = on_a.token("helper", PASSWORD).await;
    assert_eq!(
        on_b.get("/users", Some(&as_admin)).await.status(),
        StatusCode::OK
    );
    let demote = on_a
        .patch(&helper_path, &admin, json!({"role": "customer"}))
        .await;
    assert_eq!(demote.status(), StatusCode::OK);
    settles(&on_b, &as_admin, false).await;
    settles(&on_b, &helper_token, false).await;
    let as_customer = on_b.token("helper", PASSWORD).await;
    problem(
        on_b.get("/users", Some(&as_customer)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        on_a.delete(&helper_path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    settles(&on_b, &as_customer, false).await;
}

#[tokio::test]
async fn guessing_is_throttled_and_guessable_passwords_are_refused() {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);

    for (username, password) in [
        ("sam", "12345678"),
        ("sammy", "sammy2024"),
        ("samuel", "password"),
    ] {
        let email = format!("{username}@example.test");
        let body = problem(
            api.register(username, &email, password).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(body["errors"]["password"].is_array(), "{password}: {body}");
    }
    api.customer("target").await;

    // Wrong passwords: a burst is answered, then 429 with Retry-After.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..20 {
        let response = api.login("target", &format!("guess number {i}")).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get("retry-after").cloned();
        }
        statuses.push(response.status());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The burst is 10 attempts at an account; signing up took one.
    assert!(refused >= 10, "{statuses:?}");
    assert!(
        statuses[..9].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let seconds: u64 = retry_after
        .and_then(|v| v.to_str().ok().and_then(|s| s.parse().ok()))
        .expect("Retry-After");
    assert!((1..=7).contains(&seconds), "{seconds}");
    // Even the right password waits its turn: the guesser learns nothing.
    let right = api.login("target", PASSWORD).await;
    problem(right, StatusCode::TOO_MANY_REQUESTS).await;
    // Another account is not locked by it.
    api.customer("bystander").await;
}

#[tokio::test]
async fn the_configured_admin_exists_even_when_only_errors_are_logged() {
    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env.push(("RUST_LOG".into(), "error".into()));
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    assert_eq!(
        api.get("/users", Some(&admin)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn eddsa_tokens_verify_with_the_published_keys_alone() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
    let db = TestDb::empty().await;
    let mut spec = NodeSpec::single(&db.url);
    spec.extra_env
        .push(("MART_JWT_ALGORITHM".into(), "eddsa".into()));
    let node = Node::start(spec).await;
    let api = Api::new(&node.http);
    let (user, token) = api.customer("vera").await;

    let jwks: JwkSet = api
        .get_json("/.well-known/jwks.json", None)
        .await
        .as_object()
        .map_or_else(
            || panic!("a JWKS object"),
            |o| serde_json::from_value(Value::Object(o.clone())).expect("JWKS"),
        );
    assert_eq!(jwks.keys.len(), 1);
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = jwks
        .find(header.kid.as_deref().expect("kid"))
        .expect("the signing key");
    let key = DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["mart"]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).expect("verifies");
    assert_eq!(claims.claims["sub"], user["id"]);
    settles(&api, &token, true).await;
}
