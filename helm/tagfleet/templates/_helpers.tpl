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

{{/*
fullname plus a suffix, within 63 characters: the fullname is cut, never the suffix (a Job's
name must fit a label value, `batch.kubernetes.io/job-name`). Called with a dict: root, suffix.
*/}}
{{- define "tagfleet.suffixedName" -}}
{{- $suffix := printf "-%s" .suffix }}
{{- $base := include "tagfleet.fullname" .root | trunc (int (sub 63 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s%s" $base $suffix }}
{{- end }}

{{/*
The consumer pods' labels: podLabels first, then the chart's own. A podLabels key the chart
sets itself (the selectors, part-of, ...) is refused: a Deployment whose pods lose
app.kubernetes.io/component or name no longer matches its own selector, Service, PDB and
NetworkPolicy.
*/}}
{{- define "tagfleet.podLabels" -}}
{{- include "tagfleet.componentPodLabels" (dict "root" . "component" "consumer") }}
{{- end }}

{{/*
A component's pod labels (consumer, api, webhooks): podLabels, then the chart's own, which
podLabels may not override. Called with a dict: root, component.
*/}}
{{- define "tagfleet.componentPodLabels" -}}
{{- $own := printf "%s\napp.kubernetes.io/component: %s" (include "tagfleet.labels" .root) .component | fromYaml }}
{{- range $key, $_ := .root.Values.podLabels }}
{{- if hasKey $own $key }}
{{- fail (printf "podLabels: %s is set by the chart (its selectors and labels); remove it from podLabels" $key) }}
{{- end }}
{{- end }}
{{- merge $own .root.Values.podLabels | toYaml }}
{{- end }}

{{/* A component's selector labels. Called with a dict: root, component. */}}
{{- define "tagfleet.componentSelectorLabels" -}}
{{ include "tagfleet.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* A component's object labels. Called with a dict: root, component. */}}
{{- define "tagfleet.componentLabels" -}}
{{ include "tagfleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tagfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tagfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tagfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The consumer pods: what the Deployment, Service, PodDisruptionBudget, NetworkPolicy and (through
the Service) ServiceMonitor select. The component keeps the migration Job's and the helm test's
pods out of them.
*/}}
{{- define "tagfleet.consumerSelectorLabels" -}}
{{ include "tagfleet.componentSelectorLabels" (dict "root" . "component" "consumer") }}
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

{{/*
Image reference: repository:tag-variant (tag defaults to appVersion), then @digest when set, so
that the tag stays readable and the digest decides what is pulled. Called with a dict: root
(the chart context), variant, digest.
*/}}
{{- define "tagfleet.imageRef" -}}
{{- $v := .root.Values.image }}
{{- $tag := default .root.Chart.AppVersion $v.tag }}
{{- printf "%s:%s-%s" $v.repository $tag .variant }}
{{- with .digest }}@{{ . }}{{ end }}
{{- end }}

{{- define "tagfleet.image" -}}
{{- include "tagfleet.imageRef" (dict "root" . "variant" .Values.image.variant "digest" .Values.image.digest) }}
{{- end }}

{{/*
An image of the chart's repository in another variant (image: {variant, digest}): its own
digest, else image.digest when the variants match, else by tag. Called with a dict: root, image.
*/}}
{{- define "tagfleet.variantImage" -}}
{{- $digest := .image.digest }}
{{- if and (not $digest) (eq .image.variant .root.Values.image.variant) }}{{ $digest = .root.Values.image.digest }}{{ end }}
{{- include "tagfleet.imageRef" (dict "root" .root "variant" .image.variant "digest" $digest) }}
{{- end }}

{{/* The migration Job's and the helm test's image: the CPU variant unless told otherwise. */}}
{{- define "tagfleet.jobImage" -}}
{{- include "tagfleet.variantImage" (dict "root" . "image" .Values.migrations.image) }}
{{- end }}

{{/*
What a first install must be told, checked before anything renders: one message that names
every missing value. No image is published for you, the store holds the tags (a SQLite file
under a read-only root cannot), and the bucket allow-list is the service's isolation.
*/}}
{{- define "tagfleet.validate" -}}
{{- $v := .Values }}
{{- $missing := list }}
{{- if not $v.image.repository }}
{{- $missing = append $missing "image.repository (where you pushed the image built from infra/Dockerfile; docs/deploy.md, \"Build and push the image\")" }}
{{- end }}
{{- if not (or $v.store.url $v.store.existingSecret $v.store.sqlite.enabled) }}
{{- $missing = append $missing "store.existingSecret (a Secret holding the PostgreSQL URL) or store.url, or store.sqlite.enabled=true for a one-replica trial" }}
{{- end }}
{{- if not (or $v.security.allowedBuckets $v.security.allowAllBuckets) }}
{{- $missing = append $missing "security.allowedBuckets (the buckets the service may read), or security.allowAllBuckets=true to read any bucket its role can" }}
{{- end }}
{{- if $missing }}
{{- fail (printf "tagfleet: set %s" (join "; " $missing)) }}
{{- end }}
{{- if and $v.security.allowedBuckets $v.security.allowAllBuckets }}
{{- fail "tagfleet: set security.allowedBuckets or security.allowAllBuckets, not both" }}
{{- end }}
{{- if $v.store.sqlite.enabled }}
{{- if or $v.store.url $v.store.existingSecret }}
{{- fail "tagfleet: store.sqlite.enabled is a trial store: unset store.url and store.existingSecret, or disable it" }}
{{- end }}
{{- if or $v.keda.enabled $v.hpa.enabled (gt (int $v.replicaCount) 1) }}
{{- fail "tagfleet: store.sqlite.enabled keeps the tags in one pod's volume: set replicaCount=1 and disable keda and hpa, or use PostgreSQL (store.existingSecret)" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether this release migrates with the hook Job (else each consumer at start-up). */}}
{{- define "tagfleet.migrationJob" -}}
{{- if and .Values.migrations.enabled (not .Values.store.sqlite.enabled) }}true{{ end }}
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
The store URL comes from a Secret when one is named, else inline; the trial SQLite file lives on
the pod's data volume.
*/}}
{{- define "tagfleet.commonEnv" -}}
{{- if .Values.store.sqlite.enabled }}
- name: TAGFLEET_STORE
  value: "sqlite:////var/lib/tagfleet/data/tags.db"
{{- else if .Values.store.existingSecret }}
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

{{/*
What every pod of the release shares (consumer, API, webhooks): the ServiceAccount, pull
secrets and the pod security context. Indented by the caller.
*/}}
{{- define "tagfleet.podCommon" -}}
serviceAccountName: {{ include "tagfleet.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
A pod's own scheduling fields, from a values section with nodeSelector, tolerations, affinity
and priorityClassName (the API's and the webhooks' pods: not the consumer's GPU nodes).
*/}}
{{- define "tagfleet.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Kafka SASL credentials from kafkaSasl.existingSecret (the consumers and webhook serve). */}}
{{- define "tagfleet.saslEnv" -}}
{{- if .Values.kafkaSasl.enabled }}
- name: TAGFLEET_SASL_MECHANISM
  value: {{ .Values.kafkaSasl.mechanism | quote }}
- name: TAGFLEET_SASL_PLAIN_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafkaSasl.existingSecret is required when kafkaSasl.enabled" .Values.kafkaSasl.existingSecret }}
      key: {{ .Values.kafkaSasl.usernameKey }}
- name: TAGFLEET_SASL_PLAIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafkaSasl.existingSecret }}
      key: {{ .Values.kafkaSasl.passwordKey }}
{{- end }}
{{- end }}

{{/*
The broker connection of `config` for a process that is not the consumer (webhook serve):
the servers, the protocol, SSL files and logging, the same values as the consumers', then
SASL.
*/}}
{{- define "tagfleet.kafkaEnv" -}}
{{- range $name := list "bootstrap_servers" "security_protocol" "ssl_cafile" "ssl_certfile" "ssl_keyfile" "log_format" "log_level" }}
{{- if hasKey $.Values.config $name }}
- name: TAGFLEET_{{ upper $name }}
  value: {{ include "tagfleet.envValue" (index $.Values.config $name) | quote }}
{{- end }}
{{- end }}
{{- include "tagfleet.saslEnv" . }}
{{- end }}

{{/* The fleet's ConfigMap volume and mount (fleet.inline), for the consumers and the API. */}}
{{- define "tagfleet.fleetVolume" -}}
{{- if .Values.fleet.inline }}
- name: fleet
  configMap:
    name: {{ include "tagfleet.fullname" . }}-fleet
{{- end }}
{{- end }}

{{- define "tagfleet.fleetMount" -}}
{{- if .Values.fleet.inline }}
- name: fleet
  mountPath: /etc/tagfleet
  readOnly: true
{{- end }}
{{- end }}

{{/* Where the tags API and webhook serve need values the consumer does not. */}}
{{- define "tagfleet.validateComponents" -}}
{{- if and .Values.api.enabled .Values.store.sqlite.enabled }}
{{- fail "tagfleet: store.sqlite keeps the tags in the consumer pod's volume, which the API's pods cannot read: set api.enabled=false for the trial, or use PostgreSQL (store.existingSecret)" }}
{{- end }}
{{- if and .Values.webhooks.enabled (not .Values.webhooks.existingSecret) }}
{{- fail "tagfleet: webhooks.enabled needs webhooks.existingSecret, a Secret holding the endpoints' file (tagfleet webhook add --webhooks webhooks.json, then kubectl create secret generic NAME --from-file=webhooks.json; docs/deploy.md, \"Webhooks\")" }}
{{- end }}
{{- end }}

{{/*
The embedding store's variables (embeddings.location, one s3:// prefix for every component).
Called with a dict: root, writer (the consumers: without a location they keep none, rather
than write a local folder under a read-only root).
*/}}
{{- define "tagfleet.embeddingsEnv" -}}
{{- with .root.Values.embeddings.location }}
- name: TAGFLEET_EMBEDDINGS
  value: {{ . | quote }}
{{- else }}
{{- if .writer }}
- name: TAGFLEET_STORE_EMBEDDINGS
  value: "false"
{{- end }}
{{- end }}
{{- end }}
