{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "carehub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name for the release's objects: <release>-carehub, or just the release
name when that already contains the chart name. Components append "-ingest" etc.
*/}}
{{- define "carehub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "carehub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "carehub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carehub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "carehub.labels" -}}
helm.sh/chart: {{ include "carehub.chart" . }}
{{ include "carehub.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carehub
{{- end }}

{{- define "carehub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Environment shared by every carehub container.
Call with (dict "root" $ "component" "ingest"); the component names the OTel service.
The two required values fail the render with a message rather than deploying pods that
crash on start-up.
*/}}
{{- define "carehub.env" -}}
{{- $v := .root.Values -}}
- name: CAREHUB_PROFILE
  value: production
- name: CAREHUB_KAFKA_BOOTSTRAP
  value: {{ required "kafka.bootstrap is required: host:port[,host:port] of your Kafka cluster" $v.kafka.bootstrap | quote }}
- name: CAREHUB_BROKER_PROFILE
  value: {{ $v.brokerProfile | quote }}
- name: CAREHUB_REPLICATION_FACTOR
  value: {{ $v.kafka.replicationFactor | quote }}
- name: CAREHUB_PSEUDONYM_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "pseudonymKey.existingSecret is required: the name of a Secret holding the pseudonymisation key (see values.yaml)" $v.pseudonymKey.existingSecret | quote }}
      key: {{ $v.pseudonymKey.key | quote }}
- name: CAREHUB_DATA_DIR
  value: /var/lib/carehub
# Inside the pod; nothing outside reaches it unless a Service or port-forward does.
- name: CAREHUB_METRICS_HOST
  value: "0.0.0.0"
- name: CAREHUB_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "carehub-%s" .component | quote }}
- name: OTEL_TRACES_EXPORTER
  value: {{ $v.otel.tracesExporter | quote }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Writable places under a read-only root filesystem: /tmp and the data dir.
*/}}
{{- define "carehub.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/carehub
{{- end }}

{{/*
Call with (dict "dataSizeLimit" "1Gi").
*/}}
{{- define "carehub.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: data
  emptyDir:
    sizeLimit: {{ .dataSizeLimit }}
{{- end }}

{{/*
Pod-level settings shared by the Deployment and the Job.
*/}}
{{- define "carehub.podSpecCommon" -}}
# carehub never talks to the Kubernetes API.
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
