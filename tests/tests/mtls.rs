//! End-to-end tests of TLS between agent and control plane (issue 6): real
//! `nudge-control-plane` and `nudge-agent` processes, real TLS on the gRPC
//! port, certificates from the development CA code (`nudge_tls::dev`, and
//! once through the `dev-certs` command itself).
//!
//! What is checked: with a client CA the control plane admits only agents
//! whose certificate it signed (a refused agent keeps its events in its
//! outbox, and nothing is stored); the server's certificate, the agents'
//! client certificates and the client CA bundle are replaced on disk and
//! new connections use them without either program restarting; a broken
//! file keeps the previous material; partial or unusable TLS settings exit
//! 64 naming the variable.
//!
//! Run `cargo build --bins` first; `scripts/test` does everything.

// `support` is shared with `e2e.rs`; this binary uses only part of it.
#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tempfile::TempDir;

use nudge_e2e::metrics::metric_value;
use nudge_e2e::{Agent, ControlPlane};
use nudge_tls::dev::{DevCa, Issued};
use support::{binary, run_to_exit, setup, wait_until};

/// The control plane's name in its certificates; agents connect to
/// 127.0.0.1 and check this name (NUDGE_AGENT_TLS_SERVER_NAME).
const SERVER_NAME: &str = "nudge-control-plane.test";

/// Both programs look at their TLS files this often in these tests.
const RELOAD: &str = "200ms";

/// Shipping attempts a refused agent must have made before the test
/// concludes that it is refused (it retries every 50–500 ms here).
const REFUSED_ATTEMPTS: f64 = 3.0;

// ---------------------------------------------------------------------------
// Certificates on disk

/// A directory laid out like a Secret mounted by the kubelet: each file is a
/// link through `..data`, and an update writes a new version directory and
/// swaps `..data` atomically.
struct SecretMount {
    dir: TempDir,
    version: usize,
}

impl SecretMount {
    fn new(files: &[(&str, &str)]) -> Self {
        let mut mount = SecretMount {
            dir: tempfile::tempdir().unwrap(),
            version: 0,
        };
        mount.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.path().join(name))
                .unwrap();
        }
        mount
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let root = self.dir.path();
        std::fs::create_dir(root.join(&version)).unwrap();
        for (name, contents) in files {
            std::fs::write(root.join(&version).join(name), contents).unwrap();
        }
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }
}

/// Plain files, rewritten in place (as `cp` or a CSI driver would).
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// `<prefix>.pem` and `<prefix>-key.pem`; the key first, so that a
    /// reload in between sees a mismatch (refused) rather than a stale key.
    fn write_pair(&self, prefix: &str, issued: &Issued) -> (String, String) {
        let key = self.write(&format!("{prefix}-key.pem"), &issued.key_pem);
        let cert = self.write(&format!("{prefix}.pem"), &issued.cert_pem);
        (cert, key)
    }
}

fn server_cert(ca: &DevCa) -> Issued {
    ca.server_cert(&[SERVER_NAME.into(), "127.0.0.1".into()])
        .unwrap()
}

fn bundle(cas: &[&DevCa]) -> String {
    cas.iter().map(|ca| ca.cert_pem()).collect()
}

// ---------------------------------------------------------------------------
// Programs

/// A control plane serving gRPC with the given TLS files (client
/// certificates required).
async fn control_plane(cert: &str, key: &str, client_ca: &str) -> ControlPlane {
    let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
        ("NUDGE_CP_TLS_CERT", cert),
        ("NUDGE_CP_TLS_KEY", key),
        ("NUDGE_CP_TLS_CLIENT_CA", client_ca),
        ("NUDGE_CP_TLS_RELOAD_INTERVAL", RELOAD),
    ]);
    control_plane.start().await.unwrap();
    control_plane
}

