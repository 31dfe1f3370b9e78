{{/*
The nudge-agent container, shared by the sidecar an application's chart
includes and by this chart's optional DaemonSet.

An application chart that depends on this chart (see
helm/examples/app-with-agent) adds the agent to its pod template with:

  containers:          # or initContainers: with agent.nativeSidecar=true
    {{- include "nudge.agentSidecar" (dict "root" $ "agent" .Values.nudge.agent) | nindent 8 }}
  volumes:
    {{- include "nudge.agentSidecarVolumes" (dict "root" $ "agent" .Values.nudge.agent) | nindent 8 }}

`agent` is this chart's `agent` values as the parent sees them
(`.Values.<dependency name>.agent`), defaults included. Every setting is an
environment variable of the agent (README, "Agent configuration").
*/}}

{{/*
The image tag when agent.image.tag is empty: this chart's appVersion, also
when the template is rendered from an application chart's context.
*/}}
{{- define "nudge.agent.appVersion" -}}
{{- $root := .root }}
{{- if eq $root.Chart.Name "nudge" }}
{{- $root.Chart.AppVersion }}
{{- else }}
{{- $found := "" }}
{{- range $name, $sub := ($root.Subcharts | default dict) }}
{{- if and (not $found) (eq $sub.Chart.Name "nudge") }}
{{- $found = $sub.Chart.AppVersion }}
{{- end }}
{{- end }}
{{- $found }}
{{- end }}
{{- end }}

{{/*
One container, as a map. dict keys: root, agent (the agent values), mode
("sidecar" or "daemonset"), defaultControlPlane (the address used when
agent.controlPlane is empty; only this chart's DaemonSet has one).
*/}}
{{- define "nudge.agent.container" -}}
{{- $agent := .agent }}
{{- $daemonset := eq .mode "daemonset" }}
{{- $controlPlane := $agent.controlPlane | default .defaultControlPlane }}
{{- if not $controlPlane }}
{{- fail "agent.controlPlane is required: the control plane's gRPC address, e.g. http://nudge-grpc-headless.nudge.svc.cluster.local:50051 for its replicas on PostgreSQL or http://nudge-grpc.nudge.svc.cluster.local:50051 embedded (https:// with agent.tls)" }}
{{- end }}
{{- if and $agent.tls.enabled (not $agent.tls.secretName) }}
{{- fail "agent.tls.enabled needs agent.tls.secretName (a Secret in the pod's namespace with the CA and the agent's client certificate and key)" }}
{{- end }}
{{- if and $agent.tls.enabled (hasPrefix "http://" $controlPlane) }}
{{- fail (printf "agent.tls.enabled needs an https:// agent.controlPlane (got %s): the agent refuses TLS settings on a plain-text address" $controlPlane) }}
{{- end }}
{{- $tag := $agent.image.tag | default (include "nudge.agent.appVersion" .) }}
{{- if not $tag }}
{{- fail "agent.image.tag is required when this chart is not a dependency named nudge" }}
{{- end }}
name: {{ $agent.containerName }}
image: {{ include "nudge.image" (dict "image" $agent.image "appVersion" $tag) | quote }}
imagePullPolicy: {{ $agent.image.pullPolicy }}
{{- if and (not $daemonset) $agent.nativeSidecar }}
# A native sidecar (Kubernetes 1.29+): starts before the application's
# containers and stops after them, so the application's last calls are
# still accepted and shipped.
restartPolicy: Always
{{- end }}
ports:
  - name: {{ $agent.portNames.intake }}
    containerPort: {{ $agent.ports.intake }}
    protocol: TCP
    {{- if and $daemonset $agent.daemonset.hostPort }}
    hostPort: {{ $agent.daemonset.hostPort }}
    {{- end }}
  - name: {{ $agent.portNames.admin }}
    containerPort: {{ $agent.ports.admin }}
    protocol: TCP
