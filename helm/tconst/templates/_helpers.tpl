{{/*
_helpers.tpl — names, labels, the image, the model volume, the workers'
stable addresses and the coordinator's JSON config, shared by every
template. Renders nothing by itself.
*/}}

{{- define "tconst.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: StatefulSet names add "-generation" (11) and their pods'
controller-revision-hash label needs 11 more, so keep it to 40. */}}
{{- define "tconst.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tconst.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tconst.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tconst.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tconst.labels" -}}
helm.sh/chart: {{ include "tconst.chart" . }}
{{ include "tconst.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tconst
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tconst.coordinatorName" -}}
{{- printf "%s-coordinator" (include "tconst.fullname" .) -}}
{{- end -}}

{{/* The headless Service that gives worker pods stable DNS names. */}}
{{- define "tconst.workersServiceName" -}}
{{- printf "%s-workers" (include "tconst.fullname" .) -}}
{{- end -}}

{{- define "tconst.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tconst.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "true" when any pod of the release asks for a GPU. */}}
{{- define "tconst.usesGPU" -}}
{{- if .Values.workers.enabled -}}
{{- ternary "true" "" (eq .Values.workers.device "cuda") -}}
{{- else -}}
{{- ternary "true" "" (gt (int .Values.coordinator.embedded.gpus) 0) -}}
{{- end -}}
{{- end -}}

{{- define "tconst.image" -}}
{{- $tag := .Values.image.tag -}}
{{- if not $tag -}}
{{- $tag = printf "%s-%s" .Chart.AppVersion (ternary "cuda" "cpu" (eq (include "tconst.usesGPU" .) "true")) -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* --model for both binaries; empty for the built-in model. */}}
{{- define "tconst.modelPath" -}}
{{- if ne .Values.model.source "builtin" -}}
{{- if .Values.model.subPath -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) (trimPrefix "/" .Values.model.subPath) -}}
{{- else -}}
{{- .Values.model.mountPath -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Volumes every pod has: /tmp, and the model unless built in. */}}
{{- define "tconst.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- $m := .Values.model }}
{{- if eq $m.source "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.pvc.claimName is required when model.source is pvc" $m.pvc.claimName }}
    readOnly: true
{{- else if eq $m.source "hostPath" }}
- name: model
  hostPath:
    path: {{ required "model.hostPath.path is required when model.source is hostPath" $m.hostPath.path }}
    type: {{ $m.hostPath.type }}
{{- else if eq $m.source "initContainer" }}
- name: model
  emptyDir:
    sizeLimit: {{ $m.initContainer.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "tconst.commonMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if ne .Values.model.source "builtin" }}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment of every container; call with (dict "root" $ "gpus" N):
without GPUs, NVIDIA_VISIBLE_DEVICES=void keeps the NVIDIA runtime from
showing the container every GPU of the node (the CUDA image sets "all"). */}}
{{- define "tconst.commonEnv" -}}
- name: TMPDIR
  value: /tmp
{{- if eq (int .gpus) 0 }}
- name: NVIDIA_VISIBLE_DEVICES
  value: void
{{- end }}
{{- end -}}

{{/* The init container that fills the model emptyDir (model.source initContainer). */}}
{{- define "tconst.modelInitContainers" -}}
{{- $m := .Values.model }}
{{- if eq $m.source "initContainer" }}
- name: model-init
  image: {{ default (include "tconst.image" .) $m.initContainer.image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if not $m.initContainer.command }}
  {{- fail "model.initContainer.command is required when model.source is initContainer" }}
  {{- end }}
  command:
    {{- toYaml $m.initContainer.command | nindent 4 }}
  {{- with $m.initContainer.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "tconst.commonEnv" (dict "root" . "gpus" 0) | nindent 4 }}
    {{- with $m.initContainer.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $m.initContainer.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: model
      mountPath: {{ $m.mountPath }}
{{- end }}
{{- end -}}

{{/*
The StatefulSets of the worker layout, as a YAML list of
{name, role, containers: [{name, role}]}:
  split: <fullname>-context and <fullname>-generation, one worker per pod;
  pair:  <fullname>-pair, two containers (context, generation) per pod;
  both:  <fullname>-worker, one `--role both` worker per pod.
*/}}
{{- define "tconst.workerSets" -}}
{{- $full := include "tconst.fullname" . -}}
{{- $layout := .Values.workers.layout -}}
{{- if eq $layout "split" }}
- name: {{ $full }}-context
  role: context
  containers: [{name: context, role: context}]
- name: {{ $full }}-generation
  role: generation
  containers: [{name: generation, role: generation}]
{{- else if eq $layout "pair" }}
- name: {{ $full }}-pair
  role: pair
  containers: [{name: context, role: context}, {name: generation, role: generation}]
{{- else if eq $layout "both" }}
- name: {{ $full }}-worker
  role: both
  containers: [{name: worker, role: both}]
{{- else }}
{{- fail (printf "workers.layout %q: expected split, pair or both" $layout) }}
{{- end }}
{{- end -}}

{{/* Control and data ports of a role (both uses the context ports). */}}
{{- define "tconst.rolePorts" -}}
{{- $p := ternary .root.Values.workers.ports.generation .root.Values.workers.ports.context (eq .role "generation") -}}
{{- toJson (dict "control" (int $p.control) "data" (int $p.data)) -}}
{{- end -}}

{{/*
--workers: every worker's control address from the StatefulSets' stable
DNS names (pod.headless-service.namespace.svc.domain:port), pair by pair:
context-0, generation-0, context-1, generation-1, ... (a both worker is a
pair by itself).
*/}}
{{- define "tconst.workerAddresses" -}}
{{- $root := . -}}
{{- $svc := include "tconst.workersServiceName" . -}}
{{- $sets := include "tconst.workerSets" . | fromYamlArray -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.workers.pairs) -}}
{{- range $set := $sets -}}
{{- range $c := $set.containers -}}
{{- $ports := include "tconst.rolePorts" (dict "root" $root "role" $c.role) | fromJson -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc.%s:%d" $set.name $i $svc $root.Release.Namespace $root.Values.clusterDomain (int $ports.control)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/*
The coordinator's JSON config (tconstd --config): the keys the chart owns,
over coordinator.config. Keys are tconstd knob names (docs/config.md).
*/}}
{{- define "tconst.coordinatorConfig" -}}
{{- $c := .Values.coordinator -}}
{{- $cfg := dict
  "listen" (printf "0.0.0.0:%d" (int $c.ports.grpc))
  "http_listen" (printf "0.0.0.0:%d" (int $c.ports.http))
  "drain_timeout" $c.drainTimeout
  "worker_timeout" $c.workerTimeout
  "log_level" .Values.log.level
  "log_format" .Values.log.format -}}
{{- with include "tconst.modelPath" . }}
{{- $_ := set $cfg "model" . -}}
{{- end }}
{{- if .Values.persistence.enabled }}
{{- $_ := set $cfg "data_dir" .Values.persistence.mountPath -}}
{{- end }}
{{- if .Values.workers.enabled }}
{{- $_ := set $cfg "workers" (include "tconst.workerAddresses" .) -}}
{{- else }}
{{- $_ := set $cfg "worker_mode" $c.embedded.workerMode -}}
{{- $_ := set $cfg "worker_binary" "/usr/local/bin/tconst-worker" -}}
{{- with $c.embedded.device }}
{{- $_ := set $cfg "device" . -}}
{{- end }}
{{- end }}
{{- merge $cfg (deepCopy $c.config) | toPrettyJson -}}
{{- end -}}

{{/* Seconds: preStop sleep + drain + margin. */}}
{{- define "tconst.coordinatorGrace" -}}
{{- $c := .Values.coordinator -}}
{{- add (int $c.preStopSleepSeconds) (int (ceil $c.drainTimeout)) (int $c.terminationGraceMarginSeconds) -}}
{{- end -}}

{{- define "tconst.workerPreStop" -}}
{{- $w := .Values.workers -}}
{{- $s := int $w.preStopSleepSeconds -}}
{{- if $w.outliveCoordinatorDrain -}}
{{- $s = add $s (int .Values.coordinator.preStopSleepSeconds) (int (ceil .Values.coordinator.drainTimeout)) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{- define "tconst.workerGrace" -}}
{{- add (int (include "tconst.workerPreStop" .)) (int .Values.workers.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/* resources with `gpus` of gpuResource added to requests and limits. */}}
{{- define "tconst.resources" -}}
{{- $res := deepCopy (default (dict) .resources) -}}
{{- if gt (int .gpus) 0 -}}
{{- range $k := list "requests" "limits" -}}
{{- $m := default (dict) (get $res $k) -}}
{{- $_ := set $m $.gpuResource (int $.gpus) -}}
{{- $_ := set $res $k $m -}}
{{- end -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Checks the schema cannot express; included by the ConfigMap, which always renders. */}}
{{- define "tconst.validate" -}}
{{- $c := .Values.coordinator -}}
{{- if eq (int $c.ports.grpc) (int $c.ports.http) -}}
{{- fail "coordinator.ports.grpc and coordinator.ports.http must differ" -}}
{{- end -}}
{{- if .Values.workers.enabled -}}
{{- $p := .Values.workers.ports -}}
{{- $all := list (int $p.context.control) (int $p.context.data) (int $p.generation.control) (int $p.generation.data) -}}
{{- if ne (len (uniq $all)) 4 -}}
{{- fail "workers.ports: the four control/data ports must differ (they share the headless Service, and a pair pod)" -}}
{{- end -}}
{{- end -}}
{{- if and $c.autoscaling.enabled (lt (int $c.autoscaling.maxReplicas) (int $c.autoscaling.minReplicas)) -}}
{{- fail "coordinator.autoscaling.maxReplicas must be >= minReplicas" -}}
{{- end -}}
{{- end -}}
