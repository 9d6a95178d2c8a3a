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
"withoutKey" true leaves out the pseudonymisation key, for services that never use it
(the indicators, population, case-list and reviews services, the partner gateway, the MLLP listener
and the FHIR endpoint): the key stays out of the pods that face partners and providers.
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
{{- $keySecret := required "pseudonymKey.existingSecret is required: the name of a Secret holding the pseudonymisation key (see values.yaml)" $v.pseudonymKey.existingSecret }}
{{- if not .withoutKey }}
- name: CAREHUB_PSEUDONYM_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $keySecret | quote }}
      key: {{ $v.pseudonymKey.key | quote }}
{{- end }}
- name: CAREHUB_DATA_DIR
  value: /var/lib/carehub
# Inside the pod; nothing outside reaches it unless a Service or port-forward does.
- name: CAREHUB_METRICS_HOST
  value: "0.0.0.0"
- name: CAREHUB_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: CAREHUB_PARTITIONS
  value: {{ $v.kafka.partitions | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "carehub-%s" .component | quote }}
{{- with $v.otel.tracesExporter }}
- name: OTEL_TRACES_EXPORTER
  value: {{ . | quote }}
{{- end }}
{{- with $v.otel.exporterOtlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with $v.otel.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- if $v.otel.sdkDisabled }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- with $v.otel.headersSecret.name }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $v.otel.headersSecret.key | quote }}
{{- end }}
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
Pod-level settings shared by the Deployments and the Job.
Call with (dict "root" $ "component" "ingest"); component "" (the Job) gets no anti-affinity.
*/}}
{{- define "carehub.podSpecCommon" -}}
{{- $v := .root.Values -}}
# carehub never talks to the Kubernetes API.
automountServiceAccountToken: false
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if and .component (ne $v.podAntiAffinity "none") }}
affinity:
  podAntiAffinity:
    {{- if eq $v.podAntiAffinity "hard" }}
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "carehub.selectorLabels" .root | nindent 12 }}
            app.kubernetes.io/component: {{ .component }}
    {{- else }}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "carehub.selectorLabels" .root | nindent 14 }}
              app.kubernetes.io/component: {{ .component }}
    {{- end }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Replicas a stream service may usefully run: at most one per partition of the topic its
consumer group shares (kafka.partitions); more would sit idle. Call with (list n $).
*/}}
{{- define "carehub.cappedReplicas" -}}
{{- $n := index . 0 | int -}}
{{- $partitions := (index . 1).Values.kafka.partitions | int -}}
{{- min $n $partitions -}}
{{- end }}

