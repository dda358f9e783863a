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

{{/* The any-address to listen on, and a container's own address for the
data plane ($(POD_IP), expanded by the kubelet), of ipFamily. */}}
{{- define "tconst.anyAddr" -}}
{{- ternary "[::]" "0.0.0.0" (eq .Values.ipFamily "IPv6") -}}
{{- end -}}

{{- define "tconst.podIPAddr" -}}
{{- ternary "[$(POD_IP)]" "$(POD_IP)" (eq .Values.ipFamily "IPv6") -}}
{{- end -}}

{{/* spec fields of every Service for ipFamily (none for IPv4: the
cluster's default, as before ipFamily existed). */}}
{{- define "tconst.serviceIPFamily" -}}
{{- if eq .Values.ipFamily "IPv6" -}}
ipFamilyPolicy: SingleStack
ipFamilies: [IPv6]
{{- end -}}
{{- end -}}

{{/*
Devices of tconstd's spawned workers (workers.enabled false), as JSON
{"device", "context"} ("" = leave tconstd's knob unset): device defaults to
cuda:0 when the pod requests GPUs, else cpu (tconstd's own default, auto,
would take a GPU the container sees without having asked for it), and with
2 GPUs in workerMode split the context worker takes the GPU the generation
worker does not. tconst.validate refuses what cannot run.
*/}}
{{- define "tconst.embeddedDevices" -}}
{{- $e := .Values.coordinator.embedded -}}
{{- $gpus := int $e.gpus -}}
{{- $dev := $e.device -}}
{{- $ctx := $e.contextDevice -}}
{{- if and (not $dev) (gt $gpus 0) (ne $e.workerMode "inprocess") -}}
{{- $dev = "cuda:0" -}}
{{- else if not $dev -}}
{{- $dev = "cpu" -}}
{{- end -}}
{{- if and (not $ctx) (ge $gpus 2) (eq $e.workerMode "split") -}}
{{- $ctx = ternary "cuda:0" "cuda:1" (eq $dev "cuda:1") -}}
{{- end -}}
{{- toJson (dict "device" $dev "context" $ctx) -}}
{{- end -}}

{{/*
--worker-start-timeout: coordinator.workerStartTimeout, or (0) the longest
startup probe budget among the coordinator and, with workers.enabled, the
workers (periodSeconds x failureThreshold), within tconstd's [1, 86400].
*/}}
{{- define "tconst.workerStartTimeout" -}}
{{- $c := .Values.coordinator -}}
{{- $t := $c.workerStartTimeout -}}
{{- if not $t -}}
{{- $t = mul (int $c.startupProbe.periodSeconds) (int $c.startupProbe.failureThreshold) -}}
{{- if .Values.workers.enabled -}}
{{- $w := .Values.workers.startupProbe -}}
{{- $t = max $t (mul (int $w.periodSeconds) (int $w.failureThreshold)) -}}
{{- end -}}
{{- $t = min (max $t 1) 86400 -}}
{{- end -}}
{{- toJson (dict "seconds" $t) -}}
{{- end -}}

{{/*
The coordinator's JSON config (tconstd --config): the keys the chart owns,
over coordinator.config. Keys are tconstd knob names (docs/config.md).
*/}}
{{- define "tconst.coordinatorConfig" -}}
{{- $c := .Values.coordinator -}}
{{- $any := include "tconst.anyAddr" . -}}
{{- $cfg := dict
  "listen" (printf "%s:%d" $any (int $c.ports.grpc))
  "http_listen" (printf "%s:%d" $any (int $c.ports.http))
  "drain_timeout" $c.drainTimeout
  "worker_timeout" $c.workerTimeout
  "worker_start_timeout" (include "tconst.workerStartTimeout" . | fromJson).seconds
  "log_level" .Values.log.level
  "log_format" .Values.log.format -}}
{{- with include "tconst.modelPath" . }}
{{- $_ := set $cfg "model" . -}}
{{- end }}
{{- if $c.ports.openai }}
{{- $_ := set $cfg "openai_listen" (printf "%s:%d" $any (int $c.ports.openai)) -}}
{{- end }}
{{- if .Values.persistence.enabled }}
{{- $_ := set $cfg "data_dir" .Values.persistence.mountPath -}}
{{- end }}
{{- if .Values.workers.enabled }}
{{- $_ := set $cfg "workers" (include "tconst.workerAddresses" .) -}}
{{- else }}
{{- $_ := set $cfg "worker_mode" $c.embedded.workerMode -}}
{{- $_ := set $cfg "worker_binary" "/usr/local/bin/tconst-worker" -}}
{{- $d := include "tconst.embeddedDevices" . | fromJson -}}
{{- with $d.device }}
{{- $_ := set $cfg "device" . -}}
{{- end }}
{{- with $d.context }}
{{- $_ := set $cfg "context_device" . -}}
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
{{- if and $c.ports.openai (or (eq (int $c.ports.openai) (int $c.ports.grpc)) (eq (int $c.ports.openai) (int $c.ports.http))) -}}
{{- fail "coordinator.ports.openai must differ from coordinator.ports.grpc and coordinator.ports.http" -}}
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
{{- if not .Values.workers.enabled -}}
{{- include "tconst.validateEmbedded" . -}}
{{- end -}}
{{- include "tconst.validateLimits" . -}}
{{- end -}}

