//! Material that follows its files: [`Reloading`] holds the value parsed
//! from a set of PEM files and replaces it when their contents change;
//! [`watch`] checks every few seconds.
//!
//! Polling the contents (not inotify, not mtimes) is deliberate: Kubernetes
//! updates a mounted Secret by swapping a `..data` symlink, cert-manager's
//! CSI driver and plain `cp` rewrite files in place, and a content
//! comparison of a few kilobytes sees all of them the same way, follows
//! symlinks, and cannot miss a change that kept the mtime.
//!
//! Invariants:
//!
//! * The current value only ever comes from a complete, successful parse of
//!   all its files read together: a failed read or parse leaves it as it
//!   was.
//! * Each distinct content of the files is tried once: a broken file is
//!   reported once (not every poll) and retried as soon as it changes again.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{PemFile, TlsError};

type Parse<T> = dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync;

/// A value parsed from `files`, swapped for a new one when they change and
/// the new contents parse.
pub struct Reloading<T> {
    /// Says what this is in logs: "server certificate", "client CA bundle".
    what: &'static str,
    files: Vec<PemFile>,
    /// Gets the files' contents in the order of `files`.
    parse: Box<Parse<T>>,
    current: RwLock<Arc<T>>,
    state: Mutex<State>,
}

/// What the files held at the last check, and whether that was usable.
struct State {
    /// Per file: its bytes, or why it could not be read.
    seen: Vec<Result<Vec<u8>, String>>,
    /// The files on disk do not parse: the current value is older than
    /// them.
    failing: bool,
}

/// The result of one [`Reloading::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The files are as they were at the previous check.
    Unchanged,
    /// The files changed and the new value is in use.
    Reloaded,
    /// The files changed but cannot be used; the previous value stays.
    Failed(TlsError),
}

impl<T: Send + Sync> Reloading<T> {
    /// Reads and parses `files` once; fails if that fails (at start-up
    /// there is no previous value to fall back on).
    pub fn load(
        what: &'static str,
        files: Vec<PemFile>,
        parse: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let seen = read_all(&files);
        let value = parse(&contents(&files, &seen)?)?;
        Ok(Reloading {
            what,
            files,
            parse: Box::new(parse),
            current: RwLock::new(Arc::new(value)),
            state: Mutex::new(State {
                seen,
                failing: false,
            }),
        })
    }

    /// The value in use.
    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the files; if their contents changed since the last check,
    /// parses them and, on success, makes the result current. Blocking
    /// (file reads): call it off the async threads.
    pub fn check(&self) -> Checked {
        let seen = read_all(&self.files);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if seen == state.seen {
            return Checked::Unchanged;
        }
        let parsed = contents(&self.files, &seen).and_then(|contents| (self.parse)(&contents));
        state.seen = seen;
        match parsed {
            Ok(value) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
                state.failing = false;
                Checked::Reloaded
            }
            Err(error) => {
                state.failing = true;
                Checked::Failed(error)
            }
        }
    }

    /// Whether the files on disk, as last checked, could not be used.
    pub fn is_failing(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failing
    }
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read_all(files: &[PemFile]) -> Vec<Result<Vec<u8>, String>> {
    files
        .iter()
        .map(|file| std::fs::read(&file.path).map_err(|error| error.to_string()))
        .collect()
}

/// The contents, or the error of the first file that could not be read.
fn contents(files: &[PemFile], seen: &[Result<Vec<u8>, String>]) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .iter()
        .zip(seen)
        .map(|(file, read)| {
            read.clone().map_err(|problem| TlsError::Read {
                setting: file.setting,
                path: file.path.clone(),
                problem,
            })
        })
        .collect()
}

/// Anything [`watch`] can keep current: a [`Reloading`] of any type.
pub trait Watched: Send + Sync {
    fn what(&self) -> &'static str;
    fn check(&self) -> Checked;
    fn is_failing(&self) -> bool;
}

