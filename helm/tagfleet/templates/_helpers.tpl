{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "tagfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "tagfleet.fullname" -}}
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

{{- define "tagfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tagfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tagfleet.labels" -}}
helm.sh/chart: {{ include "tagfleet.chart" . }}
{{ include "tagfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tagfleet
{{- end }}

{{- define "tagfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tagfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository:tag-variant (tag defaults to appVersion). */}}
{{- define "tagfleet.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- printf "%s:%s-%s" .Values.image.repository $tag .Values.image.variant }}
{{- end }}

{{/* The TAGFLEET_FLEET value: the mounted ConfigMap or the s3:// URI (empty: neither). */}}
{{- define "tagfleet.fleetPath" -}}
{{- if and .Values.fleet.uri .Values.fleet.inline }}
{{- fail "fleet: set fleet.uri or fleet.inline, not both" }}
{{- else if .Values.fleet.inline }}/etc/tagfleet/fleet.yaml
{{- else }}{{ .Values.fleet.uri }}
{{- end }}
{{- end }}

{{/*
Environment shared by the consumers and the migration Job: the store, S3 and Kafka security.
The store URL comes from a Secret when one is named, else inline.
*/}}
{{- define "tagfleet.commonEnv" -}}
{{- if .Values.store.existingSecret }}
- name: TAGFLEET_STORE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.store.existingSecret }}
      key: {{ .Values.store.urlKey }}
{{- else if .Values.store.url }}
- name: TAGFLEET_STORE
  value: {{ .Values.store.url | quote }}
{{- end }}
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.credentials.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.credentials.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.credentials.secretAccessKeyKey }}
{{- end }}
{{- end }}

{{/* KEDA's name for a SASL mechanism. */}}
{{- define "tagfleet.kedaSasl" -}}
{{- $m := .Values.kafkaSasl.mechanism }}
{{- if eq $m "PLAIN" }}plaintext
{{- else if eq $m "SCRAM-SHA-256" }}scram_sha256
{{- else if eq $m "SCRAM-SHA-512" }}scram_sha512
{{- else }}{{ fail (printf "kafkaSasl.mechanism %q has no KEDA equivalent" $m) }}
{{- end }}
{{- end }}

{{/* Fails the render when the grace period cannot cover the SIGTERM drain. */}}
{{- define "tagfleet.checkGrace" -}}
{{- $drain := 25.0 }}
{{- if hasKey .Values.config "drain_timeout_s" }}
{{- $drain = float64 .Values.config.drain_timeout_s }}
{{- end }}
{{- $grace := float64 .Values.terminationGracePeriodSeconds }}
{{- if lt $grace (addf $drain 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least config.drain_timeout_s (%v) + 5 so the SIGTERM drain can finish" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- end }}

{{/* A config value as an environment string: lists joined by commas, whole numbers without exponent. */}}
{{- define "tagfleet.envValue" -}}
{{- if kindIs "slice" . }}{{ join "," . }}
{{- else if kindIs "float64" . }}{{ if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}{{ . }}
{{- end }}
{{- end }}