{{/* What tconstd itself would refuse at start (exit 1 or 2, a crash
loop while the worker pods hold their GPUs), said at install instead. */}}
{{- define "tconst.validateLimits" -}}
{{- $w := .Values.workers -}}
{{- $cfg := .Values.coordinator.config | default dict -}}
{{- if $w.enabled -}}
{{- $n := int $w.pairs -}}
{{- if ne $w.layout "both" -}}{{- $n = mul $n 2 -}}{{- end -}}
{{- if gt (int $n) 32 -}}
{{- fail (printf "workers.pairs %d with layout %s makes %d worker processes; tconstd attaches at most 32" (int $w.pairs) $w.layout (int $n)) -}}
{{- end -}}
{{- if and (eq $w.device "cuda") (gt (int $w.gpusPerWorker) 1) -}}
{{- fail (printf "workers.gpusPerWorker %d: a worker runs on one device (--device cuda:0); the other GPUs would be held for nothing" (int $w.gpusPerWorker)) -}}
{{- end -}}
{{- end -}}
{{- if and (get $cfg "weight_dtype") (or $w.enabled (eq .Values.coordinator.embedded.workerMode "inprocess")) -}}
{{- fail "coordinator.config.weight_dtype is for workers tconstd spawns on a GPU; with workers.enabled set workers.weightDtype (in-process workers run on the CPU)" -}}
{{- end -}}
{{- $mmb := int64 (get $cfg "max_message_bytes" | default 4194304) -}}
{{- $budget := int64 (get $cfg "large_request_budget" | default 67108864) -}}
{{- if lt $budget $mmb -}}
{{- fail (printf "coordinator.config.large_request_budget %d is below max_message_bytes %d (tconstd refuses it: a request of the largest size could never run)" $budget $mmb) -}}
{{- end -}}
{{- if hasKey $cfg "grpc_memory_quota" -}}
{{- $q := int64 (get $cfg "grpc_memory_quota") -}}
{{- if and (gt $q 0) (lt $q (mul $mmb 4)) -}}
{{- fail (printf "coordinator.config.grpc_memory_quota %d is below 4 x max_message_bytes %d (tconstd refuses it); 0 means no quota" $q $mmb) -}}
{{- end -}}
{{- else if gt (mul $mmb 4) 4294967296 -}}
{{- fail (printf "coordinator.config.max_message_bytes %d needs grpc_memory_quota of at least 4 x that (the default quota is 4 GiB)" $mmb) -}}
{{- end -}}
{{- $sm := .Values.metrics.serviceMonitor -}}
{{- if and $sm.enabled (gt (include "tconst.durationMs" $sm.scrapeTimeout | int64) (include "tconst.durationMs" $sm.interval | int64)) -}}
{{- fail (printf "metrics.serviceMonitor.scrapeTimeout %s is longer than its interval %s (the Prometheus Operator drops such a ServiceMonitor)" $sm.scrapeTimeout $sm.interval) -}}
{{- end -}}
{{- end -}}

{{/* A duration of one unit (the schema's ^[0-9]+(ms|s|m|h)$) in milliseconds. */}}
{{- define "tconst.durationMs" -}}
{{- $n := regexFind "^[0-9]+" . | int64 -}}
{{- $u := regexFind "(ms|s|m|h)$" . -}}
{{- if eq $u "ms" -}}{{ $n }}{{- else if eq $u "s" -}}{{ mul $n 1000 }}{{- else if eq $u "m" -}}{{ mul $n 60000 }}{{- else -}}{{ mul $n 3600000 }}{{- end -}}
{{- end -}}

{{/* Spawned workers' devices against the pod's GPUs: tconstd refuses
--context-device outside split mode and any cuda device in inprocess mode
(exit 2); a cuda:N the container lacks fails the worker; a GPU no worker
uses is a GPU the pod holds for nothing (the mistake of a pod that asks
for GPUs and runs on the CPU). */}}
{{- define "tconst.validateEmbedded" -}}
{{- $e := .Values.coordinator.embedded -}}
{{- $gpus := int $e.gpus -}}
{{- $d := include "tconst.embeddedDevices" . | fromJson -}}
{{- if and $e.contextDevice (ne $e.workerMode "split") -}}
{{- fail (printf "coordinator.embedded.contextDevice %s needs workerMode split (workerMode %s spawns no context worker of its own)" $e.contextDevice $e.workerMode) -}}
{{- end -}}
{{- $used := list -}}
{{- if eq $e.workerMode "inprocess" -}}
{{- if or (gt $gpus 0) (hasPrefix "cuda:" $d.device) -}}
{{- fail "coordinator.embedded.workerMode inprocess runs on the CPU: gpus must be 0 and device cpu or empty" -}}
{{- end -}}
{{- else -}}
{{- $used = append $used (default "cpu" $d.device) -}}
{{- if eq $e.workerMode "split" -}}
{{- $used = append $used (default (default "cpu" $d.device) $d.context) -}}
{{- end -}}
{{- end -}}
{{- $idx := list -}}
{{- range $dev := $used -}}
{{- if hasPrefix "cuda:" $dev -}}
{{- $n := trimPrefix "cuda:" $dev | atoi -}}
{{- if ge $n $gpus -}}
{{- fail (printf "coordinator.embedded: device %s, but the pod requests %d GPU(s) (gpus), which its container sees as cuda:0 and up" $dev $gpus) -}}
{{- end -}}
{{- $idx = append $idx $n -}}
{{- end -}}
{{- end -}}
{{- range $i := until $gpus -}}
{{- if not (has $i $idx) -}}
{{- fail (printf "coordinator.embedded.gpus %d: GPU cuda:%d is requested but no spawned worker uses it (workerMode %s, devices %s)" $gpus $i $e.workerMode (join "," $used)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
