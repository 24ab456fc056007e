{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "chatgroupd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-name, unless the release name already contains the chart name. */}}
{{- define "chatgroupd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chatgroupd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "chatgroupd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatgroupd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chatgroupd.labels" -}}
helm.sh/chart: {{ include "chatgroupd.chart" . }}
{{ include "chatgroupd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatgroupd
{{- end }}

{{- define "chatgroupd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatgroupd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chatgroupd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the IM secret key. */}}
{{- define "chatgroupd.secretKeySecret" -}}
{{- default (include "chatgroupd.fullname" .) .Values.secretKey.existingSecret }}
{{- end }}

{{/* Name of the Secret holding the SASL password. */}}
{{- define "chatgroupd.saslSecret" -}}
{{- default (include "chatgroupd.fullname" .) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{/* True ("true") when the chart must render its own Secret. */}}
{{- define "chatgroupd.createSecret" -}}
{{- $key := and .Values.secretKey.create (not .Values.secretKey.existingSecret) }}
{{- $sasl := and .Values.kafka.sasl.password (not .Values.kafka.sasl.existingSecret) }}
{{- if or $key $sasl }}true{{ end }}
{{- end }}

{{/* The SDKAppID as digits: YAML gives a large unquoted number to templates as a float. */}}
{{- define "chatgroupd.sdkappid" -}}
{{- $v := .Values.im.sdkappid }}
{{- if kindIs "string" $v }}{{ $v }}{{ else }}{{ $v | int64 }}{{ end }}
{{- end }}

{{- define "chatgroupd.dlqTopic" -}}
{{- default (printf "%s.dlq" .Values.kafka.topic) .Values.kafka.dlqTopic }}
{{- end }}

{{- define "chatgroupd.gracePeriod" -}}
{{- $shutdown := int .Values.config.shutdownTimeoutSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if eq $grace 0 }}{{ $grace = add $shutdown 20 }}{{ end }}
{{- if le $grace $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than config.shutdownTimeoutSeconds (%d): Kubernetes would kill the pod before it commits and leaves the group" $grace $shutdown) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/* Consistency checks the schema cannot express. Renders nothing. */}}
{{- define "chatgroupd.validate" -}}
{{- if and .Values.secretKey.create .Values.secretKey.existingSecret }}
{{- fail "secretKey.create and secretKey.existingSecret are exclusive: pick one" }}
{{- end }}
{{- if and .Values.secretKey.create (not .Values.secretKey.value) }}
{{- fail "secretKey.create needs secretKey.value (or use secretKey.existingSecret)" }}
{{- end }}
{{- $sasl := .Values.kafka.sasl }}
{{- if and $sasl.password (not $sasl.existingSecret) (not .Values.secretKey.create) (not .Values.secretKey.existingSecret) }}
{{- fail "kafka.sasl.password makes the chart own the Secret named like the release, where the IM key is expected: also set secretKey.create+value, or secretKey.existingSecret (or kafka.sasl.existingSecret)" }}
{{- end }}
{{- if $sasl.mechanism }}
{{- if not $sasl.username }}{{ fail "kafka.sasl.username is required with kafka.sasl.mechanism" }}{{ end }}
{{- if not (or $sasl.existingSecret $sasl.password) }}{{ fail "kafka.sasl needs existingSecret or password" }}{{ end }}
{{- end }}
{{- if and (eq $sasl.mechanism "plain") (not .Values.kafka.tls.enabled) (not $sasl.allowPlaintext) }}
{{- fail "kafka.sasl.mechanism plain without kafka.tls.enabled sends the password in clear text: enable TLS, or set kafka.sasl.allowPlaintext=true to accept that" }}
{{- end }}
{{- $ep := .Values.im.endpoint }}
{{- if and (hasPrefix "http://" $ep) (not .Values.im.allowInsecureHTTP) }}
{{- $host := regexReplaceAll "^http://(\\[[^]]*\\]|[^:/]*).*$" $ep "${1}" }}
{{- if not (or (eq $host "localhost") (eq $host "[::1]") (hasPrefix "127." $host)) }}
{{- fail (printf "im.endpoint %s is plain http off loopback: the admin UserSig would cross the network in clear text; use https, or set im.allowInsecureHTTP=true" $ep) }}
{{- end }}
{{- end }}
{{- $tls := .Values.kafka.tls }}
{{- if and $tls.enabled (ne (empty $tls.certKey) (empty $tls.keyKey)) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS needs both)" }}
{{- end }}
{{- if and $tls.enabled (or $tls.certKey $tls.keyKey) (not $tls.existingSecret) }}
{{- fail "kafka.tls.existingSecret is required for a client certificate" }}
{{- end }}
{{- end }}

{{/* Where the pod mounts secrets. */}}
{{- define "chatgroupd.secretKeyDir" -}}/etc/chatgroupd/secret-key{{- end }}
{{- define "chatgroupd.tlsDir" -}}/etc/chatgroupd/kafka-tls{{- end }}
{{- define "chatgroupd.saslDir" -}}/etc/chatgroupd/kafka-sasl{{- end }}

{{/*
The DLQ replay Job's settings as CHATGROUPD_* environment variables: Kafka only. A replay reads
the DLQ topic and produces to the event topic; it never calls the IM API, so it gets neither the
IM key nor the IM settings. (A command ignores variables of flags it does not have, where an
unknown flag would be an error.)
*/}}
{{- define "chatgroupd.connectionEnv" -}}
- name: CHATGROUPD_BROKERS
  value: {{ join "," .Values.kafka.brokers | quote }}
- name: CHATGROUPD_TOPIC
  value: {{ .Values.kafka.topic | quote }}
- name: CHATGROUPD_GROUP
  value: {{ .Values.kafka.group | quote }}
- name: CHATGROUPD_DLQ_TOPIC
  value: {{ include "chatgroupd.dlqTopic" . | quote }}
- name: CHATGROUPD_PARTITIONER
  value: {{ .Values.kafka.partitioner | default "murmur2" | quote }}
- name: CHATGROUPD_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- include "chatgroupd.kafkaSecurityEnv" . }}
{{- with .Values.kafka.sasl }}
{{- if and .mechanism .mountAsFile }}
- name: CHATGROUPD_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/%s" (include "chatgroupd.saslDir" $) .passwordKey | quote }}
{{- else if .mechanism }}
- name: CHATGROUPD_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chatgroupd.saslSecret" $ }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* Kafka TLS/SASL as environment variables (shared by the service and the Job). */}}
{{- define "chatgroupd.kafkaSecurityEnv" -}}
{{- $tls := .Values.kafka.tls }}
{{- if $tls.enabled }}
- name: CHATGROUPD_KAFKA_TLS
  value: "true"
{{- if and $tls.existingSecret $tls.caKey }}
- name: CHATGROUPD_KAFKA_TLS_CA_FILE
  value: {{ printf "%s/%s" (include "chatgroupd.tlsDir" .) $tls.caKey | quote }}
{{- end }}
{{- if $tls.certKey }}
- name: CHATGROUPD_KAFKA_TLS_CERT_FILE
  value: {{ printf "%s/%s" (include "chatgroupd.tlsDir" .) $tls.certKey | quote }}
- name: CHATGROUPD_KAFKA_TLS_KEY_FILE
  value: {{ printf "%s/%s" (include "chatgroupd.tlsDir" .) $tls.keyKey | quote }}
{{- end }}
{{- if $tls.insecureSkipVerify }}
- name: CHATGROUPD_KAFKA_TLS_INSECURE_SKIP_VERIFY
  value: "true"
{{- end }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
- name: CHATGROUPD_KAFKA_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: CHATGROUPD_KAFKA_SASL_USERNAME
  value: {{ .username | quote }}
{{- if .allowPlaintext }}
- name: CHATGROUPD_KAFKA_SASL_ALLOW_PLAINTEXT
  value: "true"
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes of any chatgroupd pod: /tmp, the Kafka TLS files, the SASL password file. */}}
{{- define "chatgroupd.kafkaVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and .Values.kafka.sasl.mechanism .Values.kafka.sasl.mountAsFile }}
- name: kafka-sasl
  secret:
    secretName: {{ include "chatgroupd.saslSecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.sasl.passwordKey }}
        path: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- end }}

{{- define "chatgroupd.kafkaVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "chatgroupd.tlsDir" . }}
  readOnly: true
{{- end }}
{{- if and .Values.kafka.sasl.mechanism .Values.kafka.sasl.mountAsFile }}
- name: kafka-sasl
  mountPath: {{ include "chatgroupd.saslDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes of the service's pods: the Kafka ones and the IM secret key file. */}}
{{- define "chatgroupd.volumes" -}}
{{ include "chatgroupd.kafkaVolumes" . }}
{{- if .Values.instanceIdFromPodName }}
- name: instance-lock
  emptyDir:
    sizeLimit: 1Mi
{{- end }}
{{- if .Values.secretKey.mountAsFile }}
- name: secret-key
  secret:
    secretName: {{ include "chatgroupd.secretKeySecret" . }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secretKey.key }}
        path: {{ .Values.secretKey.key }}
{{- end }}
{{- end }}

{{- define "chatgroupd.volumeMounts" -}}
{{ include "chatgroupd.kafkaVolumeMounts" . }}
{{- if .Values.instanceIdFromPodName }}
- name: instance-lock
  mountPath: {{ include "chatgroupd.instanceLockDir" . }}
{{- end }}
{{- if .Values.secretKey.mountAsFile }}
- name: secret-key
  mountPath: {{ include "chatgroupd.secretKeyDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Where a replica locks its instance id (--instance-lock-dir): an emptyDir, which outlives a
container restart in the same pod and so tells the restarted container its predecessor is dead. */}}
{{- define "chatgroupd.instanceLockDir" -}}
/var/run/chatgroupd
{{- end }}

{{/* Flags of `chatgroupd run`. Secrets never appear here. */}}
{{- define "chatgroupd.runArgs" -}}
- run
- --brokers={{ join "," .Values.kafka.brokers }}
- --topic={{ .Values.kafka.topic }}
- --group={{ .Values.kafka.group }}
- --dlq-topic={{ include "chatgroupd.dlqTopic" . }}
- --im-region={{ .Values.im.region }}
{{- with .Values.im.endpoint }}
- --im-endpoint={{ . }}
{{- end }}
{{- if .Values.im.allowInsecureHTTP }}
- --im-allow-insecure-http=true
{{- end }}
- --sdkappid={{ include "chatgroupd.sdkappid" . }}
- --admin={{ .Values.im.admin }}
- --rate-limit={{ .Values.im.rateLimit }}
- --partitioner={{ .Values.kafka.partitioner | default "murmur2" }}
- --metrics-addr=:{{ .Values.metrics.port }}
- --reorder-window={{ .Values.config.reorderWindow }}
- --retry-budget={{ .Values.config.retryBudget }}
- --retry-lane={{ .Values.config.retryLane | default "auto" }}
- --fleet-budget={{ .Values.config.fleetBudget | default "auto" }}
- --shutdown-timeout={{ .Values.config.shutdownTimeoutSeconds }}s
- --log-level={{ .Values.config.logLevel }}
- --log-format={{ .Values.config.logFormat }}
{{- if .Values.instanceIdFromPodName }}
- --instance-lock-dir={{ include "chatgroupd.instanceLockDir" . }}
{{- end }}
{{- if .Values.secretKey.mountAsFile }}
- --secret-key-file={{ include "chatgroupd.secretKeyDir" . }}/{{ .Values.secretKey.key }}
{{- end }}
{{- $tls := .Values.kafka.tls }}
{{- if $tls.enabled }}
- --kafka-tls=true
{{- if and $tls.existingSecret $tls.caKey }}
- --kafka-tls-ca-file={{ include "chatgroupd.tlsDir" . }}/{{ $tls.caKey }}
{{- end }}
{{- if $tls.certKey }}
- --kafka-tls-cert-file={{ include "chatgroupd.tlsDir" . }}/{{ $tls.certKey }}
- --kafka-tls-key-file={{ include "chatgroupd.tlsDir" . }}/{{ $tls.keyKey }}
{{- end }}
{{- if $tls.insecureSkipVerify }}
- --kafka-tls-insecure-skip-verify=true
{{- end }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
- --kafka-sasl-mechanism={{ .mechanism }}
- --kafka-sasl-username={{ .username }}
{{- if .mountAsFile }}
- --kafka-sasl-password-file={{ include "chatgroupd.saslDir" $ }}/{{ .passwordKey }}
{{- end }}
{{- if .allowPlaintext }}
- --kafka-sasl-allow-plaintext=true
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.config.extraArgs }}
- {{ . }}
{{- end }}
{{- end }}

{{/* Secrets of `chatgroupd run`, as environment variables read from Secrets. */}}
{{- define "chatgroupd.runSecretEnv" -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.mountAsFile) }}
- name: CHATGROUPD_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "chatgroupd.saslSecret" . }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if not .Values.secretKey.mountAsFile }}
- name: CHATGROUPD_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "chatgroupd.secretKeySecret" . }}
      key: {{ .Values.secretKey.key }}
{{- end }}
{{- end }}
