{{- define "outboxrelay.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "outboxrelay.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "outboxrelay.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "outboxrelay.secretName" -}}
{{- .Values.existingSecret | default (include "outboxrelay.fullname" .) -}}
{{- end -}}

{{- /* The kubelet probes and Prometheus reach the relay at the pod's IP and
`port`, so http.listen must be on all interfaces at that port; the relay's
default, 127.0.0.1:8080, would leave both relays unready for good. */ -}}
{{- define "outboxrelay.checkListen" -}}
{{- $listen := (.Values.config.http | default dict).listen | default "" | toString -}}
{{- $port := printf "%v" .Values.port -}}
{{- if not (has $listen (list (printf "0.0.0.0:%s" $port) (printf ":%s" $port) (printf "[::]:%s" $port))) -}}
{{- fail (printf "config.http.listen is %q: the probes and /metrics reach the relay on the pod's IP at port %s; set config.http.listen to 0.0.0.0:%s (or set port to match it)" $listen $port $port) -}}
{{- end -}}
{{- end -}}