{{/*
One carehub service as a Deployment. Call with a dict:
  root       the root context ($)
  component  ingest | identity | timeline | indicators | alerts | population | caselists | reviews | gateway | mllp | fhir
  args       the `carehub` subcommand that runs it (the image's entrypoint is `carehub`)
  single     true: exactly one replica, replaced with no overlap (strategy Recreate)
The component's values are .Values.<component>. Replicas are capped at kafka.partitions,
except the MLLP listener's and the FHIR endpoint's: they consume nothing, so any number can
share the work.
*/}}
{{- define "carehub.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $c := .component -}}
{{- $cv := index $v $c -}}
{{- $gateway := eq $c "gateway" -}}
{{- $mllp := eq $c "mllp" -}}
{{- $fhir := eq $c "fhir" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "carehub.fullname" $root }}-{{ $c }}
  labels:
    {{- include "carehub.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $c }}
spec:
  {{- if .single }}
  # Exactly one, always; see values.yaml.
  replicas: 1
  strategy:
    type: Recreate
  {{- else if or $mllp $fhir }}
  # Not a consumer: any number of listeners can share one Service address.
  replicas: {{ $cv.replicas | int }}
  {{- else if not (and $cv.autoscaling $cv.autoscaling.enabled) }}
  replicas: {{ include "carehub.cappedReplicas" (list $cv.replicas $root) }}
  {{- end }}
  {{- /* With autoscaling the HPA owns spec.replicas; an upgrade must not reset it. */}}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "carehub.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $c }}
  template:
    metadata:
      labels:
        {{- include "carehub.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $c }}
        # Selected by the metrics Service (the topics Job has no metrics endpoint).
        carehub.io/metrics: "true"
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- include "carehub.podSpecCommon" (dict "root" $root "component" $c) | nindent 6 }}
      # Time to commit offsets and leave the consumer group (or close streams or connections)
      # on SIGTERM.
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ $c }}
          image: {{ include "carehub.image" $root | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: [{{ .args | quote }}]
          env:
            # A distinct worker name per pod; first, so extraEnv can still override it.
            - name: CAREHUB_WORKER_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            {{- if $gateway }}
            - name: CAREHUB_GATEWAY_HOST
              value: "0.0.0.0"
            - name: CAREHUB_GATEWAY_PORT
              value: {{ $cv.port | quote }}
            - name: CAREHUB_GATEWAY_HEALTH_HOST
              value: "0.0.0.0"
            - name: CAREHUB_GATEWAY_HEALTH_PORT
              value: {{ $cv.healthPort | quote }}
            - name: CAREHUB_GATEWAY_TLS_CERT
              value: /etc/carehub/gateway/tls.crt
            - name: CAREHUB_GATEWAY_TLS_KEY
              value: /etc/carehub/gateway/tls.key
            - name: CAREHUB_GATEWAY_REQUIRE_CLIENT_CERT
              value: {{ $cv.requireClientCert | quote }}
            {{- if $cv.requireClientCert }}
            - name: CAREHUB_GATEWAY_CLIENT_CA
              value: /etc/carehub/gateway/client-ca.crt
            {{- end }}
            - name: CAREHUB_GATEWAY_PARTNERS_FILE
              value: /etc/carehub/gateway/partners.toml
            {{- end }}
            {{- if $mllp }}
            - name: CAREHUB_MLLP_HOST
              value: "0.0.0.0"
            - name: CAREHUB_MLLP_PORT
              value: {{ $cv.port | quote }}
            - name: CAREHUB_MLLP_MAX_MESSAGE_BYTES
              value: {{ $cv.maxMessageBytes | int | quote }}
            - name: CAREHUB_MLLP_IDLE_TIMEOUT_S
              value: {{ $cv.idleTimeoutSeconds | quote }}
            - name: CAREHUB_MLLP_MAX_INFLIGHT_PER_SENDER
              value: {{ $cv.maxInflightPerSender | int | quote }}
            {{- if $cv.facilities.name }}
            - name: CAREHUB_HL7_FACILITIES
              value: /etc/carehub/mllp/facilities.toml
            {{- end }}
            {{- end }}
            {{- if $fhir }}
            - name: CAREHUB_FHIR_HOST
              value: "0.0.0.0"
            - name: CAREHUB_FHIR_PORT
              value: {{ $cv.port | quote }}
            - name: CAREHUB_FHIR_TLS_CERT
              value: /etc/carehub/fhir/tls.crt
            - name: CAREHUB_FHIR_TLS_KEY
              value: /etc/carehub/fhir/tls.key
            - name: CAREHUB_FHIR_REQUIRE_CLIENT_CERT
              value: {{ $cv.requireClientCert | quote }}
            {{- if or $cv.requireClientCert $cv.clientCa.name }}
            - name: CAREHUB_FHIR_CLIENT_CA
              value: /etc/carehub/fhir/client-ca.crt
            {{- end }}
            - name: CAREHUB_FHIR_SENDERS_FILE
              value: /etc/carehub/fhir/senders.toml
            {{- if $cv.mapping.name }}
            - name: CAREHUB_FHIR_MAPPING
              value: /etc/carehub/fhir/mapping.toml
            {{- end }}
            - name: CAREHUB_FHIR_MAX_BUNDLE_BYTES
              value: {{ $cv.maxBundleBytes | int | quote }}
            - name: CAREHUB_FHIR_MAX_INFLIGHT_PER_SENDER
              value: {{ $cv.maxInflightPerSender | int | quote }}
            {{- end }}
            {{- include "carehub.env" (dict "root" $root "component" $c "withoutKey" (has $c (list "indicators" "population" "caselists" "reviews" "gateway" "mllp" "fhir"))) | nindent 12 }}
          ports:
            {{- if $gateway }}
            - name: grpc
              containerPort: {{ $cv.port }}
              protocol: TCP
            - name: grpc-health
              containerPort: {{ $cv.healthPort }}
              protocol: TCP
            {{- end }}
            {{- if $mllp }}
            # HL7 v2 over MLLP: plain TCP framing, not HTTP.
            - name: mllp
              containerPort: {{ $cv.port }}
              protocol: TCP
            {{- end }}
            {{- if $fhir }}
            # FHIR R4 over HTTPS only (TLS ends in the pod: the client certificate is the sender's identity).
            - name: https
              containerPort: {{ $cv.port }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- if $gateway }}
          # Native gRPC probes on the gateway's plaintext, health-only port (the partner port
          # speaks TLS only): the stock health service, which says SERVING for the partner
          # service once the alerts log has been read, so a pod is Ready only then.
          startupProbe:
            grpc:
              port: {{ $cv.healthPort }}
              service: carehub.v1.PartnerGateway
            periodSeconds: 5
            failureThreshold: 36
          readinessProbe:
            grpc:
              port: {{ $cv.healthPort }}
              service: carehub.v1.PartnerGateway
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          livenessProbe:
            grpc:
              port: {{ $cv.healthPort }}
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          {{- else }}
          # On the metrics port (carehub/runtime/health.py): /ready means partitions assigned,
          # tables recovered, lag read in the last seconds and no stall (records waiting with
          # no progress), or for the MLLP listener and the FHIR endpoint that it is listening
          # with its producer started (the FHIR port speaks TLS only, so it is not probed
          # itself); /live only that the worker keeps judging (its event loop is not
          # wedged), so a slow or stalled stage is taken out of readiness, not restarted.
          # The startup probe allows for waiting for Kafka (up to 3 minutes).
          {{- $live := dict "httpGet" (dict "path" "/live" "port" "metrics") }}
          startupProbe:
            {{- toYaml $live | nindent 12 }}
            periodSeconds: 5
            failureThreshold: 36
          readinessProbe:
            httpGet:
              path: /ready
              port: metrics
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          livenessProbe:
            {{- toYaml $live | nindent 12 }}
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml $cv.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "carehub.volumeMounts" $root | nindent 12 }}
            {{- if $gateway }}
            - name: gateway-files
              mountPath: /etc/carehub/gateway
              readOnly: true
            {{- end }}
            {{- if and $mllp $cv.facilities.name }}
            - name: mllp-files
              mountPath: /etc/carehub/mllp
              readOnly: true
            {{- end }}
            {{- if $fhir }}
            - name: fhir-files
              mountPath: /etc/carehub/fhir
              readOnly: true
            {{- end }}
      volumes:
        {{- include "carehub.volumes" (dict "dataSizeLimit" $cv.dataDirSizeLimit) | nindent 8 }}
        {{- if $gateway }}
        {{- $tlsSecret := required "gateway.tls.existingSecret is required: the Secret with the gateway's certificate and key (or set gateway.enabled=false)" $cv.tls.existingSecret }}
        {{- $partners := required "gateway.partners.name is required: the ConfigMap or Secret with the partners file (or set gateway.enabled=false)" $cv.partners.name }}
        # The TLS material and the partners file, by reference, in one read-only
        # directory, readable by the carehub group (fsGroup) only.
        - name: gateway-files
          projected:
            defaultMode: 0440
            sources:
              - secret:
                  name: {{ $tlsSecret | quote }}
                  items:
                    - key: {{ $cv.tls.certKey | quote }}
                      path: tls.crt
                    - key: {{ $cv.tls.keyKey | quote }}
                      path: tls.key
              {{- if $cv.requireClientCert }}
              {{- $ca := dict "name" (default $tlsSecret $cv.clientCa.name) "items" (list (dict "key" $cv.clientCa.key "path" "client-ca.crt")) }}
              - {{ ternary "secret" "configMap" (eq $cv.clientCa.kind "Secret") }}:
                  {{- toYaml $ca | nindent 18 }}
              {{- end }}
              {{- $p := dict "name" $partners "items" (list (dict "key" $cv.partners.key "path" "partners.toml")) }}
              - {{ ternary "secret" "configMap" (eq $cv.partners.kind "Secret") }}:
                  {{- toYaml $p | nindent 18 }}
        {{- end }}
        {{- if and $mllp $cv.facilities.name }}
        # The deployment's own sending facilities file, by reference, read-only and readable
        # by the carehub group (fsGroup) only.
        - name: mllp-files
          projected:
            defaultMode: 0440
            sources:
              {{- $f := dict "name" $cv.facilities.name "items" (list (dict "key" $cv.facilities.key "path" "facilities.toml")) }}
              - {{ ternary "secret" "configMap" (eq $cv.facilities.kind "Secret") }}:
                  {{- toYaml $f | nindent 18 }}
        {{- end }}
        {{- if $fhir }}
        {{- $tlsSecret := required "fhir.tls.existingSecret is required: the Secret with the FHIR endpoint's certificate and key (or set fhir.enabled=false)" $cv.tls.existingSecret }}
        {{- $senders := required "fhir.senders.name is required: the ConfigMap or Secret with the FHIR senders file (or set fhir.enabled=false)" $cv.senders.name }}
        # The TLS material, the senders file and (if named) the mapping, by reference, in one
        # read-only directory, readable by the carehub group (fsGroup) only.
        - name: fhir-files
          projected:
            defaultMode: 0440
            sources:
              - secret:
                  name: {{ $tlsSecret | quote }}
                  items:
                    - key: {{ $cv.tls.certKey | quote }}
                      path: tls.crt
                    - key: {{ $cv.tls.keyKey | quote }}
                      path: tls.key
              {{- if or $cv.requireClientCert $cv.clientCa.name }}
              {{- /* No name: the key of the fhir.tls Secret, whatever clientCa.kind says. */}}
              {{- $ca := dict "name" (default $tlsSecret $cv.clientCa.name) "items" (list (dict "key" $cv.clientCa.key "path" "client-ca.crt")) }}
              - {{ ternary "secret" "configMap" (or (eq $cv.clientCa.kind "Secret") (not $cv.clientCa.name)) }}:
                  {{- toYaml $ca | nindent 18 }}
              {{- end }}
              {{- $s := dict "name" $senders "items" (list (dict "key" $cv.senders.key "path" "senders.toml")) }}
              - {{ ternary "secret" "configMap" (eq $cv.senders.kind "Secret") }}:
                  {{- toYaml $s | nindent 18 }}
              {{- if $cv.mapping.name }}
              {{- $mp := dict "name" $cv.mapping.name "items" (list (dict "key" $cv.mapping.key "path" "mapping.toml")) }}
              - {{ ternary "secret" "configMap" (eq $cv.mapping.kind "Secret") }}:
                  {{- toYaml $mp | nindent 18 }}
              {{- end }}
        {{- end }}
{{- end }}

{{/*
A HorizontalPodAutoscaler for a stream service, when its autoscaling is enabled.
Call with (dict "root" $ "component" "ingest").
*/}}
{{- define "carehub.hpa" -}}
{{- $root := .root -}}
{{- $c := .component -}}
{{- $a := (index $root.Values $c).autoscaling -}}
{{- if $a.enabled }}
{{- $max := include "carehub.cappedReplicas" (list $a.maxReplicas $root) | int }}
{{- $requests := (index $root.Values $c).resources.requests | default dict }}
{{- if not $requests.cpu }}
{{- fail (printf "%s.autoscaling needs %s.resources.requests.cpu: CPU utilisation is measured against it" $c $c) }}
{{- end }}
{{- if gt ($a.minReplicas | int) $max }}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is more than kafka.partitions (%d): the extra workers would have no partition" $c ($a.minReplicas | int) ($root.Values.kafka.partitions | int)) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "carehub.fullname" $root }}-{{ $c }}
  labels:
    {{- include "carehub.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $c }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "carehub.fullname" $root }}-{{ $c }}
  minReplicas: {{ $a.minReplicas }}
  # Capped at kafka.partitions ({{ $root.Values.kafka.partitions }}): a consumer group gives each
  # partition to one worker, so more workers add no throughput.
  maxReplicas: {{ $max }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
  # Each scale step rebalances the consumer group: scale up one worker at a time, and
  # down only after a quiet window.
  behavior:
    scaleUp:
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
    scaleDown:
      stabilizationWindowSeconds: {{ $a.scaleDownStabilizationSeconds }}
      policies:
        - type: Pods
          value: 1
          periodSeconds: 120
{{- end }}
{{- end }}