/// An agent shipping over TLS to `control_plane` by IP, checking
/// [`SERVER_NAME`], trusting `ca`, with the client certificate `identity`.
async fn agent(control_plane: &ControlPlane, ca: &str, identity: Option<(&str, &str)>) -> Agent {
    let mut env = vec![
        ("NUDGE_AGENT_TLS_CA", ca),
        ("NUDGE_AGENT_TLS_SERVER_NAME", SERVER_NAME),
        ("NUDGE_AGENT_TLS_RELOAD_INTERVAL", RELOAD),
    ];
    if let Some((cert, key)) = identity {
        env.extend([("NUDGE_AGENT_TLS_CERT", cert), ("NUDGE_AGENT_TLS_KEY", key)]);
    }
    Agent::started(setup(), &https_url(control_plane), &env)
        .await
        .unwrap()
}

fn https_url(control_plane: &ControlPlane) -> String {
    format!("https://{}", control_plane.grpc)
}

/// Tracks one event of `user` through `agent`.
async fn track(agent: &Agent, user: &str) {
    let reply = agent
        .post(
            "/v1/track",
            &json!({"userId": user, "event": "Signed Up", "properties": {"plan": "pro"}}),
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "track: {reply:?}");
}

/// Waits until `count` events of `user` are stored and `agent`'s outbox
/// is empty.
async fn assert_shipped(control_plane: &ControlPlane, agent: &Agent, user: &str, count: usize) {
    wait_until(&format!("{count} events of {user} are stored"), || async {
        control_plane.events_for_user(user).await.unwrap().len() >= count
    })
    .await;
    wait_until("the agent's outbox is empty", || async {
        agent.metric("nudge_agent_outbox_events").await.unwrap() == 0.0
    })
    .await;
    assert_eq!(
        control_plane.events_for_user(user).await.unwrap().len(),
        count
    );
}

/// Waits until `agent` has failed to ship several times, then checks that
/// its events are still in its outbox and none of `user`'s is stored.
async fn assert_refused(control_plane: &ControlPlane, agent: &Agent, user: &str, waiting: f64) {
    let failures = agent
        .metric("nudge_agent_ship_failures_total")
        .await
        .unwrap();
    wait_until("the agent has failed to ship several times", || async {
        agent
            .metric("nudge_agent_ship_failures_total")
            .await
            .unwrap()
            >= failures + REFUSED_ATTEMPTS
    })
    .await;
    assert_eq!(
        agent.metric("nudge_agent_outbox_events").await.unwrap(),
        waiting,
        "a refused agent keeps its events"
    );
    assert!(
        control_plane
            .events_for_user(user)
            .await
            .unwrap()
            .is_empty(),
        "nothing of {user} is stored"
    );
    assert!(
        cp_metric(control_plane, "nudge_cp_tls_handshake_failures_total", None).await >= 1.0,
        "the control plane counts the refused handshakes"
    );
}

async fn cp_metric(control_plane: &ControlPlane, name: &str, label: Option<&str>) -> f64 {
    metric_value(&control_plane.metrics().await.unwrap(), name, label).unwrap_or(0.0)
}

