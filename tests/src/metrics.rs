//! Reading the programs' `/metrics` (Prometheus text format). Promises: a
//! value is the sum of the samples of exactly the metric named (not its
//! `_bucket`, `_sum` or `_count` series), optionally only those carrying one
//! label; an absent metric is `None`, never a guess.

/// Sum of the samples of metric `name` (exact name, not `_bucket` and the
/// like) whose labels include `label` (`reason="outbox_full"`), or all its
/// samples when `label` is `None`. `None` when no sample matches.
pub fn metric_value(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.chars().next() {
            Some('{') => {
                let end = rest.find('}')?;
                (&rest[1..end], &rest[end + 1..])
            }
            Some(' ') => ("", rest),
            _ => continue,
        };
        let wanted = label.is_none_or(|wanted| labels.split(',').any(|l| l.trim() == wanted));
        if !wanted {
            continue;
        }
        let value: f64 = value.split_whitespace().next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    const TEXT: &str = "\
# HELP x_total x
x_total{reason=\"a\"} 2
x_total{reason=\"b\"} 3
x_total_bucket{le=\"1\"} 9
y 1.5
";

    #[test]
    fn sums_the_samples_of_the_exact_name() {
        assert_eq!(metric_value(TEXT, "x_total", None), Some(5.0));
        assert_eq!(
            metric_value(TEXT, "x_total", Some("reason=\"b\"")),
            Some(3.0)
        );
        assert_eq!(metric_value(TEXT, "y", None), Some(1.5));
        assert_eq!(metric_value(TEXT, "x", None), None);
    }
}
