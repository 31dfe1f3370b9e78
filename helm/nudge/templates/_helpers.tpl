{{/*
Names, labels and the small pieces every template shares. The agent's own
templates (sidecar, DaemonSet container) are in _agent.tpl.
*/}}

{{- define "nudge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Object names append "-grpc", "-http", "-admin",
"-headless" or "-agent", so it stays 48 characters at most.
*/}}
{{- define "nudge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nudge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; `component` is passed in the dict. */}}
{{- define "nudge.labels" -}}
helm.sh/chart: {{ include "nudge.chart" .root }}
{{ include "nudge.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: nudge
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nudge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nudge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "nudge.controlPlane.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (printf "%s-control-plane" (include "nudge.fullname" .)) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "nudge.image" -}}
{{- $tag := .image.tag | default .appVersion | toString }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The Secret that holds the admin token and (with engineConfig.inSecret) the
engine config file: one the operator manages, or the chart's own.
*/}}
{{- define "nudge.controlPlane.secretName" -}}
{{- .Values.controlPlane.existingSecret | default (printf "%s-control-plane" (include "nudge.fullname" .)) }}
{{- end }}

{{/* Whether the chart creates the control plane's Secret. */}}
{{- define "nudge.controlPlane.createSecret" -}}
{{- $cp := .Values.controlPlane }}
{{- if and (not $cp.existingSecret) (or $cp.adminToken $cp.userTokenSecret (and $cp.engineConfig.enabled $cp.engineConfig.inSecret)) }}true{{ end }}
{{- end }}

{{/* Whether NUDGE_CP_ADMIN_TOKEN is set (from a Secret). */}}
{{- define "nudge.controlPlane.hasAdminToken" -}}
{{- $cp := .Values.controlPlane }}
{{- if and $cp.adminTokenKey (or $cp.existingSecret $cp.adminToken) }}true{{ end }}
{{- end }}

{{/* Whether NUDGE_CP_USER_TOKEN_SECRET is read from a Secret. */}}
{{- define "nudge.controlPlane.hasUserTokenSecret" -}}
{{- $cp := .Values.controlPlane }}
{{- if and $cp.userTokenSecretKey (or $cp.existingSecret $cp.userTokenSecret) }}true{{ end }}
{{- end }}

{{/*
Whether the control plane runs on PostgreSQL (a URL Secret is named): then
it is a Deployment of stateless replicas; otherwise the embedded SQLite
StatefulSet of one replica.
*/}}
{{- define "nudge.controlPlane.postgres" -}}
{{- if .Values.controlPlane.databaseUrlSecret.name }}true{{ end }}
{{- end }}

{{/*
The number of control plane replicas: controlPlane.replicas, or when it is
empty 3 on PostgreSQL and 1 embedded.
*/}}
{{- define "nudge.controlPlane.replicas" -}}
{{- $replicas := .Values.controlPlane.replicas }}
{{- if or (kindIs "invalid" $replicas) (eq (toString $replicas) "") }}
{{- ternary 3 1 (eq (include "nudge.controlPlane.postgres" .) "true") }}
{{- else }}
{{- int $replicas }}
{{- end }}
{{- end }}

{{/*
The headless gRPC Service (PostgreSQL mode): its DNS name resolves to every
ready replica, which agents re-resolve and spread their batches over.
*/}}
{{- define "nudge.controlPlane.grpcHeadlessName" -}}
{{- printf "%s-grpc-headless" (include "nudge.fullname" .) }}
{{- end }}

{{/*
The gRPC address of this release's control plane, as agents use it: the
headless Service with PostgreSQL (every replica), the gRPC Service
otherwise (the one replica).
*/}}
{{- define "nudge.controlPlane.grpcAddress" -}}
{{- $scheme := ternary "https" "http" (and .Values.agent.tls.enabled true) }}
{{- $service := printf "%s-grpc" (include "nudge.fullname" .) }}
{{- if include "nudge.controlPlane.postgres" . }}
{{- $service = include "nudge.controlPlane.grpcHeadlessName" . }}
{{- end }}
{{- printf "%s://%s.%s.svc.%s:%v" $scheme $service .Release.Namespace .Values.clusterDomain .Values.controlPlane.ports.grpc }}
{{- end }}

{{/* Whether the chart renders cert-manager's Certificate for the control plane. */}}
{{- define "nudge.certManager.controlPlane" -}}
{{- $cm := .Values.certManager }}
{{- if and $cm.enabled $cm.controlPlane.enabled .Values.controlPlane.enabled }}true{{ end }}
{{- end }}

{{/* Whether the chart renders cert-manager's Certificate for the agent DaemonSet. */}}
{{- define "nudge.certManager.agent" -}}
{{- $cm := .Values.certManager }}
{{- if and $cm.enabled $cm.agent.enabled .Values.agent.daemonset.enabled }}true{{ end }}
{{- end }}

{{/*
The Secret controlPlane.tls mounts: tls.secretName, or
<fullname>-control-plane-tls (which the cert-manager Certificate writes, or
you create).
*/}}
{{- define "nudge.controlPlane.tlsSecretName" -}}
{{- if .Values.controlPlane.tls.secretName }}
{{- .Values.controlPlane.tls.secretName }}
{{- else }}
{{- printf "%s-control-plane-tls" (include "nudge.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret agent.tls mounts in the DaemonSet (likewise). */}}
{{- define "nudge.agent.tlsSecretName" -}}
{{- if .Values.agent.tls.secretName }}
{{- .Values.agent.tls.secretName }}
{{- else }}
{{- printf "%s-agent-tls" (include "nudge.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Checks of settings that would otherwise only fail once pods start.
*/}}
{{- define "nudge.validate" -}}
{{- $cp := .Values.controlPlane }}
{{- if and $cp.engineConfig.enabled (not $cp.existingSecret) (not $cp.engineConfig.toml) }}
{{- fail "controlPlane.engineConfig.enabled needs controlPlane.engineConfig.toml (the whole nudge.toml), or controlPlane.existingSecret holding it" }}
{{- end }}
{{- if and $cp.engineConfig.enabled $cp.existingSecret (not $cp.engineConfig.inSecret) (not $cp.engineConfig.toml) }}
{{- fail "controlPlane.engineConfig.inSecret=false puts the file in a ConfigMap: set controlPlane.engineConfig.toml" }}
{{- end }}
{{- /* Ingest is never open by default (README: "Authenticating agents"). */}}
{{- $mtls := and $cp.tls.enabled $cp.tls.clientCaKey }}
{{- $tokens := $cp.agentTokensSecret.name }}
{{- if and $cp.enabled (not $mtls) (not $tokens) (not $cp.grpcInsecureAllowUnauthenticated) }}
{{- fail "the control plane's gRPC port would take pushes from anyone: keep controlPlane.tls.enabled with controlPlane.tls.clientCaKey (mTLS), or set controlPlane.agentTokensSecret.name (agent tokens), or for local development only controlPlane.grpcInsecureAllowUnauthenticated=true" }}
{{- end }}
{{- if and $cp.enabled $cp.grpcInsecureAllowUnauthenticated (or $mtls $tokens) }}
{{- fail "controlPlane.grpcInsecureAllowUnauthenticated=true next to mTLS (controlPlane.tls.clientCaKey) or agent tokens (controlPlane.agentTokensSecret.name): the control plane refuses that; unset it" }}
{{- end }}
{{- $cm := .Values.certManager }}
{{- if $cm.enabled }}
{{- if not $cm.issuerRef.name }}
{{- fail "certManager.enabled needs certManager.issuerRef.name (the Issuer or ClusterIssuer that signs the certificates)" }}
{{- end }}
{{- if and (eq ($cm.issuerRef.group | default "cert-manager.io") "cert-manager.io") (not (has $cm.issuerRef.kind (list "Issuer" "ClusterIssuer"))) }}
{{- fail (printf "certManager.issuerRef.kind must be Issuer or ClusterIssuer (got %q)" $cm.issuerRef.kind) }}
{{- end }}
{{- if and (include "nudge.certManager.controlPlane" .) (not $cp.tls.enabled) }}
{{- fail "certManager.enabled needs controlPlane.tls.enabled: the control plane's certificate is only used with TLS on (or set certManager.controlPlane.enabled=false)" }}
{{- end }}
{{- if and (include "nudge.certManager.agent" .) (not .Values.agent.tls.enabled) }}
{{- fail "certManager.enabled with agent.daemonset.enabled needs agent.tls.enabled: the DaemonSet's client certificate is only used with TLS on (or set certManager.agent.enabled=false)" }}
{{- end }}
{{- if and (not (include "nudge.certManager.controlPlane" .)) (not (include "nudge.certManager.agent" .)) }}
{{- fail "certManager.enabled renders no Certificate here (no control plane, no agent DaemonSet): an application chart's sidecar needs its own Certificate (chart README, TLS)" }}
{{- end }}
{{- end }}
{{- $postgres := include "nudge.controlPlane.postgres" . }}
{{- $replicas := int (include "nudge.controlPlane.replicas" .) }}
{{- if and (not $postgres) (ne $replicas 1) }}
{{- fail (printf "controlPlane.replicas=%d needs PostgreSQL (controlPlane.databaseUrlSecret.name): the embedded SQLite file belongs to exactly one replica" $replicas) }}
{{- end }}
{{- if and $cp.autoscaling.enabled (not $postgres) }}
{{- fail "controlPlane.autoscaling.enabled needs PostgreSQL (controlPlane.databaseUrlSecret.name): the embedded SQLite file belongs to exactly one replica" }}
{{- end }}
{{- if $cp.autoscaling.enabled }}
{{- if lt (int $cp.autoscaling.maxReplicas) (int $cp.autoscaling.minReplicas) }}
{{- fail (printf "controlPlane.autoscaling.maxReplicas (%v) is below minReplicas (%v)" $cp.autoscaling.maxReplicas $cp.autoscaling.minReplicas) }}
{{- end }}
{{- end }}
{{- $pdb := $cp.podDisruptionBudget }}
{{- /* A number (not a percentage) of pods an eviction may take down. */}}
{{- $numeric := or (kindIs "float64" $pdb.maxUnavailable) (kindIs "int" $pdb.maxUnavailable) (kindIs "int64" $pdb.maxUnavailable) }}
{{- if and $postgres $pdb.enabled (not $cp.autoscaling.enabled) $numeric (ge $replicas 3) }}
{{- $down := int $pdb.maxUnavailable }}
{{- $majority := add (div $replicas 2) 1 }}
{{- if lt (sub $replicas $down) $majority }}
{{- fail (printf "controlPlane.podDisruptionBudget.maxUnavailable=%d lets evictions leave fewer than a majority (%d) of %d replicas: use at most %d" $down $majority $replicas (sub $replicas $majority)) }}
{{- end }}
{{- end }}
{{- if lt (int $cp.terminationGracePeriodSeconds) 30 }}
{{- fail "controlPlane.terminationGracePeriodSeconds must be at least 30: the control plane gives its drain up to 25 s after SIGTERM" }}
{{- end }}
{{- end }}
