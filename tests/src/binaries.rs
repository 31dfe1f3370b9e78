//! Locating the programs under test. Promises: the profile directory of the
//! running executable comes first (so a test or a bench built with
//! `--release`, or into `CARGO_TARGET_DIR`, finds the programs built with
//! it), then `$CARGO_TARGET_DIR/<profile>`, then the workspace's
//! `target/<profile>`; the error lists every place looked in.

use std::fmt;
use std::path::{Path, PathBuf};

/// `name` was in none of `candidates`.
#[derive(Debug)]
pub struct NotFound {
    pub name: String,
    pub candidates: Vec<PathBuf>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "binary `{}` not found (looked in {:?})",
            self.name, self.candidates
        )
    }
}

impl std::error::Error for NotFound {}

/// Where `cargo build` put program `name`: in `first` if given, next to the
/// running executable, or in the `profile` (`"debug"`, `"release"`)
/// directory of the target directory.
pub fn locate(name: &str, first: Option<&Path>, profile: &str) -> Result<PathBuf, NotFound> {
    let mut candidates = Vec::new();
    if let Some(dir) = first {
        candidates.push(dir.join(name));
    }
    if let Some(dir) = own_profile_dir() {
        candidates.push(dir.join(name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join(profile).join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(profile)
            .join(name),
    );
    match candidates.iter().find(|path| path.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(NotFound {
            name: name.into(),
            candidates,
        }),
    }
}

/// `target/<profile>` of the running executable: its own directory for a
/// binary (`target/release/nudge-bench`), the parent of `deps/` for a test
/// (`target/debug/deps/e2e-<hash>`).
fn own_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        return dir.parent().map(Path::to_path_buf);
    }
    Some(dir.to_path_buf())
}
