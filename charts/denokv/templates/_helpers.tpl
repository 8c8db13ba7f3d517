{{/* Names ---------------------------------------------------------------- */}}

{{- define "denokv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "denokv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Object names: at most 63 characters including the suffix. */}}
{{- define "denokv.primaryName" -}}{{ include "denokv.fullname" . | trunc 55 | trimSuffix "-" }}{{- end -}}
{{- define "denokv.headlessName" -}}{{ include "denokv.fullname" . | trunc 54 | trimSuffix "-" }}-headless{{- end -}}
{{- define "denokv.readName" -}}{{ include "denokv.fullname" . | trunc 58 | trimSuffix "-" }}-read{{- end -}}
{{- define "denokv.replicaName" -}}{{ include "denokv.fullname" . | trunc 55 | trimSuffix "-" }}-replica{{- end -}}
{{- define "denokv.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "denokv.fullname" . -}}
{{- end -}}
{{- end -}}
{{- define "denokv.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "denokv.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------- */}}

{{- define "denokv.selectorLabels" -}}
app.kubernetes.io/name: {{ include "denokv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "denokv.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "denokv.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: denokv
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "primary"). */}}
{{- define "denokv.componentLabels" -}}
{{ include "denokv.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "denokv.componentSelectorLabels" -}}
{{ include "denokv.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image and paths ------------------------------------------------------ */}}

{{- define "denokv.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "denokv.secretsDir" -}}/etc/denokv/secrets{{- end -}}
{{- define "denokv.primaryDb" -}}/data/denokv.sqlite{{- end -}}
{{- define "denokv.replicaDb" -}}/data/replica.sqlite{{- end -}}

{{- define "denokv.primaryUrl" -}}
{{- printf "http://%s.%s.svc.%s:%v" (include "denokv.primaryName" .) .Release.Namespace .Values.clusterDomain .Values.server.port -}}
{{- end -}}

{{/* Guards: every combination that cannot work fails the render. ---------- */}}

{{- define "denokv.validate" -}}
{{- $s3 := .Values.backup.s3 -}}
{{- if not .Values.secrets.existingSecret -}}
  {{- if not .Values.auth.accessToken -}}
    {{- fail "auth.accessToken is required (at least 12 characters, e.g. `openssl rand -base64 24`), or set secrets.existingSecret to a Secret holding it" -}}
  {{- end -}}
{{- else -}}
  {{- if or .Values.auth.accessToken $s3.accessKeyId $s3.secretAccessKey -}}
    {{- fail "secrets.existingSecret is set: leave auth.accessToken, backup.s3.accessKeyId and backup.s3.secretAccessKey empty (they would be ignored)" -}}
  {{- end -}}
{{- end -}}
{{- if and .Values.replicas.enabled (not .Values.backup.enabled) -}}
  {{- fail "replicas.enabled needs backup.enabled: replicas follow the primary's S3 backup (set backup.enabled=true and backup.s3.bucket)" -}}
{{- end -}}
{{- if .Values.backup.enabled -}}
  {{- $_ := required "backup.s3.bucket is required when backup.enabled (replicas and restore read the same bucket)" $s3.bucket -}}
  {{- if and (not .Values.secrets.existingSecret) (not $s3.ambientCredentials) -}}
    {{- if not (and $s3.accessKeyId $s3.secretAccessKey) -}}
      {{- fail "backup needs S3 credentials: set backup.s3.accessKeyId and backup.s3.secretAccessKey, or secrets.existingSecret, or backup.s3.ambientCredentials=true (IRSA / workload identity)" -}}
    {{- end -}}
  {{- end -}}
  {{- if and $s3.ambientCredentials (or $s3.accessKeyId $s3.secretAccessKey) -}}
    {{- fail "backup.s3.ambientCredentials=true: leave backup.s3.accessKeyId and backup.s3.secretAccessKey empty" -}}
  {{- end -}}
{{- else -}}
  {{- if or $s3.accessKeyId $s3.secretAccessKey -}}
    {{- fail "backup.s3 credentials are set but backup.enabled is false" -}}
  {{- end -}}
{{- end -}}
{{- if and .Values.primary.readOnly .Values.backup.enabled -}}
  {{- fail "primary.readOnly cannot ship backups: disable backup.enabled or primary.readOnly" -}}
{{- end -}}
{{- if and .Values.primary.persistence.existingClaim (not .Values.primary.persistence.enabled) -}}
  {{- fail "primary.persistence.existingClaim needs primary.persistence.enabled=true" -}}
{{- end -}}
{{- if and .Values.metrics.separatePort (eq (int .Values.metrics.port) (int .Values.server.port)) -}}
  {{- fail "metrics.port must differ from server.port when metrics.separatePort is set" -}}
{{- end -}}
{{- end -}}

{{/* Whether the pods need S3 credentials from a Secret. */}}
{{- define "denokv.s3Secret" -}}
{{- if and .Values.backup.enabled (not .Values.backup.s3.ambientCredentials) -}}true{{- end -}}
{{- end -}}

{{/* Container pieces ----------------------------------------------------- */}}

{{/* S3 location flags, identical for serve, replica and restore. */}}
{{- define "denokv.s3Args" -}}
{{- $s3 := .Values.backup.s3 -}}
- --s3-bucket
- {{ $s3.bucket | quote }}
- --s3-prefix
- {{ $s3.prefix | quote }}
{{- if $s3.endpoint }}
- --s3-endpoint
- {{ $s3.endpoint | quote }}
{{- end }}
{{- if $s3.region }}
- --s3-region
- {{ $s3.region | quote }}
{{- end }}
{{- if $s3.forcePathStyle }}
- --s3-force-path-style
{{- end }}
{{- end -}}

{{/* Flags of `serve` shared by the primary and the replicas. */}}
{{- define "denokv.serveArgs" -}}
- --addr
- {{ printf "0.0.0.0:%v" .Values.server.port | quote }}
- --num-workers
- {{ .Values.server.numWorkers | quote }}
- --http-server
- {{ .Values.server.httpServer | quote }}
- --sqlite-synchronous
- {{ .Values.server.sqliteSynchronous | quote }}
{{- if eq .Values.secrets.mode "file" }}
- --access-token-file
- {{ printf "%s/access-token" (include "denokv.secretsDir" .) | quote }}
{{- end }}
{{- if .Values.metrics.separatePort }}
- --metrics-addr
- {{ printf "0.0.0.0:%v" .Values.metrics.port | quote }}
{{- end }}
{{- end -}}

{{/* Environment: (dict "ctx" $ "token" true|false). */}}
{{- define "denokv.env" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $secret := include "denokv.secretName" $ctx -}}
- name: DENO_KV_LOG
  value: {{ $v.server.logLevel | quote }}
{{- if and .token (eq $v.secrets.mode "env") }}
- name: DENO_KV_ACCESS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.accessToken }}
{{- end }}
{{- if $v.backup.enabled }}
{{- if include "denokv.s3Secret" $ctx }}
{{- if eq $v.secrets.mode "env" }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.awsAccessKeyId }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.awsSecretAccessKey }}
{{- else }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: {{ printf "%s/aws-credentials" (include "denokv.secretsDir" $ctx) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volume mounts of every container: (dict "ctx" $ "token" bool). */}}
{{- define "denokv.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- if and (eq .ctx.Values.secrets.mode "file") (or .token (include "denokv.s3Secret" .ctx)) }}
- name: secrets
  mountPath: {{ include "denokv.secretsDir" .ctx }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes shared by every pod (data is added per workload). */}}
{{- define "denokv.commonVolumes" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if eq .Values.secrets.mode "file" }}
- name: secrets
  secret:
    secretName: {{ include "denokv.secretName" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secrets.keys.accessToken }}
        path: access-token
      {{- if include "denokv.s3Secret" . }}
      - key: {{ .Values.secrets.keys.awsCredentialsFile }}
        path: aws-credentials
      {{- end }}
{{- end }}
{{- end -}}

{{- define "denokv.ports" -}}
- name: http
  containerPort: {{ .Values.server.port }}
  protocol: TCP
{{- if .Values.metrics.separatePort }}
- name: metrics
  containerPort: {{ .Values.metrics.port }}
  protocol: TCP
{{- end }}
{{- end -}}

{{- define "denokv.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}

{{/* Pod-level settings shared by both workloads: (dict "ctx" $ "pod" .Values.primary). */}}
{{- define "denokv.podSpecCommon" -}}
{{- $v := .ctx.Values -}}
serviceAccountName: {{ include "denokv.serviceAccountName" .ctx }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .pod.terminationGracePeriodSeconds }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod annotations: a checksum of the rendered Secret restarts pods when it changes. */}}
{{- define "denokv.podAnnotations" -}}
{{- $a := dict -}}
{{- if not .ctx.Values.secrets.existingSecret -}}
{{- $_ := set $a "checksum/secret" (include (print .ctx.Template.BasePath "/secret.yaml") .ctx | sha256sum) -}}
{{- end -}}
{{- $a = merge $a (.pod.podAnnotations | default dict) -}}
{{- if $a }}{{ toYaml $a }}{{ end -}}
{{- end -}}

{{/* The S3 port(s) egress must allow. */}}
{{- define "denokv.s3Ports" -}}
{{- if .Values.networkPolicy.egress.s3Ports -}}
{{- join "," .Values.networkPolicy.egress.s3Ports -}}
{{- else if .Values.backup.s3.endpoint -}}
{{- $u := urlParse .Values.backup.s3.endpoint -}}
{{- $hostport := splitList ":" $u.host -}}
{{- if gt (len $hostport) 1 -}}
{{- last $hostport -}}
{{- else if eq $u.scheme "http" -}}
80
{{- else -}}
443
{{- end -}}
{{- else -}}
443
{{- end -}}
{{- end -}}
