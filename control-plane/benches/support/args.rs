//! Command-line options of the control plane's benchmarks, shared by each
//! through `#[path]` (a file directly in `benches/` would be a benchmark of
//! its own): `--name value` pairs and bare flags, read from `std::env::args`.

#![allow(dead_code)] // each benchmark uses some of them

/// The number after `name` (`_` separators allowed: `--events 1_000_000`),
/// or `default` when it is missing or not a number.
pub fn arg(name: &str, default: usize) -> usize {
    arg_text(name)
        .and_then(|value| value.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The text after `name`, if given.
pub fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let index = args.iter().position(|a| a == name)?;
    args.get(index + 1).cloned()
}

/// Whether `name` was given.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}
