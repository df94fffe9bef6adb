//! TLS to a real PostgreSQL started with `ssl=on` and a certificate from a
//! throwaway CA (made with the `openssl` command), refusing plain connections:
//! every `sslmode` behaves as libpq documents it.

use std::path::Path;
use std::process::Command;

use mart_schema::db::{Durability, EmbeddedPostgres, pool};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`name.crt`) and, when `host` is given, a server certificate it
/// signed for that DNS name (`server.crt`, `server.key`).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

fn server_certificate(dir: &Path, ca: &str, host: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={host}"),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), format!("subjectAltName=DNS:{host}\n")).expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-days",
            "2",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// Whether a pool on `url` connects, and over TLS.
async fn tls_in_use(url: &str) -> Result<bool, String> {
    let pool = pool(url, 1).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| mart_schema::db::chain(&e))?;
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn every_sslmode_behaves_as_libpq_says() {
    let dir = std::env::temp_dir().join(format!("mart-tls-{}", uuid::Uuid::new_v4().simple()));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("dir");
    ca(&certs, "test-ca");
    ca(&certs, "other-ca");
    // Issued for "localhost" only: connecting to 127.0.0.1 is a name mismatch.
    server_certificate(&certs, "test-ca", "localhost");

    // First start makes the cluster; then it is told to speak TLS and to
    // refuse plain connections.
    let pg = tokio::task::spawn_blocking({
        let dir = dir.join("pg");
        move || EmbeddedPostgres::start(&dir, Durability::Throwaway)
    })
    .await
    .expect("join")
    .expect("start postgres");
    pg.stop();
    let data = dir.join("pg").join("pgdata");
    for file in ["server.crt", "server.key"] {
        std::fs::copy(certs.join(file), data.join(file)).expect("copy");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key mode");
    }
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
    conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    std::fs::write(data.join("postgresql.conf"), conf).expect("conf");
    let hba = std::fs::read_to_string(data.join("pg_hba.conf")).expect("hba");
    std::fs::write(
        data.join("pg_hba.conf"),
        format!("hostnossl all all all reject\n{hba}"),
    )
    .expect("hba");
    let pg = tokio::task::spawn_blocking({
        let dir = dir.join("pg");
        move || EmbeddedPostgres::start(&dir, Durability::Throwaway)
    })
    .await
    .expect("join")
    .expect("restart postgres with TLS");

    let by_ip = pg.url("postgres");
    let by_name = by_ip.replace("@127.0.0.1:", "@localhost:");
    let ca_file = certs.join("test-ca.crt");
    let ca_file = ca_file.to_str().expect("path");
    let other_ca = certs.join("other-ca.crt");
    let other_ca = other_ca.to_str().expect("path");

    // Encrypted, any certificate: the default, prefer, and require.
    for url in [
        by_ip.clone(),
        format!("{by_ip}?sslmode=prefer"),
        format!("{by_ip}?sslmode=require"),
    ] {
        assert_eq!(tls_in_use(&url).await, Ok(true), "{url}");
    }
    // The CA is checked; the name too with verify-full.
    assert_eq!(
        tls_in_use(&format!(
            "{by_name}?sslmode=verify-full&sslrootcert={ca_file}"
        ))
        .await,
        Ok(true)
    );
    assert_eq!(
        tls_in_use(&format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca_file}")).await,
        Ok(true),
        "verify-ca does not look at the name"
    );
    let wrong_name = tls_in_use(&format!(
        "{by_ip}?sslmode=verify-full&sslrootcert={ca_file}"
    ))
    .await;
    assert!(
        wrong_name
            .as_ref()
            .is_err_and(|e| e.to_lowercase().contains("name")),
        "{wrong_name:?}"
    );
    for mode in ["verify-ca", "verify-full", "require"] {
        let untrusted =
            tls_in_use(&format!("{by_name}?sslmode={mode}&sslrootcert={other_ca}")).await;
        assert!(
            untrusted
                .as_ref()
                .is_err_and(|e| e.to_lowercase().contains("certificate")),
            "{mode} with another CA: {untrusted:?}"
        );
    }
    // Plain is refused by this server, and the cause is kept.
    let plain = tls_in_use(&format!("{by_ip}?sslmode=disable")).await;
    assert!(
        plain.as_ref().is_err_and(|e| e.contains("pg_hba.conf")),
        "{plain:?}"
    );
    assert!(
        tls_in_use(&format!(
            "{by_ip}?sslmode=verify-full&sslrootcert=/nonexistent.pem"
        ))
        .await
        .is_err_and(|e| e.contains("/nonexistent.pem"))
    );

    pg.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