impl<T: Send + Sync> Watched for Reloading<T> {
    fn what(&self) -> &'static str {
        self.what
    }

    fn check(&self) -> Checked {
        Reloading::check(self)
    }

    fn is_failing(&self) -> bool {
        Reloading::is_failing(self)
    }
}

/// What one round of [`watch`] found, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Materials replaced by new ones.
    pub reloaded: usize,
    /// Materials whose changed files could not be used.
    pub failed: usize,
    /// Materials whose files on disk cannot be used at the moment (the
    /// previous material is in use): what an alert should look at.
    pub failing: usize,
}

/// Checks `watched` every `every` until `stop`, logging each reload and
/// each failure, and reporting each round to `on_round` (metrics).
pub async fn watch(
    watched: Vec<Arc<dyn Watched>>,
    every: Duration,
    mut on_round: impl FnMut(Round) + Send,
    stop: CancellationToken,
) {
    if watched.is_empty() {
        return;
    }
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the files were just loaded.
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let round = {
            let watched = watched.clone();
            tokio::task::spawn_blocking(move || check_all(&watched)).await
        };
        match round {
            Ok(round) => on_round(round),
            Err(error) => tracing::error!(%error, "tls reload check panicked"),
        }
    }
}

/// One round of checks, logged.
pub fn check_all(watched: &[Arc<dyn Watched>]) -> Round {
    let mut round = Round::default();
    for item in watched {
        match item.check() {
            Checked::Unchanged => {}
            Checked::Reloaded => {
                round.reloaded += 1;
                tracing::info!(
                    material = item.what(),
                    "tls material reloaded; new connections use it"
                );
            }
            Checked::Failed(error) => {
                round.failed += 1;
                tracing::error!(
                    material = item.what(),
                    %error,
                    "cannot reload tls material; the previous one stays in use"
                );
            }
        }
        if item.is_failing() {
            round.failing += 1;
        }
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevCa;

    /// A server certificate and key in a directory, as files.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn cert(&self) -> PemFile {
            PemFile::new("CERT", self.dir.path().join("tls.crt"))
        }

        fn key(&self) -> PemFile {
            PemFile::new("KEY", self.dir.path().join("tls.key"))
        }

        fn write(&self, cert: &str, key: &str) {
            std::fs::write(self.cert().path, cert).unwrap();
            std::fs::write(self.key().path, key).unwrap();
        }

        fn load(&self) -> Result<Reloading<rustls::sign::CertifiedKey>, TlsError> {
            let (cert, key) = (self.cert(), self.key());
            Reloading::load(
                "test certificate",
                vec![cert.clone(), key.clone()],
                move |pem| crate::pem::certified_key(&cert, &pem[0], &key, &pem[1]),
            )
        }
    }

    fn leaf(material: &Reloading<rustls::sign::CertifiedKey>) -> Vec<u8> {
        material.current().cert[0].to_vec()
    }

    #[test]
    fn a_change_on_disk_replaces_the_material() {
        let ca = DevCa::new("test CA").unwrap();
        let (first, second) = (
            ca.server_cert(&["localhost".into()]).unwrap(),
            ca.server_cert(&["localhost".into()]).unwrap(),
        );
        let files = Files::new();
        files.write(&first.cert_pem, &first.key_pem);
        let material = files.load().unwrap();
        let before = leaf(&material);
        assert_eq!(material.check(), Checked::Unchanged);

        files.write(&second.cert_pem, &second.key_pem);
        assert_eq!(material.check(), Checked::Reloaded);
        assert_ne!(leaf(&material), before);
        assert_eq!(material.check(), Checked::Unchanged);
        assert!(!material.is_failing());
    }

    #[test]
    fn a_bad_file_keeps_the_previous_material_until_it_is_fixed() {
        let ca = DevCa::new("test CA").unwrap();
        let (first, second) = (
            ca.server_cert(&["localhost".into()]).unwrap(),
            ca.server_cert(&["localhost".into()]).unwrap(),
        );
        let files = Files::new();
        files.write(&first.cert_pem, &first.key_pem);
        let material = files.load().unwrap();
        let good = leaf(&material);

        // Half-written certificate.
        let half = &second.cert_pem[..second.cert_pem.len() / 2];
        files.write(half, &second.key_pem);
        assert!(matches!(material.check(), Checked::Failed(e) if e.setting() == Some("CERT")));
        assert_eq!(leaf(&material), good, "the old certificate stays in use");
        assert!(material.is_failing());
        // Reported once, not at every poll.
        assert_eq!(material.check(), Checked::Unchanged);
        assert!(material.is_failing());

        // New certificate, old key: the pair does not match.
        files.write(&second.cert_pem, &first.key_pem);
        assert!(matches!(material.check(), Checked::Failed(e) if e.setting() == Some("KEY")));
        assert_eq!(leaf(&material), good);

        // A missing file (mid-swap) is a failure too.
        std::fs::remove_file(files.key().path).unwrap();
        assert!(matches!(
            material.check(),
            Checked::Failed(TlsError::Read { .. })
        ));
        assert_eq!(leaf(&material), good);

        // Fixed.
        files.write(&second.cert_pem, &second.key_pem);
        assert_eq!(material.check(), Checked::Reloaded);
        assert_ne!(leaf(&material), good);
        assert!(!material.is_failing());
    }

    #[test]
    fn a_symlink_swap_is_seen() {
        // What the kubelet does to a mounted Secret: the files are links
        // through `..data`, and `..data` is replaced atomically.
        let ca = DevCa::new("test CA").unwrap();
        let (first, second) = (
            ca.server_cert(&["localhost".into()]).unwrap(),
            ca.server_cert(&["localhost".into()]).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (version, issued) in [("..v1", &first), ("..v2", &second)] {
            std::fs::create_dir(root.join(version)).unwrap();
            std::fs::write(root.join(version).join("tls.crt"), &issued.cert_pem).unwrap();
            std::fs::write(root.join(version).join("tls.key"), &issued.key_pem).unwrap();
        }
        std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        let (cert, key) = (
            PemFile::new("CERT", root.join("tls.crt")),
            PemFile::new("KEY", root.join("tls.key")),
        );
        let material = Reloading::load("test certificate", vec![cert.clone(), key.clone()], {
            move |pem: &[Vec<u8>]| crate::pem::certified_key(&cert, &pem[0], &key, &pem[1])
        })
        .unwrap();
        let before = leaf(&material);

        std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_eq!(material.check(), Checked::Reloaded);
        assert_ne!(leaf(&material), before);
    }

    #[test]
    fn start_up_fails_on_a_bad_file() {
        let files = Files::new();
        files.write("not pem", "not pem either");
        let error = files.load().unwrap_err();
        assert_eq!(error.setting(), Some("CERT"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_reports_rounds_until_stopped() {
        let ca = DevCa::new("test CA").unwrap();
        let (first, second) = (
            ca.server_cert(&["localhost".into()]).unwrap(),
            ca.server_cert(&["localhost".into()]).unwrap(),
        );
        let files = Files::new();
        files.write(&first.cert_pem, &first.key_pem);
        let material = Arc::new(files.load().unwrap());
        let stop = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(
            vec![material.clone() as Arc<dyn Watched>],
            Duration::from_secs(5),
            move |round| {
                let _ = tx.send(round);
            },
            stop.clone(),
        ));
        assert_eq!(rx.recv().await.unwrap(), Round::default());
        files.write(&second.cert_pem, &second.key_pem);
        let round = rx.recv().await.unwrap();
        assert_eq!(round.reloaded, 1);
        files.write("garbage", &second.key_pem);
        let round = rx.recv().await.unwrap();
        assert_eq!((round.failed, round.failing), (1, 1));
        stop.cancel();
        task.await.unwrap();
    }
}
