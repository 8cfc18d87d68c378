{{/* Chart name, release-scoped full name and labels. */}}
{{- define "textpulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "textpulse.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. Args: (dict "root" $ "component" name) */}}
{{- define "textpulse.componentName" -}}
{{- printf "%s-%s" (include "textpulse.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "textpulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "textpulse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "textpulse.labels" -}}
{{ include "textpulse.selectorLabels" . }}
app.kubernetes.io/part-of: textpulse
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "textpulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "textpulse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* <registry>/<repository>:<tag>. Args: (dict "root" $ "image" .image) */}}
{{- define "textpulse.image" -}}
{{- $tag := default .root.Chart.AppVersion (default .root.Values.image.tag .image.tag) -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
One setting as an environment string, as pydantic-settings parses it: helm reads
every YAML number as float64, so whole numbers are printed without an exponent
(1000000, not 1e+06); lists are comma-separated; maps are JSON.
*/}}
{{- define "textpulse.envValue" -}}
{{- $v := . -}}
{{- if kindIs "float64" $v -}}
{{- if eq $v (float64 (int64 $v)) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if kindIs "bool" $v -}}
{{- ternary "true" "false" $v -}}
{{- else if kindIs "slice" $v -}}
{{- $parts := list -}}
{{- range $v }}{{ $parts = append $parts (include "textpulse.envValue" .) }}{{ end -}}
{{- join "," $parts -}}
{{- else if kindIs "map" $v -}}
{{- toJson $v -}}
{{- else -}}
{{- $v -}}
{{- end -}}
{{- end -}}

{{/* ConfigMap data lines for a settings map. Args: (dict "prefix" "TEXTPULSE_X_" "settings" map) */}}
{{- define "textpulse.settingsData" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .settings }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "%s%s" $prefix (upper $key) }}: {{ include "textpulse.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Autoscaling of one service: "keda", "hpa" or "none". Args: (dict "root" $ "svc" .)
*/}}
{{- define "textpulse.autoscaler" -}}
{{- $mode := .root.Values.autoscaling.mode -}}
{{- if or (eq $mode "none") (not .svc.autoscaling.enabled) (not .svc.consumer.topics) -}}
none
{{- else if eq $mode "keda" -}}
keda
{{- else if eq $mode "hpa" -}}
hpa
{{- else if .root.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject" -}}
keda
{{- else -}}
hpa
{{- end -}}
{{- end -}}

{{/*
Most useful replicas of a consumer service: the fewest partitions among its
input topics (a consumer group never gives one partition to two members).
maxReplicas above that fails the render. Args: (dict "name" name "svc" .)
*/}}
{{- define "textpulse.maxReplicas" -}}
{{- $cap := 0 -}}
{{- range .svc.consumer.topics -}}
{{- if or (eq $cap 0) (lt (int .partitions) $cap) }}{{ $cap = int .partitions }}{{ end -}}
{{- end -}}
{{- $want := int (default 0 .svc.autoscaling.maxReplicas) -}}
{{- if gt $want $cap -}}
{{- fail (printf "services.%s.autoscaling.maxReplicas=%d is above the %d partitions of its input topic: the extra consumers would idle (raise the partitions first)" .name $want $cap) -}}
{{- end -}}
{{- if gt $want 0 }}{{ $want }}{{ else }}{{ $cap }}{{ end -}}
{{- end -}}

{{/* The topic a consumer entry reads: the service setting when overridden. Args: (dict "svc" . "entry" .) */}}
{{- define "textpulse.consumerTopic" -}}
{{- $settings := default dict .svc.settings -}}
{{- default .entry.topic (get $settings .entry.setting) -}}
{{- end -}}

{{/* The consumer group of a service (ServiceSettings.group_id, default textpulse-<service>). */}}
{{- define "textpulse.consumerGroup" -}}
{{- $settings := default dict .svc.settings -}}
{{- default (printf "textpulse-%s" .name) (get $settings "group_id") -}}
{{- end -}}

{{- define "textpulse.kafkaTls" -}}
{{- or (eq .Values.kafka.securityProtocol "SSL") (eq .Values.kafka.securityProtocol "SASL_SSL") -}}
{{- end -}}

{{- define "textpulse.kafkaSasl" -}}
{{- hasPrefix "SASL" .Values.kafka.securityProtocol -}}
{{- end -}}

{{/* Triton gRPC address for the services (inference.settings.triton_url wins). */}}
{{- define "textpulse.tritonUrl" -}}
{{- $settings := default dict .Values.inference.settings -}}
{{- if hasKey $settings "triton_url" -}}
{{- get $settings "triton_url" -}}
{{- else if .Values.triton.enabled -}}
{{- printf "%s:8001" (include "textpulse.componentName" (dict "root" . "component" "triton")) -}}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints of one component. Args: (dict "root" $ "component" name) */}}
{{- define "textpulse.topologySpread" -}}
{{- if .root.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range .root.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "textpulse.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Labels of a pod: the chart's labels over podLabels (global, then the service's,
which wins), so a podLabels entry can never change a selector label.
Args: (dict "root" $ "component" name "svc" <service block or dict>)
*/}}
{{- define "textpulse.podLabels" -}}
{{- $svc := default dict .svc -}}
{{- $labels := merge (fromYaml (include "textpulse.labels" .)) (default dict $svc.podLabels) (default dict .root.Values.podLabels) -}}
{{- toYaml $labels -}}
{{- end -}}

{{/*
The Kafka connection settings (TEXTPULSE_KAFKA_*) as "KEY: value" lines: the
kafka ConfigMap of the services and the env of the topics Job (a hook runs
before that ConfigMap exists). Secrets are never here.
*/}}
{{- define "textpulse.kafkaData" -}}
TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS: {{ .Values.kafka.bootstrapServers | quote }}
TEXTPULSE_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if eq (include "textpulse.kafkaSasl" .) "true" }}
TEXTPULSE_KAFKA_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
TEXTPULSE_KAFKA_SASL_USERNAME: {{ .Values.kafka.sasl.username | quote }}
{{- end }}
{{- if .Values.kafka.tls.caSecret.name }}
TEXTPULSE_KAFKA_SSL_CAFILE: /etc/textpulse/kafka-tls/ca.crt
{{- end }}
{{- if .Values.kafka.tls.clientSecret.name }}
TEXTPULSE_KAFKA_SSL_CERTFILE: /etc/textpulse/kafka-tls/user.crt
TEXTPULSE_KAFKA_SSL_KEYFILE: /etc/textpulse/kafka-tls/user.key
{{- end }}
{{- include "textpulse.settingsData" (dict "prefix" "TEXTPULSE_KAFKA_" "settings" .Values.kafka.settings) }}
{{- end -}}

{{/* The projected volume of the Kafka CA and client certificate, when either is set. */}}
{{- define "textpulse.kafkaTlsVolume" -}}
{{- if or .Values.kafka.tls.caSecret.name .Values.kafka.tls.clientSecret.name -}}
- name: kafka-tls
  projected:
    sources:
      {{- with .Values.kafka.tls.caSecret }}
      {{- if .name }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: ca.crt
      {{- end }}
      {{- end }}
      {{- with .Values.kafka.tls.clientSecret }}
      {{- if .name }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .certKey }}
              path: user.crt
            - key: {{ .keyKey }}
              path: user.key
      {{- end }}
      {{- end }}
{{- end }}
{{- end -}}
