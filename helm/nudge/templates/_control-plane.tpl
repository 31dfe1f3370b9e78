{{/*
The control plane's pod, shared by its two workloads: the StatefulSet of
the embedded (SQLite) mode and the Deployment of the PostgreSQL mode
(statefulset.yaml, deployment.yaml), and the database settings the
migration Job (migrate-job.yaml) shares with them.
*/}}

{{/*
The database settings (env entries) of the control plane and of the
migration Job: the URL from its Secret, the pool, the connect timeout and
libpq's TLS variables (read by sqlx; the URL's own sslmode / sslrootcert
win over them).
*/}}
{{- define "nudge.controlPlane.databaseEnv" -}}
{{- $cp := .Values.controlPlane }}
{{- if $cp.databaseUrlSecret.name }}
- name: NUDGE_CP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $cp.databaseUrlSecret.name | quote }}
      key: {{ $cp.databaseUrlSecret.key | quote }}
{{- end }}
- name: NUDGE_CP_DATABASE_POOL_SIZE
  value: {{ $cp.databasePoolSize | int | quote }}
- name: NUDGE_CP_DATABASE_CONNECT_TIMEOUT
  value: {{ $cp.databaseConnectTimeout | quote }}
{{- if include "nudge.controlPlane.postgres" . }}
{{- with $cp.databaseTls.sslMode }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if $cp.databaseTls.caSecret.name }}
- name: PGSSLROOTCERT
  value: {{ printf "%s/%s" $cp.databaseTls.mountPath $cp.databaseTls.caSecret.key | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The volume with the database server's CA (PostgreSQL with databaseTls.caSecret). */}}
{{- define "nudge.controlPlane.databaseCaVolume" -}}
{{- $tls := .Values.controlPlane.databaseTls }}
{{- if and (include "nudge.controlPlane.postgres" .) $tls.caSecret.name }}
- name: {{ $tls.volumeName }}
  secret:
    secretName: {{ $tls.caSecret.name | quote }}
    # Only the CA: a CloudNativePG <cluster>-ca Secret also holds the CA's key.
    items:
      - key: {{ $tls.caSecret.key | quote }}
        path: {{ $tls.caSecret.key | quote }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "nudge.controlPlane.databaseCaMount" -}}
{{- $tls := .Values.controlPlane.databaseTls }}
{{- if and (include "nudge.controlPlane.postgres" .) $tls.caSecret.name }}
- name: {{ $tls.volumeName }}
  mountPath: {{ $tls.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The default spread of the Deployment's replicas (controlPlane.topologySpread):
over nodes as a hard constraint, over zones as a soft one. Only nodes the pods
may be scheduled on count (nodeTaintsPolicy: Honor), so a cordoned or lost
node does not block the replacement of its pod; matchLabelKeys spreads each
rollout's new pods on their own.
*/}}
{{- define "nudge.controlPlane.defaultTopologySpread" -}}
{{- $spread := .Values.controlPlane.topologySpread }}
{{- $ctx := dict "root" . "component" "control-plane" }}
{{- range $key, $when := dict "kubernetes.io/hostname" $spread.nodes "topology.kubernetes.io/zone" $spread.zones }}
{{- if $when }}
- maxSkew: {{ $spread.maxSkew }}
  topologyKey: {{ $key }}
  whenUnsatisfiable: {{ $when }}
  nodeTaintsPolicy: Honor
  matchLabelKeys: [pod-template-hash]
  labelSelector:
    matchLabels:
      {{- include "nudge.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The control plane's pod template. dict keys: root, deployment (true: the
PostgreSQL Deployment, whose data dir is an emptyDir and whose replicas are
spread; false: the StatefulSet, whose data dir is its PVC "data").
*/}}
{{- define "nudge.controlPlane.podTemplate" -}}
{{- $root := .root }}
{{- $cp := $root.Values.controlPlane }}
{{- $ctx := dict "root" $root "component" "control-plane" }}
metadata:
  labels:
    {{- include "nudge.labels" $ctx | nindent 4 }}
    {{- with $cp.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # A changed engine config or token restarts the pod: the
    # control plane reads them at start only.
    checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
    checksum/engine-config: {{ include (print $root.Template.BasePath "/configmap-engine.yaml") $root | sha256sum }}
    {{- with $cp.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "nudge.controlPlane.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $cp.automountServiceAccountToken }}
  terminationGracePeriodSeconds: {{ $cp.terminationGracePeriodSeconds }}
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cp.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $cp.podSecurityContext | nindent 4 }}
  containers:
    - name: control-plane
      image: {{ include "nudge.image" (dict "image" $cp.image "appVersion" $root.Chart.AppVersion) | quote }}
      imagePullPolicy: {{ $cp.image.pullPolicy }}
      ports:
        - name: grpc
          containerPort: {{ $cp.ports.grpc }}
          protocol: TCP
        - name: http
          containerPort: {{ $cp.ports.http }}
          protocol: TCP
        - name: admin
          containerPort: {{ $cp.ports.admin }}
          protocol: TCP
      env:
        - name: NUDGE_CP_GRPC_LISTEN
          value: {{ printf "0.0.0.0:%v" $cp.ports.grpc | quote }}
        - name: NUDGE_CP_HTTP_LISTEN
          value: {{ printf "0.0.0.0:%v" $cp.ports.http | quote }}
        - name: NUDGE_CP_ADMIN_LISTEN
          value: {{ printf "0.0.0.0:%v" $cp.ports.admin | quote }}
        - name: NUDGE_CP_DATA_DIR
          value: {{ printf "%s/control-plane" $cp.persistence.mountPath | quote }}
        - name: NUDGE_CP_DEDUPE_WINDOW
          value: {{ $cp.dedupeWindow | quote }}
        - name: NUDGE_CP_LEASE_TTL
          value: {{ $cp.leaseTtl | quote }}
        - name: NUDGE_CP_DELIVERY_CLAIM_TTL
          value: {{ $cp.deliveryClaimTtl | quote }}
        # The pod's name: which replica holds which lease reads plainly.
        - name: NUDGE_CP_REPLICA_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- include "nudge.controlPlane.databaseEnv" $root | trim | nindent 8 }}
        - name: NUDGE_CP_MAX_DEVICES_PER_USER
          value: {{ $cp.maxDevicesPerUser | int | quote }}
        - name: NUDGE_CP_LIVE_MAX_STREAMS_PER_USER
          value: {{ $cp.liveMaxStreamsPerUser | int | quote }}
        - name: NUDGE_CP_LIVE_MAX_STREAMS
          value: {{ $cp.liveMaxStreams | int | quote }}
        - name: NUDGE_CP_LOG_FORMAT
          value: {{ $cp.logFormat | quote }}
        - name: RUST_LOG
          value: {{ $cp.rustLog | quote }}
        {{- if include "nudge.controlPlane.hasAdminToken" $root }}
        - name: NUDGE_CP_ADMIN_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ include "nudge.controlPlane.secretName" $root }}
              key: {{ $cp.adminTokenKey }}
        {{- end }}
        {{- if include "nudge.controlPlane.hasUserTokenSecret" $root }}
        - name: NUDGE_CP_USER_TOKEN_SECRET
          valueFrom:
            secretKeyRef:
              name: {{ include "nudge.controlPlane.secretName" $root }}
              key: {{ $cp.userTokenSecretKey }}
              # Optional in an existing Secret: without it the browser API stays off.
              optional: {{ not (empty $cp.existingSecret) }}
        {{- end }}
        {{- with $cp.userTokenAudience }}
        - name: NUDGE_CP_USER_TOKEN_AUDIENCE
          value: {{ . | quote }}
        {{- end }}
        {{- with $cp.userTokenIssuer }}
        - name: NUDGE_CP_USER_TOKEN_ISSUER
          value: {{ . | quote }}
        {{- end }}
        - name: NUDGE_CP_USER_TOKEN_MAX_LIFETIME
          value: {{ $cp.userTokenMaxLifetime | quote }}
        {{- if $cp.engineConfig.enabled }}
        - name: NUDGE_CP_CONFIG
          value: {{ printf "%s/%s" $cp.engineConfig.mountPath $cp.engineConfig.fileName | quote }}
        {{- end }}
        {{- if $cp.agentTokensSecret.name }}
        # Agent tokens Ingest accepts (README: "Authenticating agents").
        - name: NUDGE_CP_AGENT_TOKENS
          valueFrom:
            secretKeyRef:
              name: {{ $cp.agentTokensSecret.name | quote }}
              key: {{ $cp.agentTokensSecret.key | quote }}
        {{- end }}
        - name: NUDGE_CP_GRPC_INSECURE_ALLOW_UNAUTHENTICATED
          value: {{ $cp.grpcInsecureAllowUnauthenticated | toString | quote }}
        - name: NUDGE_CP_TLS_RELOAD_INTERVAL
          value: {{ $cp.tls.reloadInterval | quote }}
        {{- if $cp.tls.enabled }}
        # TLS on the gRPC listener (files from the Secret controlPlane.tls mounts).
        - name: NUDGE_CP_TLS_CERT
          value: {{ printf "%s/%s" $cp.tls.mountPath $cp.tls.certKey | quote }}
        - name: NUDGE_CP_TLS_KEY
          value: {{ printf "%s/%s" $cp.tls.mountPath $cp.tls.keyKey | quote }}
        {{- if $cp.tls.clientCaKey }}
        - name: NUDGE_CP_TLS_CLIENT_CA
          value: {{ printf "%s/%s" $cp.tls.mountPath $cp.tls.clientCaKey | quote }}
        {{- end }}
        {{- end }}
        {{- with $cp.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $cp.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cp.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cp.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $cp.resources | nindent 8 }}
      securityContext:
        {{- toYaml $cp.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ $cp.persistence.mountPath }}
        - name: tmp
          mountPath: /tmp
        {{- if $cp.engineConfig.enabled }}
        - name: engine-config
          mountPath: {{ $cp.engineConfig.mountPath }}
          readOnly: true
        {{- end }}
        {{- if $cp.tls.enabled }}
        - name: {{ $cp.tls.volumeName }}
          mountPath: {{ $cp.tls.mountPath }}
          readOnly: true
        {{- end }}
        {{- with include "nudge.controlPlane.databaseCaMount" $root | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $cp.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    {{- if .deployment }}
    # Nothing is kept in the data dir with PostgreSQL: a scratch directory
    # for NUDGE_CP_DATA_DIR, gone with the pod.
    - name: data
      emptyDir:
        sizeLimit: {{ $cp.dataDirSizeLimit }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $cp.engineConfig.enabled }}
    - name: engine-config
      {{- if $cp.engineConfig.inSecret }}
      secret:
        secretName: {{ include "nudge.controlPlane.secretName" $root }}
        defaultMode: 0440
      {{- else }}
      configMap:
        name: {{ include "nudge.fullname" $root }}-engine-config
      {{- end }}
    {{- end }}
    {{- if $cp.tls.enabled }}
    - name: {{ $cp.tls.volumeName }}
      secret:
        secretName: {{ include "nudge.controlPlane.tlsSecretName" $root }}
        defaultMode: 0440
    {{- end }}
    {{- with include "nudge.controlPlane.databaseCaVolume" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- with $cp.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $cp.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cp.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $cp.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $cp.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml $cp.topologySpreadConstraints | nindent 4 }}
  {{- else if and .deployment $cp.topologySpread.enabled }}
  topologySpreadConstraints:
    {{- include "nudge.controlPlane.defaultTopologySpread" $root | trim | nindent 4 }}
  {{- end }}
{{- end }}
