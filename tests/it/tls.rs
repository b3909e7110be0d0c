//! TLS to PostgreSQL, against the local server (`ssl = on`, the Debian
//! "snakeoil" certificate: self-signed, for `localhost`). Runs the release
//! path a user runs: `frontdesk migrate` with `database.url` carrying
//! `sslmode` and `sslrootcert`.

use std::path::Path;

use crate::cli::{fresh_install, run, stderr};
use crate::common::{Backend, TestDb, missing_service};

/// The local server's certificate, when it has one.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The test database's URL by `host`, with `params` added.
fn pg_url(db: &TestDb, host: &str, params: &str) -> String {
    let store::settings::DatabaseUrl::Postgres(url) = &db.url else {
        unreachable!("a PostgreSQL test database")
    };
    let mut url = url::Url::parse(url).expect("url");
    url.set_host(Some(host)).expect("host");
    format!("{url}?{params}")
}

/// Whether the local server speaks TLS (`SHOW ssl`).
fn server_has_tls() -> bool {
    let out = std::process::Command::new("psql")
        .args([&crate::common::pg_admin_url(), "-Atc", "SHOW ssl"])
        .output();
    matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "on")
}

fn migrate(dir: &Path, url: &str) -> std::process::Output {
    run(dir, &["migrate"], &[("FRONTDESK__DATABASE__URL", url)])
}

/// A self-signed CA of our own, which did not sign the server's certificate.
fn other_ca(dir: &Path) -> Option<std::path::PathBuf> {
    let path = dir.join("other-ca.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Not The Server CA",
        ])
        .arg("-keyout")
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&path)
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_checks_what_sslmode_says() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    if !server_has_tls() || !Path::new(SNAKEOIL).exists() {
        missing_service(
            "PostgreSQL with ssl = on",
            "SHOW ssl is not on, or no snakeoil certificate",
        );
        return;
    }
    let dir = fresh_install();

    // require: encrypted (PostgreSQL says so of the pool's connections),
    // certificate not checked; disable: in the clear.
    let url = pg_url(&db, "127.0.0.1", "sslmode=require");
    let out = migrate(dir.path(), &url);
    assert!(out.status.success(), "{}", stderr(&out));
    for (mode, encrypted) in [("require", true), ("disable", false), ("prefer", true)] {
        let mut settings = db.settings();
        settings.database.url = store::settings::DatabaseUrl::try_from(pg_url(
            &db,
            "127.0.0.1",
            &format!("sslmode={mode}"),
        ))
        .expect("url");
        let pool = store::db::Db::connect(&settings.database)
            .await
            .expect("connect");
        assert_eq!(
            pool.encrypted().await.expect("query"),
            Some(encrypted),
            "{mode}"
        );
    }
    // verify-full with the server's own certificate as the root, by the
    // name the certificate carries.
    let url = pg_url(
        &db,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    let out = migrate(dir.path(), &url);
    assert!(out.status.success(), "{}", stderr(&out));

    // verify-full against the wrong CA: refused, and the last line says why.
    let refusals = [
        // The Mozilla roots (no sslrootcert) do not know a self-signed server.
        pg_url(&db, "localhost", "sslmode=verify-full"),
    ]
    .into_iter()
    .chain(other_ca(dir.path()).map(|ca| {
        pg_url(
            &db,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        )
    }));
    for url in refusals {
        let out = migrate(dir.path(), &url);
        assert!(!out.status.success(), "{url}: accepted");
        let text = stderr(&out);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        assert!(
            last.contains("invalid peer certificate") && last.contains("UnknownIssuer"),
            "{url}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    // verify-full by an address the certificate does not name.
    let url = pg_url(
        &db,
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    let out = migrate(dir.path(), &url);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("invalid peer certificate"), "{text}");

    // A mode that does not exist is a settings error naming the valid ones.
    let out = migrate(dir.path(), &pg_url(&db, "127.0.0.1", "sslmode=always"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("verify-full"), "{}", stderr(&out));
}