async fn agent_metric(agent: &Agent, name: &str, label: Option<&str>) -> f64 {
    metric_value(&agent.metrics().await.unwrap(), name, label).unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_certificate_from_dev_certs_and_no_token_ships_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = Command::new(binary("nudge-control-plane"))
        .args(["dev-certs", "--out"])
        .arg(&out)
        .args(["--server-name", "127.0.0.1", "--server-name", SERVER_NAME])
        .env_remove("NUDGE_CP_TLS_CERT")
        .output()
        .unwrap();
    assert!(output.status.success(), "dev-certs: {output:?}");
    let file = |name: &str| out.join(name).display().to_string();
    // As the README runs it: client certificates alone authenticate the
    // agents, so the control plane may listen on every interface without
    // agent tokens (issue 15).
    let mut control_plane = ControlPlane::new(setup()).unwrap().with_env([
        ("NUDGE_CP_TLS_CERT", file("server.pem").as_str()),
        ("NUDGE_CP_TLS_KEY", file("server-key.pem").as_str()),
        ("NUDGE_CP_TLS_CLIENT_CA", file("ca.pem").as_str()),
    ]);
    let everywhere = format!("0.0.0.0:{}", control_plane.grpc.port());
    control_plane
        .process
        .set_env("NUDGE_CP_GRPC_LISTEN", &everywhere);
    control_plane.process.remove_env("NUDGE_CP_AGENT_TOKENS");
    control_plane.start().await.unwrap();
    assert_eq!(
        cp_metric(&control_plane, "nudge_cp_grpc_unauthenticated_ingest", None).await,
        0.0
    );
    // By IP: the certificate names 127.0.0.1, no server-name override.
    let ca = file("ca.pem");
    let (cert, key) = (file("agent.pem"), file("agent-key.pem"));
    let mut agent = Agent::new(
        setup(),
        &https_url(&control_plane),
        &[
            ("NUDGE_AGENT_TLS_CA", ca.as_str()),
            ("NUDGE_AGENT_TLS_CERT", cert.as_str()),
            ("NUDGE_AGENT_TLS_KEY", key.as_str()),
        ],
    )
    .unwrap();
    agent.process.remove_env("NUDGE_AGENT_CONTROL_PLANE_TOKEN");
    agent.start().await.unwrap();

    track(&agent, "tls-user").await;
    track(&agent, "tls-user").await;
    assert_shipped(&control_plane, &agent, "tls-user", 2).await;
    assert_eq!(
        cp_metric(
            &control_plane,
            "nudge_cp_tls_handshake_failures_total",
            None
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_client_certificate_is_refused() {
    let ca = DevCa::new("Nudge test CA").unwrap();
    let files = Files::new();
    let (cert, key) = files.write_pair("server", &server_cert(&ca));
    let ca_file = files.write("ca.pem", &ca.cert_pem());
    let control_plane = control_plane(&cert, &key, &ca_file).await;
    let agent = agent(&control_plane, &ca_file, None).await;

    track(&agent, "anonymous").await;
    assert_refused(&control_plane, &agent, "anonymous", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_certificate_from_another_ca_is_refused() {
    let (ca, other_ca) = (
        DevCa::new("Nudge test CA").unwrap(),
        DevCa::new("Someone else's CA").unwrap(),
    );
    let files = Files::new();
    let (cert, key) = files.write_pair("server", &server_cert(&ca));
    let ca_file = files.write("ca.pem", &ca.cert_pem());
    let control_plane = control_plane(&cert, &key, &ca_file).await;
    let (agent_cert, agent_key) =
        files.write_pair("stranger", &other_ca.client_cert("nudge-agent").unwrap());
    let stranger = agent(&control_plane, &ca_file, Some((&agent_cert, &agent_key))).await;

    track(&stranger, "stranger").await;
    assert_refused(&control_plane, &stranger, "stranger", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_certificate_is_rotated_without_a_restart() {
    let (old_ca, new_ca) = (
        DevCa::new("Nudge old CA").unwrap(),
        DevCa::new("Nudge new CA").unwrap(),
    );
    let old_server = server_cert(&old_ca);
    let mut mount = SecretMount::new(&[
        ("tls.crt", &old_server.cert_pem),
        ("tls.key", &old_server.key_pem),
        ("ca.crt", &old_ca.cert_pem()),
    ]);
    let control_plane = control_plane(
        &mount.path("tls.crt"),
        &mount.path("tls.key"),
        &mount.path("ca.crt"),
    )
    .await;
    let pid = control_plane.process.pid();
    let files = Files::new();
    let identity = files.write_pair("agent", &old_ca.client_cert("nudge-agent").unwrap());
    let identity = Some((identity.0.as_str(), identity.1.as_str()));
    let trust_both = files.write("both.pem", &bundle(&[&old_ca, &new_ca]));
    let trust_old = files.write("old.pem", &old_ca.cert_pem());
    let trust_new = files.write("new.pem", &new_ca.cert_pem());

    // Agents already trust the new CA alongside the old one.
    let rolling = agent(&control_plane, &trust_both, identity).await;
    track(&rolling, "rolling").await;
    assert_shipped(&control_plane, &rolling, "rolling", 1).await;
    // One that trusts only the new CA cannot connect yet.
    let early = agent(&control_plane, &trust_new, identity).await;
    track(&early, "early").await;
    assert_refused(&control_plane, &early, "early", 1.0).await;

    // A broken update: the certificate does not parse. The control plane
    // keeps the old one, for new connections too.
    mount.update(&[
        ("tls.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n"),
        ("tls.key", &old_server.key_pem),
        ("ca.crt", &old_ca.cert_pem()),
    ]);
    wait_until("the control plane reports the broken file", || async {
        cp_metric(
            &control_plane,
            "nudge_cp_tls_reloads_total",
            Some("outcome=\"failed\""),
        )
        .await
            >= 1.0
            && cp_metric(&control_plane, "nudge_cp_tls_reload_failing", None).await == 1.0
    })
    .await;
    let latecomer = agent(&control_plane, &trust_old, identity).await;
    track(&latecomer, "latecomer").await;
    assert_shipped(&control_plane, &latecomer, "latecomer", 1).await;

    // The rotation: a certificate of the new CA, swapped in like a Secret
    // update.
    let new_server = server_cert(&new_ca);
    mount.update(&[
        ("tls.crt", &new_server.cert_pem),
        ("tls.key", &new_server.key_pem),
        ("ca.crt", &old_ca.cert_pem()),
    ]);
    wait_until("the control plane reloads its certificate", || async {
        cp_metric(
            &control_plane,
            "nudge_cp_tls_reloads_total",
            Some("outcome=\"reloaded\""),
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(
        cp_metric(&control_plane, "nudge_cp_tls_reload_failing", None).await,
        0.0
    );
    // The agent that trusts only the new CA gets through on its next retry.
    assert_shipped(&control_plane, &early, "early", 1).await;
    // So does a fresh one, and the rolling one keeps shipping.
    let fresh = agent(&control_plane, &trust_new, identity).await;
    track(&fresh, "fresh").await;
    assert_shipped(&control_plane, &fresh, "fresh", 1).await;
    track(&rolling, "rolling").await;
    assert_shipped(&control_plane, &rolling, "rolling", 2).await;
    // New connections of an agent that trusts only the old CA fail now.
    let stale = agent(&control_plane, &trust_old, identity).await;
    track(&stale, "stale").await;
    assert_refused(&control_plane, &stale, "stale", 1.0).await;

    assert_eq!(
        control_plane.process.pid(),
        pid,
        "the control plane was not restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_certificates_and_the_client_ca_are_rotated_without_a_restart() {
    let (ca, other_ca) = (
        DevCa::new("Nudge test CA").unwrap(),
        DevCa::new("Nudge second CA").unwrap(),
    );
    let server_files = Files::new();
    let (cert, key) = server_files.write_pair("server", &server_cert(&ca));
    let client_ca = server_files.write("client-ca.pem", &ca.cert_pem());
    let trust = server_files.write("trust.pem", &ca.cert_pem());
    let control_plane = control_plane(&cert, &key, &client_ca).await;

    // Two agents whose certificates the control plane does not accept yet.
    let (rotated_files, fixed_files) = (Files::new(), Files::new());
    let (rotated_cert, rotated_key) =
        rotated_files.write_pair("agent", &other_ca.client_cert("nudge-agent").unwrap());
    let rotated = agent(&control_plane, &trust, Some((&rotated_cert, &rotated_key))).await;
    let (fixed_cert, fixed_key) =
        fixed_files.write_pair("agent", &other_ca.client_cert("nudge-agent").unwrap());
    let fixed = agent(&control_plane, &trust, Some((&fixed_cert, &fixed_key))).await;
    let rotated_pid = rotated.process.pid();
    track(&rotated, "rotated").await;
    track(&fixed, "fixed").await;
    assert_refused(&control_plane, &rotated, "rotated", 1.0).await;
    assert_refused(&control_plane, &fixed, "fixed", 1.0).await;

    // The first agent's certificate is replaced by one of the accepted CA,
    // in place; it ships without a restart. The other is still refused.
    rotated_files.write_pair("agent", &ca.client_cert("nudge-agent").unwrap());
    assert_shipped(&control_plane, &rotated, "rotated", 1).await;
    assert!(
        agent_metric(
            &rotated,
            "nudge_agent_tls_reloads_total",
            Some("outcome=\"reloaded\"")
        )
        .await
            >= 1.0
    );
    assert_eq!(rotated.process.pid(), rotated_pid);
    assert_refused(&control_plane, &fixed, "fixed", 1.0).await;

    // The control plane's client CA bundle gains the second CA: the other
    // agent gets through on its next retry.
    server_files.write("client-ca.pem", &bundle(&[&ca, &other_ca]));
    assert_shipped(&control_plane, &fixed, "fixed", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_or_unusable_tls_settings_exit_64_naming_the_variable() {
    let ca = DevCa::new("Nudge test CA").unwrap();
    let files = Files::new();
    let (cert, key) = files.write_pair("server", &server_cert(&ca));
    let ca_file = files.write("ca.pem", &ca.cert_pem());
    let garbage = files.write("garbage.pem", "not a certificate");
    let missing = files.dir.path().join("missing.pem").display().to_string();
    let data = tempfile::tempdir().unwrap();
    let data = data.path().display().to_string();
    let control_plane_ok = [
        ("NUDGE_CP_GRPC_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_HTTP_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_CP_DATA_DIR", data.as_str()),
    ];
    let agent_ok = [
        ("NUDGE_AGENT_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_ADMIN_LISTEN", "127.0.0.1:0"),
        ("NUDGE_AGENT_DATA_DIR", data.as_str()),
        ("NUDGE_AGENT_CONTROL_PLANE", "https://127.0.0.1:1"),
    ];
    type Settings<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Settings, Settings, &str); 7] = [
        (
            "nudge-control-plane",
            &control_plane_ok,
            &[("NUDGE_CP_TLS_CERT", cert.as_str())],
            "NUDGE_CP_TLS_KEY",
        ),
        (
            "nudge-control-plane",
            &control_plane_ok,
            &[("NUDGE_CP_TLS_CLIENT_CA", ca_file.as_str())],
            "NUDGE_CP_TLS_CLIENT_CA",
        ),
        (
            "nudge-control-plane",
            &control_plane_ok,
            &[
                ("NUDGE_CP_TLS_CERT", missing.as_str()),
                ("NUDGE_CP_TLS_KEY", key.as_str()),
            ],
            "NUDGE_CP_TLS_CERT",
        ),
        (
            "nudge-control-plane",
            &control_plane_ok,
            &[
                ("NUDGE_CP_TLS_CERT", cert.as_str()),
                ("NUDGE_CP_TLS_KEY", key.as_str()),
                ("NUDGE_CP_TLS_CLIENT_CA", garbage.as_str()),
            ],
            "NUDGE_CP_TLS_CLIENT_CA",
        ),
        (
            "nudge-agent",
            &agent_ok,
            &[("NUDGE_AGENT_TLS_CERT", cert.as_str())],
            "NUDGE_AGENT_TLS_KEY",
        ),
        (
            "nudge-agent",
            &agent_ok,
            &[
                ("NUDGE_AGENT_CONTROL_PLANE", "http://127.0.0.1:1"),
                ("NUDGE_AGENT_TLS_CA", ca_file.as_str()),
            ],
            "NUDGE_AGENT_CONTROL_PLANE",
        ),
        (
            "nudge-agent",
            &agent_ok,
            &[("NUDGE_AGENT_TLS_CA", garbage.as_str())],
            "NUDGE_AGENT_TLS_CA",
        ),
    ];
    for (program, valid, extra, variable) in cases {
        let mut env: Vec<(&str, &str)> = valid.to_vec();
        env.extend_from_slice(extra);
        let (status, output) = run_to_exit(&binary(program), &env).await;
        assert_eq!(
            status.code(),
            Some(64),
            "{program} with {extra:?}: {status}\n{output}"
        );
        assert!(
            output.contains(variable),
            "{program} with {extra:?}: the message names {variable}:\n{output}"
        );
    }
}

/// `dev-certs` never overwrites certificates already there.
#[test]
fn dev_certs_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("certs");
    let run = |out: &Path| {
        Command::new(binary("nudge-control-plane"))
            .args(["dev-certs", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    assert!(run(&out).status.success());
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let again = run(&out);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists"),
        "{again:?}"
    );
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca);
}
