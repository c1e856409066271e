{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "presence-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<chart> unless the release already contains the chart name. */}}
{{- define "presence-bridge.fullname" -}}
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

{{- define "presence-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (Deployment selectors are immutable). */}}
{{- define "presence-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "presence-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "presence-bridge.labels" -}}
helm.sh/chart: {{ include "presence-bridge.chart" . }}
{{ include "presence-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: shard-worker
app.kubernetes.io/part-of: presence-bridge
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "presence-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "presence-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The existing Secret with the credentials (never created by the chart). */}}
{{- define "presence-bridge.secretName" -}}
{{- default (include "presence-bridge.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "presence-bridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "presence-bridge.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "presence-bridge.caMountDir" -}}/etc/presence-bridge/kafka-ca{{- end }}
