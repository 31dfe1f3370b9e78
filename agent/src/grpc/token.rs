//! The agent token sent to the control plane on every push, as the
//! metadata `authorization: Bearer <token>`: from
//! `NUDGE_AGENT_CONTROL_PLANE_TOKEN`, or read from the file
//! `NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE` (a mounted Kubernetes Secret).
//!
//! # Promises
//!
//! * A token that cannot be sent verbatim (empty, spaces, non-ASCII) or a
//!   file that cannot be read stops start-up with an error naming the
//!   setting ([`TokenError`], exit 64), never at the first push.
//! * The token is never logged or shown by `Debug`.
//! * **Rotation without restart** (file only): when the control plane
//!   answers UNAUTHENTICATED, the file is read again
//!   ([`ControlPlaneToken::refused`]); a new, valid content is used from the
//!   next push on (the refused batch stays in the outbox and is retried). A
//!   file that became unreadable or invalid keeps the token in use.

use std::path::PathBuf;
use std::sync::RwLock;

use tonic::metadata::AsciiMetadataValue;

/// Why the token cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
    #[error("NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The token and where it came from; shared by every replica's transport.
pub struct ControlPlaneToken {
    /// `Some`: re-read after a refusal.
    file: Option<PathBuf>,
    /// The whole header value, `Bearer <token>`.
    header: RwLock<AsciiMetadataValue>,
}

impl std::fmt::Debug for ControlPlaneToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneToken {
    /// The token given directly (`NUDGE_AGENT_CONTROL_PLANE_TOKEN`).
    pub fn from_value(value: &str) -> Result<Self, TokenError> {
        Ok(Self {
            file: None,
            header: RwLock::new(header("NUDGE_AGENT_CONTROL_PLANE_TOKEN", value)?),
        })
    }

    /// The token in `path` (`NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE`); the
    /// surrounding white space (a trailing newline) is not part of it.
    pub fn from_file(path: PathBuf) -> Result<Self, TokenError> {
        let header = read(&path)?;
        Ok(Self {
            file: Some(path),
            header: RwLock::new(header),
        })
    }

    /// The metadata value for the next push.
    pub fn header(&self) -> AsciiMetadataValue {
        self.header
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The control plane refused the token: with a file, read it again so a
    /// rotated Secret is picked up.
    pub fn refused(&self) {
        let Some(path) = &self.file else {
            return;
        };
        match read(path) {
            Ok(fresh) => {
                let mut current = self
                    .header
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *current != fresh {
                    *current = fresh;
                    tracing::info!(file = %path.display(), "control plane token changed on disk; using the new one");
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot re-read the control plane token; the previous one stays in use");
            }
        }
    }
}

fn read(path: &PathBuf) -> Result<AsciiMetadataValue, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.clone(),
        source,
    })?;
    header("NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE", text.trim())
}

fn header(setting: &'static str, token: &str) -> Result<AsciiMetadataValue, TokenError> {
    let invalid = |problem: &str| TokenError::Invalid {
        setting,
        problem: problem.to_owned(),
    };
    if token.is_empty() {
        return Err(invalid("is empty; unset it, or give the agent token"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "holds spaces or non-ASCII characters; agent tokens are visible ASCII",
        ));
    }
    let mut value: AsciiMetadataValue = format!("Bearer {token}")
        .parse()
        .map_err(|_| invalid("cannot be sent as a gRPC metadata value"))?;
    // Kept out of HPACK's dynamic table, like any credential.
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_becomes_a_bearer_header() {
        let token = ControlPlaneToken::from_value("abc-0123456789-xyz").unwrap();
        assert_eq!(
            token.header().to_str().unwrap(),
            "Bearer abc-0123456789-xyz"
        );
        assert!(!format!("{token:?}").contains("abc"));
        for bad in ["", "with space", "naïve"] {
            let error = ControlPlaneToken::from_value(bad).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("NUDGE_AGENT_CONTROL_PLANE_TOKEN"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_file_is_read_again_after_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token-0123456789\n").unwrap();
        let token = ControlPlaneToken::from_file(path.clone()).unwrap();
        assert_eq!(
            token.header().to_str().unwrap(),
            "Bearer first-token-0123456789"
        );
        std::fs::write(&path, "second-token-0123456789").unwrap();
        assert_eq!(
            token.header().to_str().unwrap(),
            "Bearer first-token-0123456789",
            "only a refusal makes it read the file"
        );
        token.refused();
        assert_eq!(
            token.header().to_str().unwrap(),
            "Bearer second-token-0123456789"
        );
        std::fs::write(&path, "").unwrap();
        token.refused();
        assert_eq!(
            token.header().to_str().unwrap(),
            "Bearer second-token-0123456789",
            "an empty file keeps the token in use"
        );
        let missing = ControlPlaneToken::from_file(dir.path().join("nope")).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE"),
            "{missing}"
        );
    }
}
