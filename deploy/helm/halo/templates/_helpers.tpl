{{/*
Names. They are fixed rather than derived from the release name: the data plane's token is
checked against system:serviceaccount:<namespace>:halo-dataplane, and only one release per
cluster makes sense (VirtualIPs are cluster-wide).
*/}}
{{- define "halo.controller.name" -}}halo-controller{{- end -}}
{{- define "halo.dataplane.name" -}}halo-dataplane{{- end -}}

{{- define "halo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "halo.labels" -}}
helm.sh/chart: {{ include "halo.chart" . }}
app.kubernetes.io/name: halo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: halo
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "halo.selectorLabels" (list . "controller"). */}}
{{- define "halo.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: halo
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* All labels of one component: include "halo.componentLabels" (list . "controller"). */}}
{{- define "halo.componentLabels" -}}
{{ include "halo.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The image reference: repository:tag, or repository@digest. */}}
{{- define "halo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The in-cluster DNS name the data planes dial, and the certificate names. */}}
{{- define "halo.controller.host" -}}
{{- printf "%s.%s.svc" (include "halo.controller.name" .) .Release.Namespace -}}
{{- end -}}

{{- define "halo.controller.url" -}}
{{- printf "https://%s:%d" (include "halo.controller.host" .) (int .Values.controller.streamPort) -}}
{{- end -}}

{{/*
Where the kubelet probes the data plane's admin listener (dataplane.adminAddress, host:port or
[v6]:port). The pod shares the node's network, so a wildcard address is probed on loopback.
*/}}
{{- define "halo.dataplane.adminPort" -}}
{{- $addr := .Values.dataplane.adminAddress -}}
{{- if not (regexMatch ":[0-9]+$" $addr) -}}
{{- fail (printf "dataplane.adminAddress %q: expected host:port" $addr) -}}
{{- end -}}
{{- regexFind "[0-9]+$" $addr -}}
{{- end -}}

{{- define "halo.dataplane.adminHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" .Values.dataplane.adminAddress "" | trimPrefix "[" | trimSuffix "]" -}}
{{- if eq $host "0.0.0.0" -}}127.0.0.1
{{- else if eq $host "::" -}}::1
{{- else -}}{{ $host }}
{{- end -}}
{{- end -}}
