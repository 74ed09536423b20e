{{- define "diffkeeper.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Environment of both containers when the store is in a bucket: the local cache on the store volume (an emptyDir then), the endpoint and region. */}}
{{- define "diffkeeper.remoteEnv" -}}
{{- if .Values.remote.url }}
- { name: DIFFKEEPER_CACHE, value: {{ .Values.storeDir | quote }} }
{{- with .Values.remote.endpoint }}
- { name: AWS_ENDPOINT_URL, value: {{ . | quote }} }
{{- end }}
{{- with .Values.remote.region }}
- { name: AWS_REGION, value: {{ . | quote }} }
{{- end }}
{{- end }}
{{- end }}
