//! The user service through the REST edge of a real `mart` process: the seed's
//! paths, fixed.

mod support;

use mart_schema::db::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Api, Node, NodeSpec, problem};

async fn single_node() -> (TestDb, Node, Api) {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);
    (db, node, api)
}

#[tokio::test]
async fn a_new_user_registers_logs_in_and_reads_their_profile() {
    let (_db, _node, api) = single_node().await;

    let response = api
        .register("alice", "Alice@Example.test", "tangerine-57-orbit")
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.expect("json");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["role"], "customer");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    // OAuth2 password form with the username, and JSON with the email.
    let token = api.token("alice", "tangerine-57-orbit").await;
    let json_login = api
        .post_json(
            "/token",
            None,
            json!({"username": "alice@example.test", "password": "tangerine-57-orbit"}),
        )
        .await;
    assert_eq!(json_login.status(), StatusCode::OK);
    let grant: Value = json_login.json().await.expect("grant");
    assert_eq!(grant["token_type"], "bearer");
    assert!(grant["expires_in"].as_u64().is_some_and(|s| s > 0));

    let profile: Value = api.get_json("/user_profile", Some(&token)).await;
    assert_eq!(profile, user);

    // The seed read registration from the query string; a form body works here.
    let form = api
        .client
        .post(api.url("/register"))
        .form(&[
            ("username", "bob"),
            ("email", "bob@example.test"),
            ("password", "tangerine-57-orbit"),
        ])
        .send()
        .await
        .expect("form register");
    assert_eq!(form.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bad_registrations_get_422_naming_each_field_and_duplicates_409() {
    let (db, _node, api) = single_node().await;
    let body = problem(
        api.register("al", "not-an-email", "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    for field in ["username", "email", "password"] {
        assert!(body["errors"][field].is_array(), "{field} named in {body}");
    }
    let missing = api
        .post_json(
            "/register",
            None,
            json!({"username": "carol", "password": "tangerine-57-orbit"}),
        )
        .await;
    let body = problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["errors"]["email"].is_array(), "{body}");
    let wrong_type = api
        .post_json(
            "/register",
            None,
            json!({"username": 5, "email": "c@example.test", "password": "tangerine-57-orbit"}),
        )
        .await;
    let body = problem(wrong_type, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["errors"]["username"].is_array(), "{body}");
    let broken = api
        .client
        .post(api.url("/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    problem(broken, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        api.register("dave", "dave@example.test", "tangerine-57-orbit")
            .await
            .status(),
        StatusCode::CREATED
    );
    let body = problem(
        api.register("DAVE", "other@example.test", "tangerine-57-orbit")
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(body["errors"]["username"].is_array());
    let body = problem(
        api.register("dave2", "DAVE@EXAMPLE.TEST", "tangerine-57-orbit")
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(body["errors"]["email"].is_array());

    // Nothing half-written: exactly one dave and one registration event.
    let client = db.pool.get().await.expect("client");
    let users: i64 = client
        .query_one("select count(*) from users.users", &[])
        .await
        .expect("count")
        .get(0);
    let events: i64 = client
        .query_one(
            "select count(*) from users.outbox where event_type = 'user.registered'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!((users, events), (2, 2), "the admin and dave");
}

#[tokio::test]
async fn concurrent_registrations_of_one_name_let_exactly_one_win() {
    let (_db, _node, api) = single_node().await;
    let attempts = (0..8).map(|i| {
        let api = api.clone();
        async move {
            api.register(
                "racer",
                &format!("racer{i}@example.test"),
                "tangerine-57-orbit",
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT)
    );
}

#[tokio::test]
async fn wrong_passwords_and_bad_tokens_get_401_with_a_bearer_challenge() {
    let (_db, _node, api) = single_node().await;
    let (_, token) = api.customer("erin").await;
    let response = api.login("erin", "wrong password").await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    problem(response, StatusCode::UNAUTHORIZED).await;
    problem(
        api.login("nobody", "tangerine-57-orbit").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    for bad in [
        None,
        Some("garbage"),
        Some(tampered.as_str()),
        Some(unsigned.as_str()),
    ] {
        let response = api.get("/user_profile", bad).await;
        assert!(response.headers().contains_key("www-authenticate"));
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn admins_manage_users_and_customers_manage_only_themselves() {
    let (_db, _node, api) = single_node().await;
    let admin = api.admin_token().await;
    let (frank, frank_token) = api.customer("frank").await;
    let (grace, grace_token) = api.customer("grace").await;
    let frank_path = format!("/users/{}", frank["id"].as_str().expect("id"));
    let grace_path = format!("/users/{}", grace["id"].as_str().expect("id"));

    // Listing: admin only, paginated, both path spellings.
    problem(
        api.get("/users/", Some(&frank_token)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let first: Value = api.get_json("/users?limit=2", Some(&admin)).await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2));
    let cursor = first["next_cursor"].as_str().expect("more pages");
    let second: Value = api
        .get_json(&format!("/users/?limit=2&cursor={cursor}"), Some(&admin))
        .await;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
    assert!(second["next_cursor"].is_null());
    problem(
        api.get("/users?limit=101", Some(&admin)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        api.get("/users?cursor=nonsense", Some(&admin)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Reading: self or admin; someone else's account looks absent.
    assert_eq!(
        api.get(&frank_path, Some(&frank_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        api.get(&frank_path, Some(&admin)).await.status(),
        StatusCode::OK
    );
    problem(
        api.get(&grace_path, Some(&frank_token)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        api.get("/users/not-a-uuid", Some(&admin)).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Updating: own email; a password only giving the current one (a
    // stolen token must not take the account); only an admin changes roles.
    let updated: Value = api
        .patch(
            &frank_path,
            &frank_token,
            json!({"email": "frank@new.example.test"}),
        )
        .await
        .json()
        .await
        .expect("updated");
    assert_eq!(updated["email"], "frank@new.example.test");
    let body = problem(
        api.patch(
            &frank_path,
            &frank_token,
            json!({"password": "fresh-start-2026"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["errors"]["password"].is_array());
    let change =
        json!({"current_password": "tangerine-57-orbit", "new_password": "fresh-start-2026"});
    let changed = api
        .post_json("/user_profile/password", Some(&frank_token), change)
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    // The change revokes the tokens issued before it.
    refused_soon(&api, &frank_token).await;
    let frank_token = api.token("frank", "fresh-start-2026").await;
    problem(
        api.patch(&frank_path, &frank_token, json!({"role": "admin"}))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let body = problem(
        api.patch(&frank_path, &frank_token, json!({"email": "nope"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(body["errors"]["email"].is_array());
    let promoted: Value = api
        .patch(&grace_path, &admin, json!({"role": "admin"}))
        .await
        .json()
        .await
        .expect("promoted");
    assert_eq!(promoted["role"], "admin");
    // A token names its role: grace's old one is revoked.
    refused_soon(&api, &grace_token).await;
    let grace_token = api.token("grace", "tangerine-57-orbit").await;

    // Deleting: admin only; twice is 404; the deleted user's token stops working.
    problem(
        api.delete(&grace_path, &frank_token).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        api.delete(&frank_path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    problem(api.delete(&frank_path, &admin).await, StatusCode::NOT_FOUND).await;
    problem(
        api.get("/user_profile", Some(&frank_token)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        api.get("/user_profile", Some(&grace_token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_edge_answers_every_error_as_a_problem_and_tags_every_request() {
    let (_db, _node, api) = single_node().await;
    problem(api.get("/no/such/path", None).await, StatusCode::NOT_FOUND).await;
    let response = api
        .client
        .put(api.url("/register"))
        .send()
        .await
        .expect("put");
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    let big = "x".repeat(2 * 1024 * 1024);
    // Its own connection: the server closes it rather than read the rest.
    let response = reqwest::Client::new()
        .post(api.url("/register"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("big");
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let echoed = api
        .client
        .get(api.url("/health/live"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("live");
    assert_eq!(
        echoed.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"trace-me-42"[..])
    );
    let generated = api.get("/health/live", None).await;
    assert!(
        generated
            .headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty())
    );

    let ready: Value = api.get_json("/health/ready", None).await;
    assert_eq!(
        (&ready["state"], &ready["status"]),
        (&"ready".into(), &200.into()),
        "{ready}"
    );

    let doc: Value = api.get_json("/openapi.json", None).await;
    for path in [
        "/register",
        "/token",
        "/user_profile",
        "/users",
        "/users/{id}",
        "/health/live",
        "/health/ready",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    // The document is a valid OpenAPI document, as its own validator says.
    let file = std::env::temp_dir().join(format!("mart-openapi-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, doc.to_string()).expect("write");
    let checked = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python3");
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        !stderr.contains("No module named 'openapi_spec_validator'"),
        "pip install openapi-spec-validator (.ci/run does)"
    );
    assert!(
        checked.status.success(),
        "openapi.json is not valid: {stderr}"
    );
}

#[tokio::test]
async fn admin_create_reads_the_password_from_stdin_and_the_node_stops_cleanly() {
    use std::io::Write;
    let db = TestDb::empty().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mart"))
        .args([
            "admin",
            "create",
            "--email",
            "boss@example.test",
            "--password-stdin",
        ])
        .env("DATABASE_URL", &db.url)
        .env("MART_JWT_SECRET", support::JWT_SECRET)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"boss-keeps-the-keys-42\n")
        .expect("write");
    let output = child.wait_with_output().expect("admin create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("created admin boss"), "{said}");
    assert!(said.contains("(in postgresql://"), "which database: {said}");
    assert!(
        !said.contains(":mart@") && !said.contains("password"),
        "no secrets: {said}"
    );

    // From a directory with no database, it refuses instead of starting a
    // new embedded one that the running node never sees.
    let elsewhere = std::env::temp_dir().join(format!("mart-elsewhere-{}", uuid::Uuid::new_v4()));
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_mart"))
        .args([
            "admin",
            "create",
            "--email",
            "boss@example.test",
            "--password-stdin",
        ])
        .arg("--data-dir")
        .arg(&elsewhere)
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("admin create elsewhere");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!elsewhere.join("postgres").exists());

    let mut node = Node::start(NodeSpec {
        extra_env: vec![],
        ..NodeSpec::single(&db.url)
    })
    .await;
    let api = Api::new(&node.http);
    let token = api.token("boss", "boss-keeps-the-keys-42").await;
    let me: Value = api.get_json("/user_profile", Some(&token)).await;
    assert_eq!(me["role"], "admin");
    let status = node.terminate().expect("exits on SIGTERM");
    assert!(status.success(), "clean exit; log:\n{}", node.log_text());
}

/// `token` is refused within a second (revocation reaches every edge).
async fn refused_soon(api: &Api, token: &str) {
    let refused = |status| status == StatusCode::UNAUTHORIZED;
    support::profile_settles(api, token, refused, "a revoked token still works").await;
}

/// Schemathesis (PyPI `schemathesis`, `.ci/run` installs it) derives requests
/// from `/openapi.json`, valid and not, and sends them to a live node with a
/// demo catalog: no answer is a 5xx, and every answer's status, content type,
/// headers and body are the ones the document promises. Bounded: 30 cases
/// per operation, a fixed seed. Operations that end the caller's own
/// session (log out, password changes, role changes, deleting users) are left
/// out, since the run's token must live; `sessions.rs` covers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let db = TestDb::empty().await;
    let node = Node::start(NodeSpec::single(&db.url)).await;
    let api = Api::new(&node.http);
    let admin = api.admin_token().await;
    for (name, price, stock) in [("Mug", 1200, 50), ("Plate", 800, 0)] {
        api.stocked_product(&admin, name, price, stock).await;
    }
    let checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ];
    let mut command = std::process::Command::new("schemathesis");
    command
        .args(["run", &format!("{}/openapi.json", node.http)])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "2"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--checks", &checks.join(",")]);
    for own_session in [
        "logout",
        "change_password",
        "update_user",
        "reset_password",
        "delete_user",
    ] {
        command.args(["--exclude-operation-id", own_session]);
    }
    let run = command
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis (pip install schemathesis; .ci/run does)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The run really reached the API: its token held throughout.
    assert!(!stdout.contains("401 Unauthorized ("), "{stdout}");
}