env:
  # Intake: loopback for a sidecar (only the pod's own containers reach it);
  # every interface for the DaemonSet (the node's pods reach it).
  - name: NUDGE_AGENT_LISTEN
    value: {{ printf "%s:%v" (ternary "0.0.0.0" "127.0.0.1" $daemonset) $agent.ports.intake | quote }}
  - name: NUDGE_AGENT_ADMIN_LISTEN
    value: {{ printf "0.0.0.0:%v" $agent.ports.admin | quote }}
  - name: NUDGE_AGENT_DATA_DIR
    value: {{ $agent.outbox.mountPath | quote }}
  - name: NUDGE_AGENT_CONTROL_PLANE
    value: {{ $controlPlane | quote }}
  - name: NUDGE_AGENT_ID
    {{- if $agent.id }}
    value: {{ $agent.id | quote }}
    {{- else }}
    valueFrom:
      fieldRef:
        # The outbox outlives a DaemonSet pod on its node, so the node names
        # the agent there; a sidecar is its pod.
        fieldPath: {{ ternary "spec.nodeName" "metadata.name" $daemonset }}
    {{- end }}
  - name: NUDGE_AGENT_WRITE_KEYS
    {{- if $agent.writeKeysSecret.name }}
    valueFrom:
      secretKeyRef:
        name: {{ $agent.writeKeysSecret.name }}
        key: {{ $agent.writeKeysSecret.key }}
    {{- else }}
    value: {{ join "," $agent.writeKeys | quote }}
    {{- end }}
  {{- if $agent.serverKeysSecret.name }}
  # Secret keys that may notify and set contact traits (README, "Security
  # model: browsers and servers").
  - name: NUDGE_AGENT_SERVER_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ $agent.serverKeysSecret.name }}
        key: {{ $agent.serverKeysSecret.key }}
  {{- end }}
  - name: NUDGE_AGENT_CORS_ORIGINS
    value: {{ join "," $agent.corsOrigins | quote }}
  - name: NUDGE_AGENT_MAX_OUTBOX_BYTES
    value: {{ $agent.maxOutboxBytes | quote }}
  - name: NUDGE_AGENT_DURABILITY
    value: {{ $agent.durability | quote }}
  {{- with $agent.segmentBytes }}
  - name: NUDGE_AGENT_SEGMENT_BYTES
    value: {{ . | quote }}
  {{- end }}
  - name: NUDGE_AGENT_CACHE_BYTES
    value: {{ $agent.cacheBytes | quote }}
  - name: NUDGE_AGENT_BATCH_MAX_EVENTS
    value: {{ $agent.batchMaxEvents | quote }}
  - name: NUDGE_AGENT_BATCH_MAX_BYTES
    value: {{ $agent.batchMaxBytes | quote }}
  - name: NUDGE_AGENT_SHIP_CONCURRENCY
    value: {{ $agent.shipConcurrency | quote }}
  - name: NUDGE_AGENT_BATCH_LINGER
    value: {{ $agent.batchLinger | quote }}
  - name: NUDGE_AGENT_RETRY_INITIAL
    value: {{ $agent.retryInitial | quote }}
  - name: NUDGE_AGENT_RETRY_MAX
    value: {{ $agent.retryMax | quote }}
  - name: NUDGE_AGENT_RESOLVE_INTERVAL
    value: {{ $agent.resolveInterval | quote }}
  - name: NUDGE_AGENT_SHIP_TIMEOUT
    value: {{ $agent.shipTimeout | quote }}
  - name: NUDGE_AGENT_SHUTDOWN_GRACE
    value: {{ $agent.shutdownGrace | quote }}
  - name: NUDGE_AGENT_RETRY_AFTER
    value: {{ $agent.retryAfter | quote }}
  - name: NUDGE_AGENT_LOG_FORMAT
    value: {{ $agent.logFormat | quote }}
  - name: RUST_LOG
    value: {{ $agent.rustLog | quote }}
  {{- with $agent.controlPlaneToken }}
  {{- if .secretName }}
  # The agent token sent on every push.
  {{- if .asFile }}
  - name: NUDGE_AGENT_CONTROL_PLANE_TOKEN_FILE
    value: {{ printf "%s/%s" .mountPath .key | quote }}
  {{- else }}
  - name: NUDGE_AGENT_CONTROL_PLANE_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .secretName | quote }}
        key: {{ .key | quote }}
  {{- end }}
  {{- end }}
  {{- end }}
  - name: NUDGE_AGENT_TLS_RELOAD_INTERVAL
    value: {{ $agent.tls.reloadInterval | quote }}
  {{- if $agent.tls.enabled }}
  # mTLS to the control plane (files from agent.tls.secretName).
  {{- if $agent.tls.caKey }}
  - name: NUDGE_AGENT_TLS_CA
    value: {{ printf "%s/%s" $agent.tls.mountPath $agent.tls.caKey | quote }}
  {{- end }}
  {{- with $agent.tls.serverName }}
  - name: NUDGE_AGENT_TLS_SERVER_NAME
    value: {{ . | quote }}
  {{- end }}
  {{- if $agent.tls.certKey }}
  - name: NUDGE_AGENT_TLS_CERT
    value: {{ printf "%s/%s" $agent.tls.mountPath $agent.tls.certKey | quote }}
  - name: NUDGE_AGENT_TLS_KEY
    value: {{ printf "%s/%s" $agent.tls.mountPath $agent.tls.keyKey | quote }}
  {{- end }}
  {{- end }}
  {{- with $agent.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $agent.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $agent.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $agent.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
resources:
  {{- toYaml $agent.resources | nindent 2 }}
securityContext:
  {{- toYaml $agent.securityContext | nindent 2 }}
volumeMounts:
  - name: {{ $agent.outbox.volumeName }}
    mountPath: {{ $agent.outbox.mountPath }}
  {{- if $agent.tls.enabled }}
  - name: {{ $agent.tls.volumeName }}
    mountPath: {{ $agent.tls.mountPath }}
    readOnly: true
  {{- end }}
  {{- if and $agent.controlPlaneToken.secretName $agent.controlPlaneToken.asFile }}
  # A directory, not a subPath: a rotated Secret reaches the file.
  - name: {{ $agent.controlPlaneToken.volumeName }}
    mountPath: {{ $agent.controlPlaneToken.mountPath }}
    readOnly: true
  {{- end }}
  {{- with $agent.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The sidecar container as one list item (for containers or initContainers). */}}
{{- define "nudge.agentSidecar" -}}
- {{ include "nudge.agent.container" (dict "root" .root "agent" .agent "mode" "sidecar" "defaultControlPlane" "") | nindent 2 | trim }}
{{- end }}

{{/*
The sidecar's volumes as list items: the outbox (agent.outbox.volume, an
emptyDir unless set: see the chart README on durability) and, with
agent.tls, the certificate Secret. With "outboxFromClaimTemplate" true in
the dict the outbox is left out: a StatefulSet's volumeClaimTemplates
entry named agent.outbox.volumeName provides it.
*/}}
{{- define "nudge.agentSidecarVolumes" -}}
{{- $agent := .agent -}}
{{- if not .outboxFromClaimTemplate }}
- name: {{ $agent.outbox.volumeName }}
  {{- toYaml $agent.outbox.volume | nindent 2 }}
{{- end }}
{{- if $agent.tls.enabled }}
- name: {{ $agent.tls.volumeName }}
  secret:
    secretName: {{ $agent.tls.secretName }}
    # Readable by the agent's user whatever the pod's fsGroup.
    defaultMode: 0444
{{- end }}
{{- include "nudge.agentTokenVolume" $agent }}
{{- end }}

{{/* The agent token's Secret as a volume (agent.controlPlaneToken, asFile). */}}
{{- define "nudge.agentTokenVolume" -}}
{{- with .controlPlaneToken }}
{{- if and .secretName .asFile }}
- name: {{ .volumeName }}
  secret:
    secretName: {{ .secretName | quote }}
    items:
      - key: {{ .key | quote }}
        path: {{ .key | quote }}
    defaultMode: 0444
{{- end }}
{{- end }}
{{- end }}

{{/*
The label that lets agent pods through the control plane's NetworkPolicy
(controlPlane.networkPolicy.grpcFrom): add it to the pod template's labels.
*/}}
{{- define "nudge.agentPodLabels" -}}
{{ .agent.podLabelKey }}: "true"
{{- end }}
