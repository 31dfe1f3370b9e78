//! SQL text built at run time (an `IN (…)` list, a multi-row `VALUES`),
//! as each engine should get it.
//!
//! The statements are written once, with PostgreSQL's numbered parameters
//! (`$1`, `$2`, …), which SQLite accepts too. But SQLite keeps every
//! named or numbered parameter in a list it searches from the start on
//! prepare and on each bind (and sqlx asks every parameter's name before
//! binding it), so a statement with hundreds of them costs time
//! quadratic in their number: in the storage benchmark those searches
//! (`sqlite3_bind_parameter_name`) took more CPU than the analytics
//! rollups' inserts themselves. Plain `?` parameters are not listed.
//! So for SQLite [`dynamic`] turns `$1, $2, …, $k` into `?`s when they
//! appear in that order, each once, as every statement built here has
//! them; any other text is passed on as written (correct, only slower).

use super::Engine;

/// `sql` (with `$N` parameters) as `engine` should get it; see the
/// module doc.
pub fn dynamic(engine: Engine, sql: String) -> sqlx::AssertSqlSafe<String> {
    match engine {
        Engine::Postgres => sqlx::AssertSqlSafe(sql),
        Engine::Sqlite => sqlx::AssertSqlSafe(positional(&sql).unwrap_or(sql)),
    }
}

/// `sql` with its `$1`…`$k` replaced by `?`, when they appear exactly in
/// that order outside quoted text; `None` otherwise.
fn positional(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1u64;
    let mut quote: Option<u8> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match quote {
            // A doubled quote inside quoted text closes and reopens it,
            // which this handles as written.
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if byte == b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits > 0 {
                    let number: u64 = sql[i + 1..i + 1 + digits].parse().ok()?;
                    if number != expected {
                        return None;
                    }
                    expected += 1;
                    out.push_str(&sql[copied..i]);
                    out.push('?');
                    i += 1 + digits;
                    copied = i;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// `$first, $first+1, …` (`count` of them).
pub(crate) fn numbered(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_in_order_become_positional_on_sqlite_only() {
        let sql = "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)";
        assert_eq!(
            positional(sql).as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?,?),(?,?)")
        );
        assert_eq!(dynamic(Engine::Postgres, sql.to_owned()).0, sql);
        assert_eq!(
            dynamic(Engine::Sqlite, sql.to_owned()).0,
            "INSERT INTO t (a, b) VALUES (?,?),(?,?)"
        );
        // Ten and more: digits are read whole.
        let list = (1..=12)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            positional(&format!("x IN ({list})")).as_deref(),
            Some("x IN (?,?,?,?,?,?,?,?,?,?,?,?)")
        );
    }

    #[test]
    fn quoted_text_is_left_alone() {
        let sql = "UPDATE t SET b = json_set(b, '$.status', 'x$1', '$.at', $1) WHERE \"c$2\" = $2";
        assert_eq!(
            positional(sql).as_deref(),
            Some("UPDATE t SET b = json_set(b, '$.status', 'x$1', '$.at', ?) WHERE \"c$2\" = ?")
        );
    }

    #[test]
    fn anything_but_one_two_three_is_passed_on_as_written() {
        for sql in [
            "a = $2 AND b = $1",
            "a = $1 OR b = $1",
            "a = $1 AND b = $3",
            "a IN ($0)",
        ] {
            assert_eq!(positional(sql), None, "{sql}");
            assert_eq!(dynamic(Engine::Sqlite, sql.to_owned()).0, sql);
        }
        assert_eq!(positional("SELECT 1").as_deref(), Some("SELECT 1"));
    }
}
