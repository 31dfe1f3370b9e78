//! Where the control plane's database is: `NUDGE_CP_DATABASE_URL` parsed
//! into one of the two engines, with a redacted form for logs and errors.
//!
//! * unset: SQLite in the file `nudge.sqlite3` under `NUDGE_CP_DATA_DIR`
//!   (the embedded default, no service to run);
//! * `sqlite://PATH` (or `sqlite:PATH`): SQLite in the file `PATH`;
//! * `postgres://…` or `postgresql://…`: PostgreSQL, with libpq's URL
//!   parameters (`sslmode=require` and stronger turn on TLS via rustls).
//!
//! Anything else is refused before anything opens, naming the setting.
//! The password of a PostgreSQL URL never appears in `Debug`, `Display`
//! or an error: [`DatabaseLocation::redacted`] replaces it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The file name of the embedded database inside the data dir.
pub const SQLITE_FILE: &str = "nudge.sqlite3";

/// Which engine, and where.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// An SQLite file (created when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server; the URL as given (it may hold a password).
    Postgres(String),
}

impl DatabaseLocation {
    /// The embedded default: SQLite in `data_dir`.
    pub fn embedded(data_dir: &Path) -> Self {
        DatabaseLocation::Sqlite(data_dir.join(SQLITE_FILE))
    }

    /// The engine's name, for logs and metrics.
    pub fn engine(&self) -> &'static str {
        match self {
            DatabaseLocation::Sqlite(_) => "sqlite",
            DatabaseLocation::Postgres(_) => "postgres",
        }
    }

    /// The location with any password replaced by `***`: safe to log.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseLocation::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseLocation::Postgres(url) => redact_url(url),
        }
    }
}

impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for DatabaseLocation {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            // `sqlite://PATH?mode=…`: options are ours to set, not the URL's.
            if path.contains('?') {
                return Err("an sqlite:// URL takes a file path only, without options".to_owned());
            }
            if path.is_empty() {
                return Err("an sqlite:// URL needs a file path, e.g. sqlite:///var/lib/nudge/nudge.sqlite3".to_owned());
            }
            return Ok(DatabaseLocation::Sqlite(PathBuf::from(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(DatabaseLocation::Postgres(value.to_owned()));
        }
        Err(format!(
            "{}: expected postgres://USER:PASSWORD@HOST:PORT/DB or sqlite://PATH",
            redact_url(value)
        ))
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; a
/// `password=` query parameter is masked too.
fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| authority_start + i);
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let userinfo = &out[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let secret_start = authority_start + colon + 1;
                out.replace_range(secret_start..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_engines() {
        assert_eq!(
            "sqlite:///var/lib/nudge/db.sqlite3".parse(),
            Ok(DatabaseLocation::Sqlite(PathBuf::from(
                "/var/lib/nudge/db.sqlite3"
            )))
        );
        assert_eq!(
            "sqlite:relative.db".parse(),
            Ok(DatabaseLocation::Sqlite(PathBuf::from("relative.db")))
        );
        assert_eq!(
            "postgres://nudge@db:5432/nudge".parse(),
            Ok(DatabaseLocation::Postgres(
                "postgres://nudge@db:5432/nudge".to_owned()
            ))
        );
        assert!("postgresql://db/nudge".parse::<DatabaseLocation>().is_ok());
    }

    #[test]
    fn refuses_other_schemes_without_echoing_a_password() {
        let error = "mysql://root:hunter2@db/nudge"
            .parse::<DatabaseLocation>()
            .unwrap_err();
        assert!(error.contains("mysql://root:***@db/nudge"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!("sqlite://".parse::<DatabaseLocation>().is_err());
        assert!("sqlite://x.db?mode=ro".parse::<DatabaseLocation>().is_err());
    }

    #[test]
    fn redacts_passwords_in_userinfo_and_query() {
        let location: DatabaseLocation =
            "postgres://nudge:s3cr@t@db:5432/nudge?sslmode=require&password=other"
                .parse()
                .unwrap();
        let shown = format!("{location} {location:?}");
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(!shown.contains("other"), "{shown}");
        assert!(shown.contains("postgres://nudge:***@db:5432/nudge?sslmode=require&password=***"));
        let no_password: DatabaseLocation = "postgres://nudge@db/nudge".parse().unwrap();
        assert_eq!(no_password.redacted(), "postgres://nudge@db/nudge");
    }
}
