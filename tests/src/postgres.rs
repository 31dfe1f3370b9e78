//! PostgreSQL for tests and the benchmark: a fresh, empty database per
//! caller on the server named by `NUDGE_TEST_DATABASE_URL` (which
//! `scripts/test` starts for the run: a throwaway cluster on a free
//! loopback port), so tests never see each other's rows.

use sqlx::Connection;

/// The variable naming the server.
pub const SERVER_URL_VARIABLE: &str = "NUDGE_TEST_DATABASE_URL";

/// The server URL; a clear failure when the variable is missing.
pub fn server_url() -> String {
    std::env::var(SERVER_URL_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{SERVER_URL_VARIABLE} is not set: run `scripts/test` (it installs PostgreSQL and starts a throwaway server) or point it at a PostgreSQL server you may create databases on"
        )
    })
}

/// Creates a new, empty database on the server; returns its URL.
pub async fn fresh_database() -> String {
    let server = server_url();
    let name = format!(
        "nudge_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&server)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {SERVER_URL_VARIABLE}: {error}"));
    // `name` is made here from numbers, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
    admin.close().await.ok();
    with_database(&server, &name)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `url` with its database path replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5/postgres", "t1"),
            "postgres://u@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "t2"),
            "postgres://u@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }
}
