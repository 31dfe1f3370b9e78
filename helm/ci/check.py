"""Checks the Helm charts with Helm's own code (helm-python-sdk wraps Helm's
Go SDK; no helm binary) and the Kubernetes API schemas, offline.

For the nudge chart and each value set in helm/ci/*.yaml, and for the
example application chart (helm/examples/app-with-agent) and each value set
in helm/ci/app-with-agent/*.yaml:

* `helm lint --strict` (warnings fail) for the cluster version below;
* render, then validate every manifest with kubernetes-validate --strict
  (unknown fields fail). The Prometheus Operator's and cert-manager's kinds
  have no schema there: the PrometheusRule's rules go through `promtool
  check rules`, ServiceMonitor/PodMonitor are checked against what they
  must select, and a Certificate's fields against a list of known ones and
  against the pods that mount its Secret;
* cross-checks within each rendering: Services, monitors and
  NetworkPolicies select pods and name ports that exist, probes name
  container ports, mounts name volumes, Secret/ConfigMap keys the pods read
  exist, the engine config reaches the pod unchanged, dashboards are JSON;
  each cert-manager Certificate writes a Secret a pod mounts for TLS, its
  usages fit that pod's side (server auth for the control plane, client
  auth for agents), the TLS files the pods read are keys cert-manager
  writes, the server certificate names the gRPC Service (and the agents'
  address), and both sides come from one issuer (ca.crt is the other
  side's CA);
* the two database modes, on the rendered objects (check_modes): embedded,
  one StatefulSet replica with its PVC and no Job or autoscaler; PostgreSQL,
  a Deployment (no StatefulSet, no PVC) with the replica count or the
  HorizontalPodAutoscaler's (autoscaling/v2, CPU, scaling that Deployment),
  a rolling update and a PodDisruptionBudget that keep a majority, spread
  over nodes (hard) and zones (soft), the pre-install/pre-upgrade hook Job
  that runs `migrate` with the pods' image, security context and database
  settings, and the headless gRPC Service of ready replicas that the
  chart's agents dial;
* the programs' contract: every environment variable the programs read
  (`env = "NUDGE_..."` in agent/src/config.rs and
  control-plane/src/config.rs) appears in the chart's templates and is set
  in some rendering; every NUDGE_ variable the chart sets is one they read;
  the chart's defaults equal the programs' defaults except where listed in
  DELIBERATE; every metric the alerts and dashboards use is exported;
* bad values are refused at render time with a message (NEGATIVE);
* the Dockerfiles build packages and binaries that exist.

Usage: helm/ci/check  (prints one line per check, then "N passed, N failed")
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "helm"
CHART = HELM / "nudge"
EXAMPLE = HELM / "examples" / "app-with-agent"
CI = HELM / "ci"
# The oldest Kubernetes the chart is checked against (native sidecars need
# 1.29; kubernetes-validate has schemas from 1.25 on).
KUBE_VERSION = os.environ.get("NUDGE_HELM_KUBE_VERSION", "1.30")
RELEASE, NAMESPACE = "nudge", "nudge"

CONFIG_FILES = [ROOT / "agent/src/config.rs", ROOT / "control-plane/src/config.rs"]
METRIC_SOURCES = [ROOT / "agent/src", ROOT / "control-plane/src"]

# Kinds without a schema in kubernetes-validate, and how they are checked.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate"}

# cert-manager.io/v1 Certificate spec fields (cert-manager 1.15+); anything
# else is a typo the API server would reject.
CERTIFICATE_FIELDS = {
    "secretName", "issuerRef", "commonName", "dnsNames", "ipAddresses", "uris",
    "emailAddresses", "otherNames", "subject", "literalSubject", "duration",
    "renewBefore", "renewBeforePercentage", "usages", "privateKey", "isCA",
    "keystores", "secretTemplate", "revisionHistoryLimit", "encodeUsagesInRequest",
    "additionalOutputFormats", "nameConstraints",
}
CERTIFICATE_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment",
    "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
    "decipher only", "any", "server auth", "client auth", "code signing",
    "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
    "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
}
# The keys cert-manager writes into a Certificate's Secret.
CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}

# Chart defaults that differ from the program's on purpose.
DELIBERATE = {
    "NUDGE_CP_DATA_DIR": "the PersistentVolumeClaim's mount path",
    "NUDGE_CP_LOG_FORMAT": "json for log shippers",
    "NUDGE_AGENT_DATA_DIR": "the outbox volume's mount path",
    "NUDGE_AGENT_LOG_FORMAT": "json for log shippers",
    "NUDGE_AGENT_CONTROL_PLANE": "the release's gRPC Service",
    "NUDGE_AGENT_LISTEN": "the DaemonSet's intake listens on every interface",
    "NUDGE_CP_GRPC_LISTEN": "a pod is reached through its Service: every interface, with agents authenticated",
}

# Variables the chart may set before the programs read them (a setting
# being added on both sides at once). The check fails once a program reads
# one of them: then delete it here. Empty is the normal state.
PENDING: set[str] = set()

# Metrics the alerts and dashboards may use before the programs export them
# (the same metric being added on both sides at once; issue 13's replica
# metrics). The check fails once a program exports one of them: then delete
# it here. Empty is the normal state.
PENDING_METRICS: set[str] = set()

# Values that must not render, and a piece of the message they must give.
NEGATIVE = [
    (
        CHART,
        {"controlPlane": {"engineConfig": {"enabled": True}}},
        "needs controlPlane.engineConfig.toml",
    ),
    (
        CHART,
        {"controlPlane": {"tls": {"enabled": False}}},
        "the control plane's gRPC port would take pushes from anyone",
    ),
    (
        CHART,
        {"controlPlane": {"tls": {"clientCaKey": ""}}},
        "the control plane's gRPC port would take pushes from anyone",
    ),
    (
        CHART,
        {"controlPlane": {"grpcInsecureAllowUnauthenticated": True}},
        "controlPlane.grpcInsecureAllowUnauthenticated=true next to mTLS",
    ),
    (
        CHART,
        {"certManager": {"enabled": True}, "controlPlane": {"tls": {"enabled": True}}},
        "certManager.enabled needs certManager.issuerRef.name",
    ),
    (
        CHART,
        {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}},
         "controlPlane": {"tls": {"enabled": False}, "agentTokensSecret": {"name": "tokens"}}},
        "certManager.enabled needs controlPlane.tls.enabled",
    ),
    (
        CHART,
        {"agent": {"daemonset": {"enabled": True, "updateStrategy": {"rollingUpdate": {"maxSurge": 1}}}}},
        "maxSurge must be 0",
    ),
    (
        CHART,
        {"controlPlane": {"terminationGracePeriodSeconds": 10}},
        "terminationGracePeriodSeconds must be at least 30",
    ),
    (
        CHART,
        {"controlPlane": {"podDisruptionBudget": {"minAvailable": 1}}},
        "set minAvailable or maxUnavailable, not both",
    ),
    (
        CHART,
        {"controlPlane": {"replicas": 3}},
        "controlPlane.replicas=3 needs PostgreSQL",
    ),
    (
        CHART,
        {"controlPlane": {"autoscaling": {"enabled": True}}},
        "controlPlane.autoscaling.enabled needs PostgreSQL",
    ),
    (
        CHART,
        {"controlPlane": {"databaseUrlSecret": {"name": "db"}, "podDisruptionBudget": {"maxUnavailable": 2}}},
        "lets evictions leave fewer than a majority (2) of 3 replicas",
    ),
    (
        CHART,
        {"controlPlane": {"databaseUrlSecret": {"name": "db"},
                          "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
        "controlPlane.autoscaling.maxReplicas (3) is below minReplicas (5)",
    ),
    (
        EXAMPLE,
        {"nudge": {"agent": {"controlPlane": ""}}},
        "agent.controlPlane is required",
    ),
    (
        EXAMPLE,
        {"nudge": {"agent": {"controlPlane": "http://nudge-grpc.nudge.svc:50051"}}},
        "agent.tls.enabled needs an https:// agent.controlPlane",
    ),
    (
        EXAMPLE,
        {"nudge": {"agent": {"tls": {"secretName": ""}}}},
        "agent.tls.enabled needs agent.tls.secretName",
    ),
]


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for problem in problems:
                print(f"     {problem}")
        else:
            self.passed += 1
            print(f"ok   {name}")


# ---------------------------------------------------------------- rendering


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def render(chart: Path, values: dict) -> dict[str, str]:
    with helm.Chart.load(chart) as loaded:
        return loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    docs = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((template, doc))
    return docs


def lint(chart: Path, values: dict) -> list[str]:
    report = helm.lint(chart, values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report.get("errors") or [])


# ------------------------------------------------------- schema validation


def validate_schemas(docs: list[tuple[str, dict]], promtool: str) -> list[str]:
    problems = []
    for template, doc in docs:
        kind = doc.get("kind")
        where = f"{template}: {kind}/{doc.get('metadata', {}).get('name')}"
        if kind in CRD_KINDS:
            if kind == "PrometheusRule":
                problems += promtool_check(doc, promtool, where)
            if kind == "Certificate":
                problems += certificate_fields(doc, where)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    return problems


def certificate_fields(doc: dict, where: str) -> list[str]:
    problems = []
    if doc.get("apiVersion") != "cert-manager.io/v1":
        problems.append(f"{where}: apiVersion {doc.get('apiVersion')}, not cert-manager.io/v1")
    spec = doc.get("spec", {})
    problems += [f"{where}: spec.{key}: unknown field" for key in sorted(set(spec) - CERTIFICATE_FIELDS)]
    if not spec.get("secretName"):
        problems.append(f"{where}: spec.secretName is empty")
    if not spec.get("issuerRef", {}).get("name"):
        problems.append(f"{where}: spec.issuerRef.name is empty")
    problems += [f"{where}: spec.usages: unknown usage {u!r}" for u in spec.get("usages", []) if u not in CERTIFICATE_USAGES]
    if not any(spec.get(k) for k in ("commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses")):
        problems.append(f"{where}: no commonName or subject alternative name")
    return problems


def promtool_check(doc: dict, promtool: str, where: str) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        yaml.safe_dump(doc["spec"], rules)
        rules.flush()
        run = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True)
    if run.returncode != 0:
        return [f"{where}: promtool check rules: {run.stdout}{run.stderr}".strip()]
    return []


# ----------------------------------------------------------- cross-checks

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def pod_templates(docs):
    return [(doc, doc["spec"]["template"]) for _, doc in docs if doc["kind"] in WORKLOADS]


def all_containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def port_names(pod_spec: dict) -> set[str]:
    return {p["name"] for c in all_containers(pod_spec) for p in c.get("ports", []) if "name" in p}


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def by_kind(docs, kind):
    return [doc for _, doc in docs if doc["kind"] == kind]


def cross_check(docs: list[tuple[str, dict]], values: dict) -> list[str]:
    problems = []
    pods = pod_templates(docs)
    services = by_kind(docs, "Service")
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}

    def selected(selector: dict) -> list[dict]:
        return [t["spec"] for _, t in pods if matches(selector, t["metadata"].get("labels", {}))]

    for service in services:
        name = service["metadata"]["name"]
        targets = selected(service["spec"].get("selector"))
        if not targets:
            problems.append(f"Service {name} selects no pod")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and any(target not in port_names(t) for t in targets):
                problems.append(f"Service {name}: targetPort {target} is no container port")

    for workload, template in pods:
        spec = template["spec"]
        name = f"{workload['kind']} {workload['metadata']['name']}"
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for container in all_containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{name}: {container['name']} mounts unknown volume {mount['name']}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in port_names({"containers": [container]}):
                    problems.append(f"{name}: {container['name']} {probe} port {port} is not its port")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in secrets and ref["key"] not in secrets[ref["name"]].get("data", {}):
                    problems.append(f"{name}: {env['name']} reads missing key {ref['key']} of Secret {ref['name']}")
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            config = env.get("NUDGE_CP_CONFIG")
            if config:
                problems += check_engine_config(spec, container, config, secrets, configmaps, values)
        for volume in spec.get("volumes", []):
            ref = volume.get("configMap", {}).get("name")
            if ref and ref not in configmaps:
                problems.append(f"{name}: volume {volume['name']} names ConfigMap {ref} that is not rendered")

    for monitor in by_kind(docs, "ServiceMonitor"):
        name = monitor["metadata"]["name"]
        chosen = [s for s in services if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if len(chosen) != 1:
            problems.append(f"ServiceMonitor {name} selects {len(chosen)} Services, not 1")
        for endpoint in monitor["spec"]["endpoints"]:
            if chosen and endpoint["port"] not in {p.get("name") for p in chosen[0]["spec"]["ports"]}:
                problems.append(f"ServiceMonitor {name}: port {endpoint['port']} is not a Service port")
    for monitor in by_kind(docs, "PodMonitor"):
        name = monitor["metadata"]["name"]
        targets = selected(monitor["spec"]["selector"]["matchLabels"])
        if not targets:
            problems.append(f"PodMonitor {name} selects no pod")
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            if any(endpoint["port"] not in port_names(t) for t in targets):
                problems.append(f"PodMonitor {name}: port {endpoint['port']} is not a container port")

    for policy in by_kind(docs, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        targets = selected(policy["spec"]["podSelector"].get("matchLabels"))
        if not targets:
            problems.append(f"NetworkPolicy {name} selects no pod")
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str) and any(port["port"] not in port_names(t) for t in targets):
                    problems.append(f"NetworkPolicy {name}: port {port['port']} is not a container port")

    problems += check_certificates(docs, pods, services, values)

    for configmap in configmaps.values():
        if configmap["metadata"].get("labels", {}).get("grafana_dashboard"):
            for key, text in configmap["data"].items():
                try:
                    dashboard = json.loads(text)
                except json.JSONDecodeError as error:
                    problems.append(f"dashboard {key} is not JSON: {error}")
                    continue
                for field in ("title", "uid", "panels"):
                    if field not in dashboard:
                        problems.append(f"dashboard {key} has no {field}")
    return problems


# The TLS file variables of each side, and the usage its certificate needs.
TLS_SIDES = {
    "server": ({"NUDGE_CP_TLS_CERT", "NUDGE_CP_TLS_KEY", "NUDGE_CP_TLS_CLIENT_CA"}, "NUDGE_CP_TLS_CERT", "server auth"),
    "client": ({"NUDGE_AGENT_TLS_CA", "NUDGE_AGENT_TLS_CERT", "NUDGE_AGENT_TLS_KEY"}, "NUDGE_AGENT_TLS_CERT", "client auth"),
}


def check_certificates(docs, pods, services, values) -> list[str]:
    """cert-manager Certificates against the pods that mount their Secrets."""
    problems = []
    certificates = by_kind(docs, "Certificate")
    if not certificates:
        return problems
    # secretName -> [(workload name, container, mount path)]
    mounted: dict[str, list[tuple[str, dict, str]]] = {}
    for workload, template in pods:
        spec = template["spec"]
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for container in all_containers(spec):
            for mount in container.get("volumeMounts", []):
                if mount["name"] in secret_volumes:
                    mounted.setdefault(secret_volumes[mount["name"]], []).append(
                        (f"{workload['kind']} {workload['metadata']['name']}", container, mount["mountPath"])
                    )
    grpc = [s for s in services if s["metadata"].get("labels", {}).get("nudge.io/listener") == "grpc"]
    domain = values.get("clusterDomain", "cluster.local")
    issuers = {}
    server_names: set[str] = set()
    agent_hosts: set[str] = set()
    for certificate in certificates:
        spec = certificate["spec"]
        name = f"Certificate {certificate['metadata']['name']}"
        usages = set(spec.get("usages", []))
        users = mounted.get(spec.get("secretName"), [])
        if not users:
            problems.append(f"{name}: Secret {spec.get('secretName')} is mounted by no pod")
        for workload, container, path in users:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            sides = [side for side, (_, cert_var, _) in TLS_SIDES.items()
                     if (env.get(cert_var) or "").startswith(path + "/")]
            if len(sides) != 1:
                problems.append(f"{name}: {workload} {container['name']} mounts its Secret at {path} "
                                f"but reads no TLS certificate there")
                continue
            side = sides[0]
            variables, _, usage = TLS_SIDES[side]
            other = TLS_SIDES["client" if side == "server" else "server"][2]
            issuers[side] = spec.get("issuerRef")
            if usage not in usages:
                problems.append(f"{name}: read as the {side} certificate by {workload} without usage {usage!r}")
            if other in usages:
                problems.append(f"{name}: the {side} certificate of {workload} also has usage {other!r}")
            for variable in sorted(variables):
                value = env.get(variable)
                if value and value.startswith(path + "/") and value[len(path) + 1:] not in CERT_MANAGER_KEYS:
                    problems.append(f"{name}: {workload} {variable}={value}: cert-manager writes only "
                                    f"{sorted(CERT_MANAGER_KEYS)}")
            if side == "server":
                server_names |= set(spec.get("dnsNames", []))
                for service in grpc:
                    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.{domain}"
                    if fqdn not in spec.get("dnsNames", []):
                        problems.append(f"{name}: dnsNames lack the gRPC Service's name {fqdn}")
            else:
                address = env.get("NUDGE_AGENT_CONTROL_PLANE") or ""
                host = env.get("NUDGE_AGENT_TLS_SERVER_NAME") or re.sub(r"^\w+://([^:/]+).*$", r"\1", address)
                agent_hosts.add(host)
    if "server" in issuers:
        problems += [f"the agents reach the control plane as {host}, which its Certificate does not name"
                     for host in sorted(agent_hosts - server_names)]
    if len(issuers) == 2 and issuers["server"] != issuers["client"]:
        problems.append(f"the server and client Certificates have different issuers ({issuers['server']} vs "
                        f"{issuers['client']}): each side's ca.crt would not verify the other")
    return problems


def check_engine_config(spec, container, path, secrets, configmaps, values) -> list[str]:
    """The file NUDGE_CP_CONFIG names is mounted, and is the TOML given."""
    directory, file_name = path.rsplit("/", 1)
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == directory), None)
    if mount is None:
        return [f"NUDGE_CP_CONFIG={path}: nothing is mounted at {directory}"]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    given = values.get("controlPlane", {}).get("engineConfig", {}).get("toml")
    if "secret" in volume:
        secret = secrets.get(volume["secret"]["secretName"])
        if secret is None:  # the operator's own Secret
            return []
        data = secret.get("data", {})
        content = base64.b64decode(data[file_name]).decode() if file_name in data else None
    else:
        content = configmaps[volume["configMap"]["name"]]["data"].get(file_name)
    if content is None:
        return [f"NUDGE_CP_CONFIG={path}: the mounted volume has no key {file_name}"]
    problems = []
    if given is not None and content.rstrip("\n") != given.rstrip("\n"):
        problems.append(f"NUDGE_CP_CONFIG={path}: the mounted file differs from controlPlane.engineConfig.toml")
    try:
        tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        problems.append(f"NUDGE_CP_CONFIG={path}: not TOML: {error}")
    return problems


# ------------------------------------------------------------ the two modes

HOOK_DELETE_POLICY = {"before-hook-creation", "hook-succeeded"}
# The env entries the migration Job must share with the control plane pods.
DATABASE_ENV = re.compile(r"^(NUDGE_CP_DATABASE_|PGSSL)")


def majority(replicas: int) -> int:
    return replicas // 2 + 1


def scaled(value, replicas: int, round_up: bool) -> int:
    """An IntOrString of a PDB or rolling update against a replica count."""
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * replicas / 100
        return int(-(-exact // 1)) if round_up else int(exact)
    return int(value)


def component(doc_or_template: dict) -> str | None:
    return doc_or_template["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def check_modes(docs: list[tuple[str, dict]], values: dict) -> list[str]:
    """What each database mode promises, on the rendered objects: embedded,
    one StatefulSet replica with its PVC; PostgreSQL, a Deployment of
    replicas with no PVC, a PDB that keeps a majority, spread over nodes and
    zones, the HPA when asked, the migration hook Job with the pods'
    database settings, and the headless gRPC Service agents dial."""
    cp_values = values.get("controlPlane", {})
    if cp_values.get("enabled") is False:
        return []
    problems = []
    fullname = values.get("fullnameOverride") or RELEASE
    name = f"{fullname}-control-plane"
    postgres = bool(cp_values.get("databaseUrlSecret", {}).get("name"))
    autoscaling = cp_values.get("autoscaling", {})
    workloads = [d for _, d in docs if d["kind"] in {"Deployment", "StatefulSet"} and component(d) == "control-plane"]
    kinds = sorted(d["kind"] for d in workloads)
    jobs = by_kind(docs, "Job")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    claims = by_kind(docs, "PersistentVolumeClaim")

    if not postgres:
        if kinds != ["StatefulSet"]:
            return [f"embedded mode: control plane workloads {kinds}, not one StatefulSet"]
        workload = workloads[0]
        if workload["spec"].get("replicas") != 1:
            problems.append(f"embedded mode: StatefulSet replicas {workload['spec'].get('replicas')}, not 1")
        if [t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])] != ["data"]:
            problems.append("embedded mode: the StatefulSet claims no data volume for the SQLite file")
        if hpas or jobs:
            problems.append(f"embedded mode renders {len(hpas)} HorizontalPodAutoscaler(s) and {len(jobs)} Job(s)")
        return problems

    if kinds != ["Deployment"] or workloads[0]["metadata"]["name"] != name:
        return [f"PostgreSQL mode: control plane workloads {kinds}, not one Deployment {name}"]
    deployment = workloads[0]
    spec = deployment["spec"]
    template = spec["template"]
    pod = template["spec"]
    labels = template["metadata"]["labels"]
    container = next(c for c in pod["containers"] if c["name"] == "control-plane")

    # No volume that outlives the pod: the control plane is stateless here.
    if claims or spec.get("volumeClaimTemplates"):
        problems.append("PostgreSQL mode claims a PersistentVolumeClaim")
    problems += [f"PostgreSQL mode: the data dir's volume is {sorted(v)}, not an emptyDir"
                 for v in pod.get("volumes", []) if v["name"] == "data" and "emptyDir" not in v]

    # The replica count: the HPA's (no replicas field), or the value (default 3).
    if autoscaling.get("enabled"):
        if "replicas" in spec:
            problems.append("with the HorizontalPodAutoscaler the Deployment still sets replicas")
        replicas = int(autoscaling.get("minReplicas", 3))
        if len(hpas) != 1:
            problems.append(f"{len(hpas)} HorizontalPodAutoscalers, not 1")
        for hpa in hpas:
            hspec = hpa["spec"]
            target = hspec["scaleTargetRef"]
            if (hpa["apiVersion"], target.get("apiVersion"), target["kind"], target["name"]) != (
                    "autoscaling/v2", "apps/v1", "Deployment", name):
                problems.append(f"HorizontalPodAutoscaler {hpa['metadata']['name']} does not scale "
                                f"Deployment {name} through autoscaling/v2: {target}")
            if not hspec.get("minReplicas", 1) <= hspec["maxReplicas"]:
                problems.append("HorizontalPodAutoscaler: maxReplicas below minReplicas")
            if hspec.get("minReplicas") != replicas:
                problems.append(f"HorizontalPodAutoscaler minReplicas {hspec.get('minReplicas')}, values say {replicas}")
            cpu = [m for m in hspec.get("metrics", []) if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                   and m["resource"]["target"]["type"] == "Utilization"]
            if not cpu:
                problems.append("HorizontalPodAutoscaler has no CPU utilization target")
            if not container.get("resources", {}).get("requests", {}).get("cpu"):
                problems.append("CPU utilization needs resources.requests.cpu on the control plane container")
    else:
        wanted = cp_values.get("replicas")
        replicas = 3 if wanted in (None, "") else int(wanted)
        if spec.get("replicas") != replicas:
            problems.append(f"Deployment replicas {spec.get('replicas')}, not {replicas}")
        if hpas:
            problems.append("a HorizontalPodAutoscaler without controlPlane.autoscaling.enabled")

    # Rollouts and evictions keep a majority.
    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or scaled(rolling.get("maxSurge", "25%"), replicas, True) < 1:
        problems.append(f"Deployment strategy {strategy}: not a rolling update that adds a pod first")
    else:
        # The chart's default never runs below the count; one set in values
        # must still keep a majority.
        down = scaled(rolling.get("maxUnavailable", "25%"), replicas, False)
        floor = majority(replicas) if "rollingUpdate" in cp_values else replicas
        if replicas - down < floor:
            problems.append(f"Deployment rollingUpdate.maxUnavailable {rolling.get('maxUnavailable')}: a rollout "
                            f"runs with {replicas - down} of {replicas} replicas")
    budgets = [d for d in by_kind(docs, "PodDisruptionBudget") if matches(d["spec"]["selector"]["matchLabels"], labels)]
    if cp_values.get("podDisruptionBudget", {}).get("enabled", True):
        if len(budgets) != 1:
            problems.append(f"{len(budgets)} PodDisruptionBudgets select the control plane's pods, not 1")
        for budget in budgets:
            bspec = budget["spec"]
            if "minAvailable" in bspec:
                kept = scaled(bspec["minAvailable"], replicas, True)
            else:
                kept = replicas - scaled(bspec.get("maxUnavailable", 1), replicas, True)
            if replicas >= 3 and kept < majority(replicas):
                problems.append(f"PodDisruptionBudget keeps {kept} of {replicas} replicas, below a majority")

    # Spread over nodes (hard) and zones (soft), unless overridden.
    spread = pod.get("topologySpreadConstraints", [])
    own = cp_values.get("topologySpreadConstraints")
    if own:
        if spread != own:
            problems.append("controlPlane.topologySpreadConstraints are not used as given")
    elif cp_values.get("topologySpread", {}).get("enabled", True):
        wanted = {"kubernetes.io/hostname": "DoNotSchedule", "topology.kubernetes.io/zone": "ScheduleAnyway"}
        wanted.update({k: v for k, v in (
            ("kubernetes.io/hostname", cp_values.get("topologySpread", {}).get("nodes")),
            ("topology.kubernetes.io/zone", cp_values.get("topologySpread", {}).get("zones"))) if v is not None})
        found = {c["topologyKey"]: c["whenUnsatisfiable"] for c in spread}
        if found != {k: v for k, v in wanted.items() if v}:
            problems.append(f"topology spread {found}, not {wanted}")
        for constraint in spread:
            if not matches(constraint.get("labelSelector", {}).get("matchLabels"), labels):
                problems.append(f"topology spread on {constraint['topologyKey']} does not select the pods")
            if constraint.get("nodeTaintsPolicy") != "Honor":
                problems.append(f"topology spread on {constraint['topologyKey']}: a cordoned node would still count")

    # The migration hook Job: once per install/upgrade, as the pods would.
    if cp_values.get("migrations", {}).get("enabled", True):
        problems += check_migration_job(docs, jobs, pod, container)
    elif jobs:
        problems.append("a Job with controlPlane.migrations.enabled false")

    # The headless gRPC Service: ready replicas only, the pods' gRPC port.
    headless = [s for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    if [s["metadata"]["name"] for s in headless] != [f"{fullname}-grpc-headless"]:
        problems.append(f"headless Services {[s['metadata']['name'] for s in headless]}, not {fullname}-grpc-headless")
    for service in headless:
        if not matches(service["spec"]["selector"], labels):
            problems.append("the headless gRPC Service does not select the control plane's pods")
        if service["spec"].get("publishNotReadyAddresses"):
            problems.append("the headless gRPC Service publishes replicas that are not ready")
        if [p.get("targetPort") for p in service["spec"]["ports"]] != ["grpc"]:
            problems.append("the headless gRPC Service does not serve the gRPC port only")
    # The NetworkPolicy lets the replicas reach the database.
    for policy in by_kind(docs, "NetworkPolicy"):
        if matches(policy["spec"]["podSelector"].get("matchLabels"), labels):
            ports = cp_values.get("networkPolicy", {}).get("database", {}).get("ports", [5432])
            allowed = {p.get("port") for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}
            if not set(ports) <= allowed:
                problems.append(f"NetworkPolicy {policy['metadata']['name']}: no egress to the database ports {ports}")
    # The chart's own agents dial it when no address is given.
    domain = values.get("clusterDomain", "cluster.local")
    if not values.get("agent", {}).get("controlPlane"):
        for daemonset in by_kind(docs, "DaemonSet"):
            for agent in all_containers(daemonset["spec"]["template"]["spec"]):
                env = {e["name"]: e.get("value") for e in agent.get("env", [])}
                address = env.get("NUDGE_AGENT_CONTROL_PLANE")
                host = re.sub(r"^\w+://([^:/]+).*$", r"\1", address or "")
                if address is not None and host != f"{fullname}-grpc-headless.{NAMESPACE}.svc.{domain}":
                    problems.append(f"the agent DaemonSet ships to {address}, not the headless gRPC Service")
    return problems


def check_migration_job(docs, jobs, pod: dict, container: dict) -> list[str]:
    if len(jobs) != 1:
        return [f"{len(jobs)} Jobs, not the one migration Job"]
    job = jobs[0]
    where = f"Job {job['metadata']['name']}"
    problems = []
    annotations = job["metadata"].get("annotations", {})
    if set(annotations.get("helm.sh/hook", "").split(",")) != {"pre-install", "pre-upgrade"}:
        problems.append(f"{where}: helm.sh/hook {annotations.get('helm.sh/hook')!r}, not pre-install,pre-upgrade")
    if set(annotations.get("helm.sh/hook-delete-policy", "").split(",")) != HOOK_DELETE_POLICY:
        problems.append(f"{where}: hook-delete-policy {annotations.get('helm.sh/hook-delete-policy')!r}")
    jspec = job["spec"]
    for field in ("backoffLimit", "activeDeadlineSeconds"):
        if not isinstance(jspec.get(field), int) or jspec[field] <= 0:
            problems.append(f"{where}: {field} {jspec.get(field)!r}")
    template = jspec["template"]
    jpod = template["spec"]
    if jpod.get("restartPolicy") != "Never":
        problems.append(f"{where}: restartPolicy {jpod.get('restartPolicy')} (the Job's backoffLimit counts pods)")
    if len(jpod["containers"]) != 1:
        return problems + [f"{where}: {len(jpod['containers'])} containers"]
    migrate = jpod["containers"][0]
    if migrate.get("args") != ["migrate"] or migrate.get("command"):
        problems.append(f"{where}: runs {migrate.get('command')} {migrate.get('args')}, not the image's "
                        "nudge-control-plane with the argument migrate")
    if migrate["image"] != container["image"]:
        problems.append(f"{where}: image {migrate['image']}, the control plane runs {container['image']}")
    if migrate.get("securityContext") != container.get("securityContext") or \
            jpod.get("securityContext") != pod.get("securityContext"):
        problems.append(f"{where}: security context differs from the control plane's")
    def database_env(c):
        return {e["name"]: e for e in c.get("env", []) if DATABASE_ENV.match(e["name"])}
    if database_env(migrate) != database_env(container):
        problems.append(f"{where}: database settings {sorted(database_env(migrate))} differ from the pods' "
                        f"{sorted(database_env(container))}")
    if "NUDGE_CP_DATABASE_URL" not in database_env(migrate):
        problems.append(f"{where}: no NUDGE_CP_DATABASE_URL")
    ca = {e["value"] for e in container.get("env", []) if e["name"] == "PGSSLROOTCERT"}
    mounted = {m["mountPath"] for m in migrate.get("volumeMounts", [])}
    problems += [f"{where}: PGSSLROOTCERT {path} is not mounted" for path in ca if path.rsplit("/", 1)[0] not in mounted]
    # A hook runs before the release's other objects exist: its
    # ServiceAccount must be a hook too (or the operator's own).
    account = jpod.get("serviceAccountName", "default")
    for sa in by_kind(docs, "ServiceAccount"):
        if sa["metadata"]["name"] == account:
            hook = sa["metadata"].get("annotations", {})
            if "pre-install" not in hook.get("helm.sh/hook", "") or \
                    int(hook.get("helm.sh/hook-weight", 0)) >= int(annotations.get("helm.sh/hook-weight", 0)):
                problems.append(f"{where}: ServiceAccount {account} is not created before the hook runs")
    if any(matches(s["spec"].get("selector"), template["metadata"].get("labels", {})) for s in by_kind(docs, "Service")):
        problems.append(f"{where}: a Service selects the migration pod")
    return problems


# ------------------------------------------------------- program contract


def program_settings() -> dict[str, str | None]:
    """Every NUDGE_ variable of config.rs with its default (None: none)."""
    settings: dict[str, str | None] = {}
    for path in CONFIG_FILES:
        for attribute in re.findall(r"#\[arg\((.*?)\)\]\s*pub ", path.read_text(), re.S):
            env = re.search(r'env\s*=\s*"(NUDGE_[A-Z0-9_]+)"', attribute)
            if not env:
                continue
            default = re.search(r'default_value\s*=\s*"([^"]*)"', attribute)
            default_t = re.search(r"default_value_t\s*=\s*([^,\n]+?)\s*[,\n]", attribute + "\n")
            if default:
                settings[env.group(1)] = default.group(1)
            elif default_t:
                settings[env.group(1)] = rust_default(default_t.group(1).strip())
            else:
                settings[env.group(1)] = None
    return settings


def rust_default(expression: str) -> str:
    if re.fullmatch(r"[\d\s*_]+", expression):
        product = 1
        for factor in expression.split("*"):
            product *= int(factor.replace("_", ""))
        return str(product)
    variant = expression.rsplit("::", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "-", variant).lower()


def env_of(docs) -> dict[str, dict]:
    """NUDGE_ variables set by any container of any workload: name -> entry."""
    found = {}
    for _, template in pod_templates(docs):
        for container in all_containers(template["spec"]):
            for env in container.get("env", []):
                if env["name"].startswith("NUDGE_"):
                    found.setdefault(env["name"], env)
    return found


def contract(settings: dict, rendered_env: set[str], default_env: dict[str, dict]) -> list[tuple[str, list[str]]]:
    templates = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    read = set(settings)
    checks = [
        (
            "every variable the programs read is in the chart's templates",
            [f"{name} is not in helm/nudge/templates" for name in sorted(read) if name not in templates],
        ),
        (
            "every variable the programs read is set in some rendering",
            [f"{name} is set by no value set" for name in sorted(read - rendered_env)],
        ),
        (
            "every NUDGE_ variable the chart sets is read by a program",
            [f"{name} is read by neither program (typo, or a setting that was removed)"
             for name in sorted(rendered_env - read - PENDING)]
            + [f"{name} is read now: remove it from PENDING in helm/ci/check.py"
               for name in sorted(PENDING & read)],
        ),
    ]
    differences = []
    for name, default in sorted(settings.items()):
        if default is None or name in DELIBERATE:
            continue
        entry = default_env.get(name)
        if entry is None:
            differences.append(f"{name}: not set by the chart's defaults")
        elif entry.get("value") != default:
            differences.append(f"{name}: chart default {entry.get('value')!r}, program default {default!r}")
    checks.append(("the chart's defaults are the programs' defaults (DELIBERATE aside)", differences))
    return checks


def exported_metrics() -> set[str]:
    names = set()
    for directory in METRIC_SOURCES:
        for path in directory.rglob("*.rs"):
            names |= set(re.findall(r'"(nudge_(?:agent|cp)_[a-z0-9_]+)"', path.read_text()))
    return names


def unknown_metrics(text: str, exported: set[str]) -> set[str]:
    unknown = set()
    for name in re.findall(r"\bnudge_(?:agent|cp)_[a-z0-9_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in exported and base not in exported:
            unknown.add(name)
    return unknown


# ------------------------------------------------------------- Dockerfiles


def check_dockerfiles() -> list[str]:
    problems = []
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    packages, binaries = set(), set()
    for member in members:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        packages.add(manifest["package"]["name"])
        binaries |= {b["name"] for b in manifest.get("bin", [])}
    ignored = (ROOT / ".dockerignore").read_text().split()
    for required in ("target", ".venv", ".tools", ".git"):
        if not any(line.strip("/") == required for line in ignored):
            problems.append(f".dockerignore does not exclude {required}/")
    for dockerfile in (ROOT / "agent/Dockerfile", ROOT / "control-plane/Dockerfile"):
        text = dockerfile.read_text()
        name = dockerfile.relative_to(ROOT)
        stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
        if len(stages) < 2:
            problems.append(f"{name}: not multi-stage")
        for package in re.findall(r"cargo build[^\n]*?-p\s+(\S+)", text):
            if package not in packages:
                problems.append(f"{name}: builds unknown package {package}")
        if "--locked" not in text:
            problems.append(f"{name}: cargo build without --locked")
        for binary in re.findall(r"target/release/([A-Za-z0-9_-]+)", text):
            if binary not in binaries:
                problems.append(f"{name}: copies unknown binary {binary}")
        users = re.findall(r"^USER\s+(\S+)", text, re.M)
        if not users or users[-1] in ("root", "0", "0:0"):
            problems.append(f"{name}: the runtime stage does not run as a non-root user")
    return problems


# -------------------------------------------------------------------- main


def value_sets(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def with_dependencies(work: Path) -> Path:
    """The example chart with its file:// dependency resolved, as a user's
    `helm dependency update` would, in a copy so the tree stays clean."""
    shutil.copytree(CHART, work / "nudge")
    shutil.copytree(EXAMPLE, work / "examples" / EXAMPLE.name)
    example = work / "examples" / EXAMPLE.name
    helm.dependency_update(example)
    return example


def merge(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def main() -> int:
    started = time.monotonic()
    report = Report()
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not found: install the Debian package prometheus (scripts/test does)")
        return 1
    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk), kubernetes-validate "
          f"{kubernetes_validate.__version__} against Kubernetes {KUBE_VERSION} (strict)")

    settings = program_settings()
    rendered_env: set[str] = set()
    default_env: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nudge-helm-") as work:
        example = with_dependencies(Path(work))
        example_defaults = load_values(example / "values.yaml")
        runs = [(CHART, path, load_values(path), load_values(path)) for path in value_sets(CI)]
        runs += [
            (example, path, load_values(path), merge(example_defaults, load_values(path)))
            for path in value_sets(CI / "app-with-agent")
        ]
        for chart, path, values, effective in runs:
            label = f"{chart.name} {path.relative_to(HELM)}"
            report.check(f"{label}: helm lint --strict", lint(chart, values))
            try:
                docs = manifests(render(chart, values))
            except helm.HelmError as error:
                report.check(f"{label}: render", [str(error)])
                continue
            kinds = sorted({doc["kind"] for _, doc in docs})
            report.check(f"{label}: {len(docs)} manifests valid ({', '.join(kinds)})", validate_schemas(docs, promtool))
            report.check(f"{label}: selectors, ports, volumes, keys", cross_check(docs, effective))
            if chart == CHART:
                mode = "PostgreSQL" if effective.get("controlPlane", {}).get("databaseUrlSecret", {}).get("name") else "embedded"
                report.check(f"{label}: {mode} mode objects", check_modes(docs, effective))
            rendered_env |= set(env_of(docs))

        for chart, values, message in NEGATIVE:
            label = f"{chart.name} refuses {json.dumps(values, separators=(',', ':'))}"
            target = example if chart == EXAMPLE else chart
            try:
                render(target, values)
                problems = ["rendered without an error"]
            except helm.HelmError as error:
                problems = [] if message in str(error) else [f"wrong message: {error}"]
            report.check(label, problems)

    # Defaults: the control plane as installed, the agent as the DaemonSet
    # renders it with nothing else changed.
    default_env = env_of(manifests(render(CHART, {"agent": {"daemonset": {"enabled": True}}})))
    for name, problems in contract(settings, rendered_env, default_env):
        report.check(name, problems)

    exported = exported_metrics()
    sources = [CHART / "files/alerts.yaml", *sorted((CHART / "files/dashboards").glob("*.json"))]
    report.check(
        "alerts and dashboards use only exported metrics",
        [f"{p.relative_to(HELM)}: {sorted(u)}" for p in sources
         if (u := unknown_metrics(p.read_text(), exported) - PENDING_METRICS)]
        + [f"{name} is exported now: remove it from PENDING_METRICS in helm/ci/check.py"
           for name in sorted(PENDING_METRICS & exported)],
    )
    report.check("Dockerfiles build workspace packages and binaries, run as non-root", check_dockerfiles())

    print(f"helm/ci/check took {time.monotonic() - started:.1f}s")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
