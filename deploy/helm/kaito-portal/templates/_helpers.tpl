{{/* Names, labels and the shared pod bits of the KAITO Portal chart. */}}

{{- define "kaito-portal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kaito-portal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kaito-portal.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kaito-portal.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kaito-portal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kaito-portal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kaito-portal
{{- end -}}

{{- define "kaito-portal.selector" -}}
app.kubernetes.io/name: {{ include "kaito-portal.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kaito-portal.webServiceAccount" -}}
{{- default (printf "%s-web" (include "kaito-portal.fullname" .)) .Values.serviceAccount.web.name -}}
{{- end -}}

{{- define "kaito-portal.reconcilerServiceAccount" -}}
{{- default (printf "%s-reconciler" (include "kaito-portal.fullname" .)) .Values.serviceAccount.reconciler.name -}}
{{- end -}}

{{- define "kaito-portal.secretName" -}}
{{- default (include "kaito-portal.fullname" .) .Values.secret.name -}}
{{- end -}}

{{- define "kaito-portal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kaito-portal.leaseName" -}}kaito-portal-reconciler{{- end -}}

{{/* Environment shared by web and reconciler: the ConfigMap, then the Secret. */}}
{{- define "kaito-portal.envFrom" -}}
- configMapRef:
    name: {{ include "kaito-portal.fullname" . }}
- secretRef:
    name: {{ include "kaito-portal.secretName" . }}
{{- end -}}

{{/* Pod-level settings shared by both Deployments. */}}
{{- define "kaito-portal.podSpec" -}}
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
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
