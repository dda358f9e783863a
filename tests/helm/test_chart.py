#!/usr/bin/python3
"""test_chart.py — the Helm chart test (ctest helm.render, via run.sh).

helm is not installable on the machines this project builds on, so this
stands in for `helm lint` / `helm template`: helm/tconst is rendered by
render/main.go (Go text/template + sprig + helm's built-ins) and checked:

  * values: the chart's defaults, tests/helm/values-all.yaml (every key set)
    and one case per other topology validate against values.schema.json
    (draft 7, python3-jsonschema, as helm validates them); invalid values
    are rejected (one case per rule) and contradictions the schema cannot
    express are refused by the templates; values.yaml and values-all.yaml
    cover the same keys; every template renders in at least one case.
  * schema vs binaries: every values key that becomes a knob, and every
    tconstd knob in coordinator.config, takes exactly the type and range
    `--help` states (probed at and just beyond the bounds); the keys the
    chart renders itself are refused in coordinator.config.
  * monitoring: alerts (PrometheusRule) and the Grafana dashboard query
    only metrics daemon/metrics.h exports, with the selector and the
    values' thresholds; the dashboard shows every metric family; promtool
    parses the rules and the queries, and unit-tests every alert on
    synthetic series (fires past its threshold after its `for` only).
  * manifests: YAML parses; kinds, names, labels and selectors; ports;
    probes; GPU requests; NCCL env; /dev/shm; drain timing; the journal
    and model volumes; --workers lists exactly the StatefulSets' pods by
    their stable DNS names.
  * binaries: every flag passed to tconstd (ConfigMap keys and args) and
    to tconst-worker (args) appears in `tconstd --help` / `tconst-worker
    --help`, with a value of the type and range the help states; probe paths
    appear in tconstd's help and probe ports are the ports the binaries are
    told to listen on; the chart's default ports are the binaries' defaults;
    tconstd itself reads every rendered ConfigMap (preflight_tconstd);
    spawned workers' devices match the pod's GPUs; worker_start_timeout
    covers the startup probes; addresses follow ipFamily.
  * docker/: the Dockerfiles install the binaries where the chart runs
    them, as a non-root user, and EXPOSE the chart's default ports.

What it is not: a Kubernetes API-server validation (no OpenAPI schemas of
the kinds) and not a deployment; see docs/kubernetes.md.

Usage: test_chart.py --renderer BIN --chart DIR --tconstd BIN --worker BIN
                     --values-all FILE --repo DIR --promtool BIN
"""
import argparse
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

FAILS = []
CHECKS = [0]


def check(cond, msg):
    CHECKS[0] += 1
    if not cond:
        FAILS.append(msg)
    return cond


def die(msg):
    print("FAIL: " + msg)
    sys.exit(1)


# ---- the binaries' --help ---------------------------------------------------

FLAG_LINE = re.compile(r"^\s+(?:-\w,\s*)?--(\[no-\])?([a-z0-9][a-z0-9-]*)(?:[ =]([A-Z][A-Z_]*))?\s*$")
KNOB_INFO = re.compile(r"\((string|int|number|bool); default ([^;]*?)(?:; range \[([^,\]]+), ([^\]]+)\])?(?:; env ([A-Z0-9_]+))?\)")


def read_help(binary):
    """{flag: {type, default, lo, hi, env, text}} from BINARY --help."""
    if not os.access(binary, os.X_OK):
        die("%s: not found or not executable (build it first)" % binary)
    p = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    text = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        die("%s --help exited %d:\n%s" % (binary, p.returncode, text))
    flags, cur = {}, None
    for line in text.splitlines():
        m = FLAG_LINE.match(line)
        if m:
            cur = m.group(2)
            flags[cur] = {"type": None, "default": None, "lo": None, "hi": None, "env": None,
                          "negatable": bool(m.group(1)), "metavar": m.group(3), "text": ""}
            continue
        if cur and line.startswith("      "):
            flags[cur]["text"] += line.strip() + " "
            k = KNOB_INFO.search(line)
            if k:
                f = flags[cur]
                f["type"] = k.group(1)
                f["default"] = k.group(2).strip('"')
                f["lo"], f["hi"] = k.group(3), k.group(4)
                f["env"] = k.group(5)
        else:
            cur = None
    if not flags:
        die("%s --help: no --flags found in:\n%s" % (binary, text))
    return flags, text


def alternatives(text):
    """Choices a help text lists as a|b|c (cuda:N matches cuda:0 ...)."""
    out = []
    for m in re.finditer(r"\b[\w:]+(?:\|[\w:]+)+", text):
        out += m.group(0).split("|")
    return out


def value_ok(flag, info, value, where, json_typed=False):
    """Type, range and listed choices of VALUE for one flag (text) or one
    config-file key (json_typed: tconstd's config reader wants a JSON
    number for int/number knobs, a JSON bool for bool knobs)."""
    t = info["type"]
    if json_typed and t in ("int", "number", "bool"):
        want = bool if t == "bool" else (int, float)
        if not check(isinstance(value, want) and (t == "bool" or not isinstance(value, bool)),
                     "%s: %s=%r is not a JSON %s" % (where, flag, value, "bool" if t == "bool" else "number")):
            return False
    if t == "bool":
        return check(isinstance(value, bool) or str(value).lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"),
                     "%s: %s=%r is not a bool" % (where, flag, value))
    if t in ("int", "number"):
        if isinstance(value, bool):
            return check(False, "%s: %s=%r is a bool, the help says %s" % (where, flag, value, t))
        try:
            v = int(value) if t == "int" and not isinstance(value, float) else float(value)
        except (TypeError, ValueError):
            return check(False, "%s: %s=%r is not an %s" % (where, flag, value, t))
        if t == "int":
            check(float(value) == int(float(value)), "%s: %s=%r is not an integer" % (where, flag, value))
        if info["lo"] is not None:
            check(float(info["lo"]) <= float(v) <= float(info["hi"]),
                  "%s: %s=%r is outside the help's range [%s, %s]" % (where, flag, value, info["lo"], info["hi"]))
        return True
    if t == "string":
        check(isinstance(value, str), "%s: %s=%r is not a string" % (where, flag, value))
    alts = alternatives(info["text"])
    if alts and isinstance(value, str) and "$(" not in value:
        ok = any(a == value or (a.endswith(":N") and re.fullmatch(re.escape(a[:-1]) + r"[0-9]+", value)) for a in alts)
        check(ok, "%s: %s=%r is not one of the help's choices %s" % (where, flag, value, "|".join(alts)))
    return True


def parse_args(args, where):
    """[('flag', value|None)] of an argv list: --a b, --a=b, --flag (bool)."""
    out, i = [], 0
    while i < len(args):
        a = str(args[i])
        if not check(a.startswith("--"), "%s: argument %r is not a --flag" % (where, a)):
            i += 1
            continue
        if "=" in a:
            k, v = a[2:].split("=", 1)
            out.append((k, v))
            i += 1
        elif i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
            out.append((a[2:], str(args[i + 1])))
            i += 2
        else:
            out.append((a[2:], None))
            i += 1
    return out


def check_flags(binary_name, flags, argv, where):
    got = {}
    for k, v in parse_args(argv, where):
        name = k[3:] if k.startswith("no-") and k[3:] in flags and flags[k[3:]]["negatable"] else k
        if check(name in flags, "%s: %s is given --%s, which `%s --help` does not list" % (where, binary_name, k, binary_name)):
            if v is not None and flags[name]["type"] not in (None, "bool"):
                value_ok("--" + name, flags[name], v, where)
        got[name] = v
    return got


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def host_of(addr):
    return addr.rsplit(":", 1)[0]


# ---- rendering --------------------------------------------------------------


class Render:
    def __init__(self, a, tmp):
        self.a, self.tmp, self.n = a, tmp, 0

    def files(self, cases):
        out = []
        for c in cases:
            if isinstance(c, str):
                out.append(c)
            else:
                self.n += 1
                f = os.path.join(self.tmp, "values-%d.yaml" % self.n)
                with open(f, "w") as fh:
                    yaml.safe_dump(c, fh)
                out.append(f)
        return out

    def run(self, values, extra=(), values_only=False):
        self.n += 1
        vout = os.path.join(self.tmp, "merged-%d.json" % self.n)
        notes = os.path.join(self.tmp, "notes-%d.txt" % self.n)
        cmd = [self.a.renderer, "--chart", self.a.chart, "--release", "tc", "--namespace", "inference",
               "--values-out", vout, "--notes-out", notes] + list(extra)
        for f in self.files(values):
            cmd += ["-f", f]
        if values_only:
            cmd.append("--values-only")
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        merged = json.load(open(vout)) if os.path.exists(vout) else None
        notes_text = open(notes).read() if os.path.exists(notes) else ""
        return p.returncode, p.stdout.decode(), p.stderr.decode(), merged, notes_text


def split_docs(text):
    """[(source template, doc)] of a rendered stream."""
    docs, src = [], None
    for chunk in re.split(r"^---\s*$", text, flags=re.M):
        m = re.search(r"^# Source: (\S+)", chunk, flags=re.M)
        if m:
            src = m.group(1)
        d = yaml.safe_load(chunk)
        if d is not None:
            docs.append((src, d))
    return docs


# ---- manifest checks --------------------------------------------------------

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PORTNAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def env_of(ctr):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in ctr.get("env") or []}


def mounts_of(ctr):
    return {m["mountPath"]: m["name"] for m in ctr.get("volumeMounts") or []}


def volumes_of(pod):
    return {v["name"]: v for v in pod.get("volumes") or []}


def under_mount(path, ctr):
    return any(path == mp or path.startswith(mp.rstrip("/") + "/") for mp in mounts_of(ctr))


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_pod_common(name, pod, values, where):
    sc = pod.get("securityContext") or {}
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, "%s: pod must run as non-root" % where)
    vols = volumes_of(pod)
    for v in vols.values():
        check(DNS1123.match(v["name"]) is not None, "%s: volume name %r" % (where, v["name"]))
    for ctr in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        w = "%s container %s" % (where, ctr["name"])
        csc = ctr.get("securityContext") or {}
        check(csc.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation must be false" % w)
        for mp, vn in mounts_of(ctr).items():
            check(vn in vols, "%s: mount %s names volume %s, which the pod lacks" % (w, mp, vn))
        if csc.get("readOnlyRootFilesystem"):
            check("/tmp" in mounts_of(ctr), "%s: read-only root filesystem but no /tmp volume" % w)
            check(env_of(ctr).get("TMPDIR") == "/tmp", "%s: TMPDIR must point at the /tmp volume" % w)
        r = ctr.get("resources") or {}
        if not any("gpu" in k for k in list((r.get("limits") or {})) + list((r.get("requests") or {}))):
            check(env_of(ctr).get("NVIDIA_VISIBLE_DEVICES") == "void",
                  "%s: no GPU requested but NVIDIA_VISIBLE_DEVICES is not void (the runtime would show every GPU)" % w)
        for p in ctr.get("ports") or []:
            check(PORTNAME.match(p["name"]) is not None and len(p["name"]) <= 15, "%s: port name %r" % (w, p["name"]))
    # the model volume
    m = values["model"]
    if m["source"] != "builtin":
        v = vols.get("model")
        if check(v is not None, "%s: model.source %s but no model volume" % (where, m["source"])):
            key = {"pvc": "persistentVolumeClaim", "hostPath": "hostPath", "initContainer": "emptyDir"}[m["source"]]
            check(key in v, "%s: model volume is not a %s" % (where, key))
            if m["source"] == "pvc":
                check(v[key]["claimName"] == m["pvc"]["claimName"] and v[key].get("readOnly") is True,
                      "%s: model PVC claim/readOnly" % where)
            if m["source"] == "hostPath":
                check(v[key]["path"] == m["hostPath"]["path"], "%s: model hostPath" % where)
            if m["source"] == "initContainer":
                inits = pod.get("initContainers") or []
                check(len(inits) == 1 and inits[0]["command"] == m["initContainer"]["command"] and
                      "model" in mounts_of(inits[0]).values(),
                      "%s: the model init container writes the model volume" % where)
    else:
        check("model" not in vols and not pod.get("initContainers"), "%s: builtin model needs no volume" % where)


def gpu_of(ctr, res):
    r = ctr.get("resources") or {}
    return (r.get("requests") or {}).get(res), (r.get("limits") or {}).get(res)


def check_release(case, docs, values, bins, notes):
    (dflags, dhelp), (wflags, whelp) = bins
    ns = "inference"
    by_kind = {}
    seen = set()
    for src, d in docs:
        w = "%s: %s" % (case, src)
        for k in ("apiVersion", "kind", "metadata"):
            check(k in d, "%s: document without %s" % (w, k))
        kind, name = d.get("kind"), d["metadata"].get("name", "")
        check(DNS1123.match(name) is not None and len(name) <= 63, "%s: %s name %r is not a DNS label" % (w, kind, name))
        check((kind, name) not in seen, "%s: %s %s rendered twice" % (w, kind, name))
        seen.add((kind, name))
        check(d["metadata"].get("namespace") == ns, "%s: %s %s not in the release namespace" % (w, kind, name))
        labels = d["metadata"].get("labels") or {}
        check(labels.get("app.kubernetes.io/instance") == "tc" and labels.get("app.kubernetes.io/managed-by") == "Helm",
              "%s: %s %s lacks the standard labels" % (w, kind, name))
        for k, v in labels.items():
            check(isinstance(v, str) and len(v) <= 63, "%s: label %s=%r" % (w, k, v))
        if kind == "ConfigMap" and "tconst.json" in (d.get("data") or {}):
            kind = "ConfigMap (dashboard)"
        by_kind.setdefault(kind, []).append(d)

    c, wv, pers = values["coordinator"], values["workers"], values["persistence"]
    workers_on = wv["enabled"]
    model_path = None
    if values["model"]["source"] != "builtin":
        model_path = values["model"]["mountPath"].rstrip("/") + ("/" + values["model"]["subPath"] if values["model"]["subPath"] else "")

    # -- kinds present
    want = {"Deployment": 1, "Service": 2 if workers_on else 1, "ConfigMap": 1}
    want["StatefulSet"] = ({"split": 2, "pair": 1, "both": 1}[wv["layout"]]) if workers_on else 0
    want["PersistentVolumeClaim"] = 1 if pers["enabled"] and not pers["existingClaim"] else 0
    want["PodDisruptionBudget"] = int(c["podDisruptionBudget"]["enabled"]) + int(workers_on and wv["podDisruptionBudget"]["enabled"])
    want["HorizontalPodAutoscaler"] = int(c["autoscaling"]["enabled"])
    want["ServiceMonitor"] = int(values["metrics"]["serviceMonitor"]["enabled"])
    want["PrometheusRule"] = int(values["metrics"]["prometheusRule"]["enabled"])
    want["ConfigMap (dashboard)"] = int(values["metrics"]["grafanaDashboard"]["enabled"])
    want["ServiceAccount"] = int(values["serviceAccount"]["create"])
    for kind, n in want.items():
        check(len(by_kind.get(kind, [])) == n, "%s: %d %s rendered, expected %d" % (case, len(by_kind.get(kind, [])), kind, n))
    extra = set(by_kind) - set(want)
    check(not extra, "%s: unexpected kinds %s" % (case, sorted(extra)))

    # -- coordinator: Deployment + ConfigMap
    dep = by_kind["Deployment"][0]
    w = "%s: Deployment %s" % (case, dep["metadata"]["name"])
    pod = dep["spec"]["template"]["spec"]
    plabels = dep["spec"]["template"]["metadata"]["labels"]
    check(labels_match(dep["spec"]["selector"]["matchLabels"], plabels), "%s: selector does not match the pod labels" % w)
    check_pod_common("coordinator", pod, values, w)
    ctrs = pod["containers"]
    check(len(ctrs) == 1, "%s: one container expected" % w)
    ctr = ctrs[0]
    check(os.path.basename(ctr["command"][0]) == "tconstd", "%s: command is not tconstd" % w)
    args = check_flags("tconstd", dflags, ctr["command"][1:] + ctr.get("args", []), w)
    for e in ctr.get("env") or []:
        if e["name"].startswith("TCONST_"):
            check(any(f["env"] == e["name"] for f in dflags.values()), "%s: env %s is no tconstd knob" % (w, e["name"]))
    cm = by_kind["ConfigMap"][0]
    cfg = {}
    if check("config" in args and args["config"], "%s: tconstd gets no --config" % w):
        cdir, cfile = os.path.dirname(args["config"]), os.path.basename(args["config"])
        vname = mounts_of(ctr).get(cdir)
        vol = volumes_of(pod).get(vname) or {}
        check(vol.get("configMap", {}).get("name") == cm["metadata"]["name"], "%s: --config is not on the ConfigMap volume" % w)
        if check(cfile in cm["data"], "%s: ConfigMap lacks %s" % (w, cfile)):
            raw = cm["data"][cfile]
            cfg = json.loads(raw)
            ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
            check(ann.get("checksum/config") == hashlib.sha256(raw.rstrip("\n").encode()).hexdigest(),
                  "%s: checksum/config is not the ConfigMap's content" % w)
    for k, v in cfg.items():
        flag = k.replace("_", "-")
        if check(flag in dflags, "%s: config key %r is no flag of `tconstd --help`" % (w, k)):
            value_ok("--" + flag, dflags[flag], v, w + " config", json_typed=True)
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
    if values["metrics"]["podAnnotations"] and not values["metrics"]["serviceMonitor"]["enabled"]:
        check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(ports.get("http")) and
              ann.get("prometheus.io/path") == "/metrics", "%s: prometheus.io annotations" % w)
    else:
        check("prometheus.io/scrape" not in ann,
              "%s: prometheus.io annotations while metrics.podAnnotations is false or a ServiceMonitor scrapes" % w)
    v6 = values.get("ipFamily", "IPv4") == "IPv6"
    any_host, pod_host = ("[::]", "[$(POD_IP)]") if v6 else ("0.0.0.0", "$(POD_IP)")
    oai = values["coordinator"]["ports"]["openai"]
    check(("openai" in ports) == bool(oai) and ("openai_listen" in cfg) == bool(oai),
          "%s: coordinator.ports.openai %s, container port %s, openai_listen %r" % (w, oai, ports.get("openai"),
                                                                                 cfg.get("openai_listen")))
    for key, pname in (("listen", "grpc"), ("http_listen", "http")) + ((("openai_listen", "openai"),) if oai else ()):
        addr = cfg.get(key, "")
        if check(addr != "", "%s: config sets no %s" % (w, key)):
            check(port_of(addr) == ports.get(pname), "%s: %s %s vs containerPort %s=%s" % (w, key, addr, pname, ports.get(pname)))
            check(host_of(addr) == any_host, "%s: %s %s is not ipFamily %s's any-address %s" % (w, key, addr, values.get("ipFamily", "IPv4"), any_host))
    for s in by_kind.get("Service", []):
        fam = (s["spec"].get("ipFamilyPolicy"), s["spec"].get("ipFamilies"))
        check(fam == (("SingleStack", ["IPv6"]) if v6 else (None, None)),
              "%s: Service %s ipFamilyPolicy/ipFamilies %s with ipFamily %s" % (case, s["metadata"]["name"], fam, values.get("ipFamily", "IPv4")))
    # probes: paths the daemon serves (its help names them), on the http port
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        pr = ctr.get(probe) or {}
        g = pr.get("httpGet") or {}
        check(g.get("path") == path, "%s: %s path %r, expected %s" % (w, probe, g.get("path"), path))
        check(path in dhelp, "%s: %s is not in `tconstd --help`" % (w, path))
        check(g.get("port") in ("http", ports.get("http")), "%s: %s is not on the http port" % (w, probe))
    sp = ctr["startupProbe"]
    check(sp["periodSeconds"] * sp["failureThreshold"] >= 300, "%s: startupProbe allows < 5 min for model load" % w)
    # --worker-start-timeout: tconstd exits 1 when a worker is not up by then,
    # so by default it waits as long as the kubelet waits for the pods to
    # start (the longest startup probe budget, capped to tconstd's range)
    wst = cfg.get("worker_start_timeout")
    if c.get("workerStartTimeout", 0):
        check(wst == c.get("workerStartTimeout", 0), "%s: worker_start_timeout %r, coordinator.workerStartTimeout is %r" % (w, wst, c.get("workerStartTimeout", 0)))
    elif check(isinstance(wst, (int, float)) and not isinstance(wst, bool), "%s: config sets no worker_start_timeout (tconstd's default %s s < the startup probes)" % (w, dflags.get("worker-start-timeout", {}).get("default"))):
        hi = float(dflags.get("worker-start-timeout", {}).get("hi") or 86400)
        budgets = [("coordinator", sp["periodSeconds"] * sp["failureThreshold"])]
        for sts in by_kind.get("StatefulSet", []):
            for wc in sts["spec"]["template"]["spec"]["containers"]:
                wsp = wc["startupProbe"]
                budgets.append((sts["metadata"]["name"], wsp["periodSeconds"] * wsp["failureThreshold"]))
        for who, b in budgets:
            check(wst >= min(b, hi), "%s: worker_start_timeout %s < the %s startup probe budget %s s: tconstd gives up (exit 1) while the pods may still start" % (w, wst, who, b))
        check(wst == min(max(b for _, b in budgets), hi), "%s: worker_start_timeout %s is not the longest startup probe budget %s" % (w, wst, budgets))
    # drain: preStop sleep + --drain-timeout + >= 2 s flush < grace period
    drain = float(cfg.get("drain_timeout", dflags.get("drain-timeout", {}).get("default") or 30))
    pre = ctr["lifecycle"]["preStop"]["exec"]["command"]
    check(pre[0] == "sleep", "%s: preStop is not a sleep" % w)
    grace = pod["terminationGracePeriodSeconds"]
    check(grace >= float(pre[1]) + drain + 2, "%s: terminationGracePeriodSeconds %s < preStop %s + drain %s + 2" % (w, grace, pre[1], drain))
    check(drain == float(c["drainTimeout"]), "%s: drain_timeout is not coordinator.drainTimeout" % w)
    # journal
    if pers["enabled"]:
        dd = cfg.get("data_dir")
        claim = pers["existingClaim"] or None
        if check(dd and under_mount(dd, ctr), "%s: data_dir %r is not on a mounted volume" % (w, dd)):
            vol = volumes_of(pod)[mounts_of(ctr)[dd]]
            pvcs = [p["metadata"]["name"] for p in by_kind.get("PersistentVolumeClaim", [])]
            cn = vol.get("persistentVolumeClaim", {}).get("claimName")
            check(cn == claim if claim else cn in pvcs, "%s: the journal volume's claim %r" % (w, cn))
        check(dep["spec"]["strategy"]["type"] == "Recreate", "%s: a journal needs the Recreate strategy" % w)
        for p in by_kind.get("PersistentVolumeClaim", []):
            check(p["spec"]["accessModes"] == pers["accessModes"] and p["spec"]["resources"]["requests"]["storage"] == pers["size"],
                  "%s: PVC spec" % case)
    else:
        check("data_dir" not in cfg, "%s: data_dir without persistence" % w)
    st = dep["spec"]["strategy"]
    if st["type"] == "RollingUpdate" and int(values["coordinator"]["embedded"]["gpus"]) > 0:
        check(st["rollingUpdate"]["maxSurge"] == 0,
              "%s: a coordinator holding GPUs rolls with a surge pod (it would wait for GPUs a full pool lacks)" % w)
    check(cfg.get("model") == model_path, "%s: config model %r, expected %r" % (w, cfg.get("model"), model_path))
    if model_path:
        check(under_mount(model_path, ctr), "%s: model %s is not mounted" % (w, model_path))
    if c["autoscaling"]["enabled"]:
        check("replicas" not in dep["spec"], "%s: replicas set while an HPA scales it" % w)
        hpa = by_kind["HorizontalPodAutoscaler"][0]
        check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "%s: HPA target" % case)
    else:
        check(dep["spec"].get("replicas") == c["replicas"], "%s: replicas" % w)

    # -- client Service
    svc = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") != "None"]
    if check(len(svc) == 1, "%s: one client Service expected" % case):
        s = svc[0]
        check(labels_match(s["spec"]["selector"], plabels), "%s: Service selects no coordinator pod" % case)
        sp = {p["name"]: p for p in s["spec"]["ports"]}
        check(set(sp) == {"grpc", "http"} | ({"openai"} if ports.get("openai") else set()),
              "%s: Service ports %s" % (case, sorted(sp)))
        check("openai" not in sp or sp["openai"]["port"] == c["service"]["openaiPort"], "%s: Service openai port" % case)
        for n, p in sp.items():
            check(p["targetPort"] in (n, ports.get(n)), "%s: Service port %s targets %r" % (case, n, p["targetPort"]))
        check(sp["grpc"]["port"] == c["service"]["grpcPort"] and sp["http"]["port"] == c["service"]["httpPort"],
              "%s: Service port numbers" % case)
        for sm in by_kind.get("ServiceMonitor", []):
            ep = sm["spec"]["endpoints"][0]
            check(ep["port"] in sp and ep["path"] == "/metrics" and "/metrics" in dhelp, "%s: ServiceMonitor endpoint" % case)
            check(labels_match(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"]), "%s: ServiceMonitor selects no Service" % case)
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"]["matchLabels"]
        targets = [dep] + by_kind.get("StatefulSet", [])
        check(any(labels_match(sel, t["spec"]["template"]["metadata"]["labels"]) for t in targets), "%s: PDB %s selects nothing" % (case, pdb["metadata"]["name"]))

    # -- GPUs of the coordinator (embedded workers)
    res = wv["gpuResource"]
    want_gpu = 0 if workers_on else c["embedded"]["gpus"]
    rq, lm = gpu_of(ctr, res)
    check((rq or 0) == want_gpu and (lm or 0) == want_gpu, "%s: %s requests/limits %s/%s, expected %d" % (w, res, rq, lm, want_gpu))
    # a pod that asks for GPUs tolerates the GPU nodes' taint unless told otherwise
    tol = dep["spec"]["template"]["spec"].get("tolerations") or []
    want_tol = c["tolerations"] or (wv["tolerations"] if want_gpu else [])
    check(tol == want_tol, "%s: tolerations %s, expected %s (coordinator.embedded.gpus %d)" % (w, tol, want_tol, want_gpu))
    if not workers_on:
        check(cfg.get("worker_mode") == c["embedded"]["workerMode"] and "workers" not in cfg, "%s: embedded worker mode" % w)
        wb = cfg.get("worker_binary")
        check(wb is not None and os.path.basename(wb) == "tconst-worker", "%s: worker_binary %r" % (w, wb))
        check_embedded_devices(w, c["embedded"], cfg, dflags)
        return

    # -- workers
    svc_h = [s for s in by_kind["Service"] if s["spec"].get("clusterIP") == "None"]
    if not check(len(svc_h) == 1, "%s: one headless worker Service expected" % case):
        return
    hs = svc_h[0]
    check(hs["spec"].get("publishNotReadyAddresses") is True, "%s: headless Service must publish not-ready workers" % case)
    hports = {p["port"] for p in hs["spec"]["ports"]}
    sets = {s["metadata"]["name"]: s for s in by_kind["StatefulSet"]}
    pods = {}  # stable DNS name -> {control port: role}
    for name, sts in sets.items():
        w = "%s: StatefulSet %s" % (case, name)
        spec = sts["spec"]
        check(spec["serviceName"] == hs["metadata"]["name"], "%s: serviceName is not the headless Service" % w)
        check(spec["replicas"] == wv["pairs"], "%s: replicas %s != workers.pairs" % (w, spec["replicas"]))
        check(len(name) <= 52, "%s: name longer than 52 (controller-revision-hash label)" % w)
        tl = spec["template"]["metadata"]["labels"]
        check(labels_match(spec["selector"]["matchLabels"], tl), "%s: selector does not match the pod labels" % w)
        check(labels_match(hs["spec"]["selector"], tl), "%s: the headless Service does not select its pods" % w)
        pod = spec["template"]["spec"]
        check_pod_common("worker", pod, values, w)
        ctrs = pod["containers"]
        check(len(ctrs) == (2 if wv["layout"] == "pair" else 1), "%s: %d containers" % (w, len(ctrs)))
        grace = pod["terminationGracePeriodSeconds"]
        roles = []
        for ctr in ctrs:
            wc = "%s container %s" % (w, ctr["name"])
            check(os.path.basename(ctr["command"][0]) == "tconst-worker", "%s: command is not tconst-worker" % wc)
            a = check_flags("tconst-worker", wflags, ctr["command"][1:] + ctr.get("args", []), wc)
            role = a.get("role")
            roles.append(role)
            exp_roles = {"split": None, "pair": None, "both": ["both"]}[wv["layout"]]
            check(role in (exp_roles or ["context", "generation"]), "%s: role %r in layout %s" % (wc, role, wv["layout"]))
            cports = {p["containerPort"] for p in ctr["ports"]}
            listen, data = a.get("listen", ""), a.get("data-listen", "")
            check(listen and port_of(listen) in cports and host_of(listen) == any_host,
                  "%s: --listen %r: not a containerPort on ipFamily %s's any-address %s" % (wc, listen, values.get("ipFamily", "IPv4"), any_host))
            check(data and port_of(data) in cports and host_of(data) == pod_host,
                  "%s: --data-listen %r: not a containerPort on %s (ipFamily %s)" % (wc, data, pod_host, values.get("ipFamily", "IPv4")))
            check("POD_IP" in env_of(ctr), "%s: POD_IP not in the environment" % wc)
            for pnum in cports:
                check(pnum in hports, "%s: port %d not on the headless Service" % (wc, pnum))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                g = (ctr.get(probe) or {}).get("grpc")
                check(g is not None and listen and g.get("port") == port_of(listen),
                      "%s: %s is not a grpc probe on the --listen port" % (wc, probe))
            sp = ctr["startupProbe"]
            check(sp["periodSeconds"] * sp["failureThreshold"] >= 300, "%s: startupProbe allows < 5 min for model load" % wc)
            rq, lm = gpu_of(ctr, res)
            if wv["device"] == "cuda":
                check(rq == wv["gpusPerWorker"] and lm == wv["gpusPerWorker"], "%s: %s requests/limits %s/%s" % (wc, res, rq, lm))
                check(a.get("device") == "cuda:0", "%s: --device %r (the container sees its own GPUs from 0)" % (wc, a.get("device")))
            else:
                check(rq is None and lm is None and a.get("device") == "cpu", "%s: CPU worker with GPUs or not --device cpu" % wc)
            check(a.get("transport") == wv["transport"], "%s: --transport" % wc)
            ccfg = values["coordinator"].get("config") or {}
            mst = ccfg.get("max_session_tokens", ccfg.get("max-session-tokens"))
            check(a.get("max-session-tokens") == (str(int(mst)) if mst else None),
                  "%s: --max-session-tokens %r, the coordinator's %r (it sizes the data plane)" % (wc, a.get("max-session-tokens"), mst))
            check(a.get("model") == model_path, "%s: --model %r, expected %r" % (wc, a.get("model"), model_path))
            if model_path:
                check(under_mount(model_path, ctr), "%s: model not mounted" % wc)
            caps = (ctr.get("securityContext") or {}).get("capabilities") or {}
            check(caps.get("drop") == values["securityContext"]["capabilities"]["drop"] and
                  ("IPC_LOCK" in (caps.get("add") or [])) == bool(wv["nccl"]["ipcLock"]),
                  "%s: capabilities %s with workers.nccl.ipcLock %s" % (wc, caps, wv["nccl"]["ipcLock"]))
            env = env_of(ctr)
            n = wv["nccl"]
            nccl_on = wv["transport"] == "nccl"
            for var, val in (("NCCL_SOCKET_IFNAME", n["socketIfname"]), ("NCCL_IB_HCA", n["ibHca"]), ("NCCL_DEBUG", n["debug"])):
                check(env.get(var) == (val if nccl_on and val else None), "%s: %s=%r" % (wc, var, env.get(var)))
            for var, val in n["env"].items():
                check(env.get(var) == (str(val) if nccl_on else None), "%s: %s" % (wc, var))
            if wv["shm"]["enabled"]:
                vn = mounts_of(ctr).get("/dev/shm")
                vol = volumes_of(pod).get(vn, {})
                check(vol.get("emptyDir", {}).get("medium") == "Memory", "%s: /dev/shm is not a memory emptyDir" % wc)
            pre = ctr["lifecycle"]["preStop"]["exec"]["command"]
            check(grace >= float(pre[1]) + 3, "%s: grace %s vs preStop %s" % (wc, grace, pre[1]))
            if wv["outliveCoordinatorDrain"]:
                check(float(pre[1]) >= c["preStopSleepSeconds"] + c["drainTimeout"], "%s: workers stop before the coordinator's drain ends" % wc)
            for i in range(spec["replicas"]):
                dns = "%s-%d.%s.%s.svc.%s" % (name, i, hs["metadata"]["name"], ns, values["clusterDomain"])
                pods.setdefault(dns, {})[port_of(listen)] = role
        if wv["hostNetwork"]:
            check(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "%s: hostNetwork" % w)
        if wv["layout"] == "pair":
            check(sorted(roles) == ["context", "generation"], "%s: a pair pod holds one context and one generation worker" % w)
    # --workers: exactly the StatefulSets' workers, pair by pair
    listed = [x for x in cfg.get("workers", "").split(",") if x]
    expect_n = sum(len(v) for v in pods.values())
    check(len(listed) == expect_n == wv["pairs"] * (1 if wv["layout"] == "both" else 2),
          "%s: --workers lists %d, the StatefulSets run %d" % (case, len(listed), expect_n))
    check(len(set(listed)) == len(listed), "%s: --workers has duplicates" % case)
    order = []
    for addr in listed:
        host, port = host_of(addr), port_of(addr)
        r = pods.get(host, {}).get(port)
        check(r is not None, "%s: --workers entry %s is no worker's stable address and control port" % (case, addr))
        order.append(r)
    if wv["layout"] != "both":
        check(order == ["context", "generation"] * wv["pairs"], "%s: --workers not pair by pair (context, generation): %s" % (case, order))


def check_embedded_devices(w, e, cfg, dflags):
    """tconstd's spawned workers run on the GPUs the pod requests: every
    requested GPU is some worker's --device / --context-device, none beyond
    them (the container sees its GPUs as cuda:0 and up), none without GPUs;
    explicit values are passed through."""
    gpus, mode = e["gpus"], cfg.get("worker_mode")
    dev = cfg.get("device", dflags.get("device", {}).get("default") or "cpu")
    ctxd = cfg.get("context_device") or dev
    used = [] if mode == "inprocess" else [ctxd, dev] if mode == "split" else [dev]
    for d in used:
        check(d == "cpu" or re.fullmatch(r"cuda:[0-9]+", d), "%s: worker device %r" % (w, d))
    idx = sorted({int(d[5:]) for d in used if d.startswith("cuda:")})
    check(idx == list(range(gpus)),
          "%s: the pod requests %d GPU(s) but the spawned workers (%s) run on %s" % (w, gpus, mode, ", ".join(used) or "the in-process CPU worker"))
    if e["device"]:
        check(cfg.get("device") == e["device"], "%s: device %r, coordinator.embedded.device is %r" % (w, cfg.get("device"), e["device"]))
    if e.get("contextDevice", ""):
        check(cfg.get("context_device") == e.get("contextDevice", ""), "%s: context_device %r, coordinator.embedded.contextDevice is %r" % (w, cfg.get("context_device"), e.get("contextDevice", "")))
    check("context_device" not in cfg or mode == "split", "%s: context_device in worker mode %s (tconstd refuses it)" % (w, mode))


PREFLIGHT_DIR = "/dev/null/tc-helm-preflight"


def preflight_tconstd(binary, raw, where, tmp):
    """tconstd itself reads a rendered config file: unknown keys, types and
    ranges, the listen addresses and --device / --context-device against
    the worker mode are all checked (exit 2) before it creates --data-dir,
    so a --data-dir it cannot create stops it right after those checks,
    before it binds or spawns anything. (rc, stderr, accepted)."""
    f = os.path.join(tmp, "preflight.json")
    with open(f, "w") as fh:
        fh.write(raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TCONST_", "TC_LOG_"))}
    try:
        p = subprocess.run([binary, "--config", f, "--data-dir", PREFLIGHT_DIR], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    except subprocess.TimeoutExpired:
        return None, "tconstd ran past its start-up checks (the preflight relies on --data-dir being checked before anything starts)", False
    err = p.stderr.decode("utf-8", "replace").strip()
    return p.returncode, err, p.returncode == 2 and ("--data-dir " + PREFLIGHT_DIR) in err


# values paths that become a knob of a binary, and values the chart itself
# resolves instead of passing them on (0: derive the start timeout)
SCHEMA_KNOBS = [
    ("coordinator.drainTimeout", "tconstd", "drain-timeout", ()),
    ("coordinator.workerTimeout", "tconstd", "worker-timeout", ()),
    ("coordinator.workerStartTimeout", "tconstd", "worker-start-timeout", (0,)),
    ("workers.threads", "tconst-worker", "threads", ()),
]


def typed(info, text):
    t = info["type"]
    if t == "int":
        return int(float(text))
    if t == "number":
        f = float(text)
        return int(f) if f == int(f) else f
    if t == "bool":
        return text.lower() in ("true", "1", "yes", "on")
    return text


def check_schema_knobs(validator, defaults, dflags, wflags, owned):
    """A value the schema accepts is one the binary accepts: each values key
    that maps to a knob, and each key of coordinator.config (tconstd's JSON
    config, where an unknown key or an out-of-range value is exit 2), takes
    exactly the knob's type and range; the keys the chart renders itself are
    refused in coordinator.config. Probes: the bounds are accepted, just
    beyond them and the wrong type are refused."""
    def accepts(path, value):
        return not list(validator.iter_errors(deep(defaults, path, value)))
    probes = [(path, (dflags if b == "tconstd" else wflags).get(flag), "%s --%s" % (b, flag), sentinels)
              for path, b, flag, sentinels in SCHEMA_KNOBS]
    n_cfg = 0
    for flag, info in sorted(dflags.items()):
        if info["type"] is None:  # --config, --help
            continue
        key = flag.replace("-", "_")
        path = "coordinator.config." + key
        if key in owned:
            check(not accepts(path, typed(info, info["default"] or "")),
                  "schema accepts coordinator.config.%s, which the chart renders itself" % key)
            continue
        n_cfg += 1
        probes.append((path, info, "tconstd --%s" % flag, ()))
        if "_" in key:
            check(not accepts("coordinator.config." + flag, typed(info, info["default"] or "")),
                  "schema accepts coordinator.config.%s: the config file's keys are spelled with '_' (%s)" % (flag, key))
    check(n_cfg >= 10, "only %d tconstd knobs are left for coordinator.config" % n_cfg)
    check(not accepts("coordinator.config.max_session", 5), "schema accepts a misspelled coordinator.config key (tconstd: unknown key)")
    for path, info, name, sentinels in probes:
        if not check(info is not None and info["type"] is not None, "%s: no such knob in --help (for %s)" % (name, path)):
            continue
        t = info["type"]
        check(accepts(path, typed(info, info["default"] or "")), "schema refuses %s=%r, the default of %s" % (path, info["default"], name))
        for v in sentinels:
            check(accepts(path, v), "schema refuses %s=%r (the chart's own meaning)" % (path, v))
        if t in ("int", "number"):
            check(not accepts(path, str(typed(info, info["default"] or "0"))), "schema accepts a string for %s (%s)" % (path, name))
            if info["lo"] is None:
                continue
            lo, hi = typed(info, info["lo"]), typed(info, info["hi"])
            eps = (lambda b: 1) if t == "int" else (lambda b: 1e-3 * max(1.0, abs(b)))
            check(accepts(path, lo) and accepts(path, hi), "schema refuses %s at the bounds [%s, %s] of %s" % (path, lo, hi, name))
            for v in (lo - eps(lo), hi + eps(hi)):
                check(not accepts(path, v), "schema accepts %s=%r, outside [%s, %s] of %s (the binary exits 2)" % (path, v, lo, hi, name))
            if t == "int":
                check(not accepts(path, lo + 0.5), "schema accepts %s=%r, not an integer (%s)" % (path, lo + 0.5, name))
        elif t == "bool":
            check(not accepts(path, "false"), "schema accepts a string for %s (%s is a JSON bool)" % (path, name))
        else:
            check(not accepts(path, 1), "schema accepts a number for %s (%s)" % (path, name))
    return len(probes)


# ---- monitoring: alerts and dashboard ---------------------------------------

METRIC = re.compile(r"\btconst_[a-z0-9_]+")


def read_metric_families(repo):
    """{family: type} of what tconstd exports, from daemon/metrics.h's X-macros."""
    with open(os.path.join(repo, "daemon", "metrics.h")) as f:
        text = f.read()
    fams = {}
    for macro, typ in (("TC_METRICS_COUNTERS", "counter"), ("TC_METRICS_LABELED_COUNTERS", "counter"),
                       ("TC_METRICS_GAUGES", "gauge"), ("TC_METRICS_HISTOGRAMS", "histogram")):
        m = re.search(r"#define %s\(X\)(.*?)\n\n" % macro, text, re.S)
        if not check(m is not None, "daemon/metrics.h: no %s" % macro):
            continue
        for name in re.findall(r"\bX\((\w+),", m.group(1)):
            fams["tconst_" + name] = typ
    check(len(fams) >= 20, "daemon/metrics.h: only %d metric families read" % len(fams))
    return fams


def metric_family(name):
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and not name.endswith("_total"):
            return name[: -len(suf)]
    return name


def check_expr(where, expr, fams, selector=None):
    """PromQL as far as a test without Prometheus can: brackets balance, every
    metric is one tconstd exports (a histogram's as _bucket), each carries
    the selector when given."""
    depth = {"(": 0, "{": 0, "[": 0}
    close = {")": "(", "}": "{", "]": "["}
    ok = True
    for ch in expr:
        if ch in depth:
            depth[ch] += 1
        elif ch in close:
            depth[close[ch]] -= 1
            ok &= depth[close[ch]] >= 0
    check(ok and not any(depth.values()), "%s: brackets do not balance: %s" % (where, expr))
    names = METRIC.findall(expr)
    check(names, "%s: no tconst metric in %s" % (where, expr))
    for n in names:
        fam = metric_family(n)
        check(fam in fams, "%s: %s is not a metric tconstd exports" % (where, n))
        if fams.get(fam) == "histogram":
            check(n.endswith("_bucket"), "%s: histogram %s used without _bucket" % (where, n))
        if selector is not None:
            check(re.search(re.escape(n) + r"\{" + re.escape(selector) + r"[,}]", expr) is not None,
                  "%s: %s without the selector {%s}" % (where, n, selector))


def run_promtool(tool, args):
    r = subprocess.run([tool] + args, capture_output=True, text=True, timeout=120)
    return r.returncode, (r.stdout + r.stderr).strip()


def promtool_rules(where, groups, tool, tmp, name):
    """promtool check rules on groups (PromQL parsed, templates checked)."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        yaml.safe_dump({"groups": groups}, f)
    rc, out = run_promtool(tool, ["check", "rules", path])
    check(rc == 0, "%s: promtool check rules: %s" % (where, out[-800:]))
    return path


def alert_unit_tests(pr, ns, startup, job=None):
    """promtool test rules cases for the chart's alerts at thresholds pr:
    each fires on series past its threshold (after its `for`), not before,
    not at or below the threshold (same namespace), not for another
    namespace (the selector); TconstNotReady not within `startup` seconds
    of the process start; with job (the ServiceMonitor's), TconstScrapeDown
    for a coordinator whose scrapes fail and for no target at all."""
    def s(metric, labels, values):
        return {"series": "%s{%s}" % (metric, labels), "values": values}
    me, other = 'namespace="%s"' % ns, 'namespace="other"'

    def ratio_case(alert, status, thr, for_m):
        fire = min(0.9, 2 * thr)
        calm = thr / 2
        series = []
        for nsl, x in ((me, fire), (other, fire)):
            series += [s("tconst_requests_total", nsl + ',status="ok"', "0+100x60"),
                       s("tconst_requests_total", nsl + ',status="%s"' % status, "0+%gx60" % (100 * x / (1 - x)))]
        calm_series = [s("tconst_requests_total", me + ',status="ok"', "0+100x60"),
                       s("tconst_requests_total", me + ',status="%s"' % status, "0+%gx60" % (100 * calm / (1 - calm)))]
        lab = {"severity": "warning", "namespace": ns}
        return [{"interval": "1m", "input_series": series, "alert_rule_test": [
                    {"eval_time": "%dm" % (for_m - 1), "alertname": alert, "exp_alerts": []},
                    {"eval_time": "%dm" % (for_m + 3), "alertname": alert, "exp_alerts": [{"exp_labels": lab}]}]},
                {"interval": "1m", "input_series": calm_series, "alert_rule_test": [
                    {"eval_time": "%dm" % (for_m + 3), "alertname": alert, "exp_alerts": []}]}]

    # a: not ready, long started; b: draining; c: ready; d: another
    # namespace; e: not ready but still inside its startup budget
    long_ago = "%dx20" % -(startup + 600)

    def coord(nsl, pod, ready, draining, start):
        return [s("tconst_ready", nsl + ',pod="%s"' % pod, ready), s("tconst_draining", nsl + ',pod="%s"' % pod, draining),
                s("tconst_start_time_seconds", nsl + ',pod="%s"' % pod, start)]
    tests = [{"interval": "1m", "input_series": coord(me, "a", "0x20", "0x20", long_ago) + coord(me, "b", "0x20", "1x20", long_ago)
              + coord(me, "c", "1x20", "0x20", long_ago) + coord(other, "d", "0x20", "0x20", long_ago)
              + coord(me, "e", "0x20", "0x20", "%dx20" % -(startup - 900)),
              "alert_rule_test": [
                  {"eval_time": "4m", "alertname": "TconstNotReady", "exp_alerts": []},
                  {"eval_time": "6m", "alertname": "TconstNotReady",
                   "exp_alerts": [{"exp_labels": {"severity": "critical", "namespace": ns, "pod": "a"}}]}]}]
    tests += ratio_case("TconstRequestErrors", "error", pr["errorRatio"], 10)
    tests += ratio_case("TconstOverloaded", "overloaded", pr["overloadedRatio"], 15)
    thr = pr["boundaryStallSeconds"]
    lo, hi = "%g" % (thr / 2), "%g" % (thr * 4)

    def stall(nsl, slow):
        b = "tconst_boundary_stall_seconds_bucket"
        return [s(b, nsl + ',le="%s"' % lo, "0x40" if slow else "0+1x40"),
                s(b, nsl + ',le="%s"' % hi, "0+1x40"), s(b, nsl + ',le="+Inf"', "0+1x40")]
    tests += [{"interval": "1m", "input_series": stall(me, True) + stall(other, True), "alert_rule_test": [
                  {"eval_time": "14m", "alertname": "TconstBoundaryStallHigh", "exp_alerts": []},
                  {"eval_time": "18m", "alertname": "TconstBoundaryStallHigh",
                   "exp_alerts": [{"exp_labels": {"severity": "warning", "namespace": ns}}]}]},
              {"interval": "1m", "input_series": stall(me, False), "alert_rule_test": [
                  {"eval_time": "18m", "alertname": "TconstBoundaryStallHigh", "exp_alerts": []}]}]
    q = pr["syncQueueDepth"]
    def fires(alert, sev, series, calm, early, late, labels=None):
        """series fire alert at `late` (labels: namespace ns, plus labels),
        not at `early`; calm (same namespace) never does"""
        lab = dict({"severity": sev, "namespace": ns}, **(labels or {}))
        return [{"interval": "1m", "input_series": series, "alert_rule_test": [
                    {"eval_time": early, "alertname": alert, "exp_alerts": []},
                    {"eval_time": late, "alertname": alert, "exp_alerts": [{"exp_labels": lab}]}]},
                {"interval": "1m", "input_series": calm, "alert_rule_test": [
                    {"eval_time": late, "alertname": alert, "exp_alerts": []}]}]
    q = pr["syncQueueDepth"]
    tests += fires("TconstSyncBacklog", "warning",
                   [s("tconst_sync_queue_depth", me + ',pod="a"', "%dx30" % (q + 1)),
                    s("tconst_sync_queue_depth", other + ',pod="d"', "%dx30" % (q + 1))],
                   [s("tconst_sync_queue_depth", me + ',pod="a"', "%dx30" % q)], "14m", "16m")
    # restarts: counted in whole restarts (increase extrapolates): exactly
    # the threshold in the window is calm, one more fires
    r = pr["workerRestarts"]

    def restarts(nsl, pod, n):  # n restarts spread over minutes 2..(n+1), then none
        return s("tconst_worker_restarts_total", nsl + ',pod="%s"' % pod,
                 " ".join(["0", "0"] + [str(i + 1) for i in range(n)] + ["%dx30" % n]))
    tests += fires("TconstWorkerRestarts", "warning", [restarts(me, "a", r + 1), restarts(other, "d", r + 1)],
                   [restarts(me, "a", r)], "1m", "%dm" % (r + 3), {"pod": "a"})
    tests += fires("TconstSessionFailovers", "info",
                   [s("tconst_session_failovers_total", me + ',pod="a"', "0 0 0 1x20"),
                    s("tconst_session_failovers_total", other + ',pod="d"', "0 0 0 1x20")],
                   [s("tconst_session_failovers_total", me + ',pod="a"', "3x20")], "2m", "5m")
    b = pr["busyRatio"]
    tests += fires("TconstGenerationSaturated", "info",
                   [s("tconst_generation_worker_busy_ratio", me + ',pod="a"', "%gx40" % min(1.0, b + 0.04)),
                    s("tconst_generation_worker_busy_ratio", me + ',pod="b"', "%gx40" % min(1.0, b + 0.02))],
                   [s("tconst_generation_worker_busy_ratio", me + ',pod="a"', "%gx40" % min(1.0, b + 0.04)),
                    s("tconst_generation_worker_busy_ratio", me + ',pod="b"', "%gx40" % (b - 0.1))], "29m", "32m")
    if job:
        def up(jb, nsl, pod, values):
            return s("up", 'job="%s",%s,pod="%s",instance="10.0.0.%s:9090"' % (jb, nsl, pod, pod[-1]), values)
        down = {"severity": "critical", "job": job, "namespace": ns, "pod": "p1", "instance": "10.0.0.1:9090"}
        tests += [  # p1 fails its scrapes from minute 2; p2 and another namespace's job stay up
                  {"interval": "1m", "input_series": [up(job, me, "p1", "1 1 0x20"), up(job, me, "p2", "1x22"),
                                                      up(job, other, "p3", "0x22")],
                   "alert_rule_test": [{"eval_time": "5m", "alertname": "TconstScrapeDown", "exp_alerts": []},
                                       {"eval_time": "9m", "alertname": "TconstScrapeDown", "exp_alerts": [{"exp_labels": down}]}]},
                  # every coordinator answers: calm
                  {"interval": "1m", "input_series": [up(job, me, "p1", "1x22"), up(job, me, "p2", "1x22")],
                   "alert_rule_test": [{"eval_time": "9m", "alertname": "TconstScrapeDown", "exp_alerts": []}]},
                  # no target of this job in this namespace at all (another job's is up)
                  {"interval": "1m", "input_series": [up("other", me, "p4", "1x22"), up(job, other, "p3", "1x22")],
                   "alert_rule_test": [{"eval_time": "4m", "alertname": "TconstScrapeDown", "exp_alerts": []},
                                       {"eval_time": "7m", "alertname": "TconstScrapeDown",
                                        "exp_alerts": [{"exp_labels": {"severity": "critical", "job": job, "namespace": ns}}]}]}]
    return tests


def check_monitoring(case, docs, values, fams, dashboard, tool, tmp):
    mv = values["metrics"]
    pr = mv["prometheusRule"]
    for _, d in docs:
        if d["kind"] == "PrometheusRule":
            w = "%s: PrometheusRule" % case
            check(d["apiVersion"] == "monitoring.coreos.com/v1", "%s: apiVersion" % w)
            for k, v in pr["labels"].items():
                check(d["metadata"]["labels"].get(k) == v, "%s: lacks its label %s" % (w, k))
            sel = pr["selector"] or 'namespace="inference"'
            rules = [r for g in d["spec"]["groups"] for r in g["rules"]]
            names = [r.get("alert") for r in rules]
            check(len(rules) >= 6 and len(set(names)) == len(names) and all(names), "%s: alert names %s" % (w, names))
            # the scrape alert: on upSelector, else on the ServiceMonitor's job (the Service's name)
            sm = [x for _, x in docs if x["kind"] == "ServiceMonitor"]
            job = sm[0]["metadata"]["name"] if sm else None
            upsel = pr["upSelector"] or (job and 'job="%s",namespace="inference"' % job)
            check(("TconstScrapeDown" in names) == bool(upsel),
                  "%s: TconstScrapeDown %s, upSelector %r, ServiceMonitor %s" % (w, "TconstScrapeDown" in names, pr["upSelector"], job))
            for r in rules:
                wr = "%s %s" % (w, r.get("alert"))
                if r.get("alert") == "TconstScrapeDown":
                    check(r["expr"].strip() == "(up{%s} == 0) or absent(up{%s})" % (upsel, upsel), "%s: %s" % (wr, r["expr"]))
                else:
                    check_expr(wr, r["expr"], fams, sel)
                check(r.get("labels", {}).get("severity") in ("critical", "warning", "info"), "%s: severity" % wr)
                check(r.get("annotations", {}).get("summary"), "%s: no summary" % wr)
                if "for" in r:
                    check(re.fullmatch(r"[0-9]+[smh]", r["for"]) is not None, "%s: for %r" % (wr, r["for"]))
            # the rules as Prometheus reads them, then (default selector: the
            # release namespace) each alert against series that should and
            # should not fire it, annotations left out (their templates are
            # checked above, not their text)
            path = promtool_rules(w, d["spec"]["groups"], tool, tmp, "rules.yaml")
            if not pr["selector"]:
                bare = [{"name": g["name"], "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
                        for g in d["spec"]["groups"]]
                bare_path = promtool_rules(w, bare, tool, tmp, "rules-bare.yaml")
                sp = values["coordinator"]["startupProbe"]
                tests = alert_unit_tests(pr, "inference", sp["periodSeconds"] * sp["failureThreshold"],
                                         None if pr["upSelector"] else job)
                tpath = os.path.join(tmp, "alert-tests.yaml")
                with open(tpath, "w") as f:
                    yaml.safe_dump({"rule_files": [os.path.basename(bare_path)], "evaluation_interval": "1m",
                                    "tests": tests}, f)
                tested = {t["alertname"] for c in tests for t in c["alert_rule_test"]}
                check(tested == set(names), "%s: alerts without a unit test: %s" % (w, sorted(set(names) - tested)))
                rc, out = run_promtool(tool, ["test", "rules", tpath])
                check(rc == 0, "%s: promtool test rules (%d cases): %s" % (w, len(tests), out[-1500:]))
            thresholds = {"TconstRequestErrors": pr["errorRatio"], "TconstOverloaded": pr["overloadedRatio"],
                          "TconstBoundaryStallHigh": pr["boundaryStallSeconds"],
                          "TconstSyncBacklog": pr["syncQueueDepth"], "TconstWorkerRestarts": pr["workerRestarts"],
                          "TconstGenerationSaturated": pr["busyRatio"]}
            for r in rules:
                if r["alert"] in thresholds:
                    m = re.search(r">\s*([0-9.e+-]+)\s*$", r["expr"])
                    check(m is not None and float(m.group(1)) == float(thresholds[r["alert"]]),
                          "%s %s: threshold %s, values say %s" % (w, r["alert"], m and m.group(1), thresholds[r["alert"]]))
        if d["kind"] == "ConfigMap" and "tconst.json" in (d.get("data") or {}):
            w = "%s: dashboard ConfigMap" % case
            gd = mv["grafanaDashboard"]
            for k, v in gd["labels"].items():
                check(d["metadata"]["labels"].get(k) == v, "%s: lacks its label %s" % (w, k))
            for k, v in gd["annotations"].items():
                check((d["metadata"].get("annotations") or {}).get(k) == v, "%s: lacks its annotation %s" % (w, k))
            try:
                got = json.loads(d["data"]["tconst.json"])
            except ValueError as e:
                check(False, "%s: tconst.json does not parse: %s" % (w, e))
                continue
            check(got == dashboard, "%s: tconst.json is not dashboards/tconst.json" % w)
            # every query as Prometheus parses it: Grafana's variables given values
            subst = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": "inference", "$pod": ".*"}
            rec = []
            for i, p in enumerate(got["panels"]):
                for j, t in enumerate(p.get("targets", [])):
                    e = t["expr"]
                    for k, v in subst.items():
                        e = e.replace(k, v)
                    check("$" not in e, "%s panel %r: a variable left in %s" % (w, p["title"], e))
                    rec.append({"record": "tconst_dashboard:panel%d_%d" % (i, j), "expr": e})
            promtool_rules(w + " (queries as recording rules)", [{"name": "dashboard", "rules": rec}], tool, tmp,
                           "dashboard-rules.yaml")
            ids = [p["id"] for p in got["panels"]]
            check(len(set(ids)) == len(ids), "%s: panel ids repeat" % w)
            for p in got["panels"]:
                for t in p.get("targets", []):
                    check_expr("%s panel %r" % (w, p["title"]), t["expr"], fams)
                    check('namespace="$namespace"' in t["expr"], "%s panel %r: not filtered by $namespace" % (w, p["title"]))


# ---- cases --------------------------------------------------------------------

def leaves(d, prefix=""):
    out = set()
    for k, v in d.items():
        p = prefix + "." + k if prefix else k
        if isinstance(v, dict) and v and not p.endswith(("config", "env", "labels", "Labels", "annotations", "Annotations", "nodeSelector", "commonLabels")):
            out |= leaves(v, p)
        else:
            out.add(p)
    return out


def deep(d, dotted, value):
    d = copy.deepcopy(d)
    cur = d
    keys = dotted.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return d


def nest(pairs):
    out = {}
    for k, v in pairs.items():
        out = merge(out, deep({}, k, v))
    return out


def merge(a, b):
    a = copy.deepcopy(a)
    for k, v in b.items():
        a[k] = merge(a[k], v) if isinstance(a.get(k), dict) and isinstance(v, dict) else v
    return a


def emb(**kw):
    """Values of self-contained coordinators (tconstd spawns its workers)."""
    return {"workers": {"enabled": False}, "persistence": {"enabled": False}, "coordinator": {"embedded": kw}}


def main():
    ap = argparse.ArgumentParser()
    for k in ("renderer", "chart", "tconstd", "worker", "values-all", "repo", "promtool"):
        ap.add_argument("--" + k, required=True)
    a = ap.parse_args()
    a.values_all = os.path.abspath(a.values_all)

    bins = (read_help(a.tconstd), read_help(a.worker))
    metric_families = read_metric_families(a.repo)
    with open(os.path.join(a.chart, "dashboards", "tconst.json")) as f:
        dashboard = json.load(f)
    # the dashboard shows every metric family tconstd exports
    shown = set()
    for p in dashboard["panels"]:
        for t in p.get("targets", []):
            shown |= {metric_family(m) for m in METRIC.findall(t["expr"])}
    check(shown == set(metric_families),
          "dashboards/tconst.json: metrics not shown %s, unknown %s" % (sorted(set(metric_families) - shown),
                                                                        sorted(shown - set(metric_families))))
    dflags, wflags = bins[0][0], bins[1][0]
    print("tconstd --help: %d flags; tconst-worker --help: %d flags" % (len(dflags), len(wflags)))

    schema = json.load(open(os.path.join(a.chart, "values.schema.json")))
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load(open(os.path.join(a.chart, "values.yaml")))
    vall = yaml.safe_load(open(a.values_all))

    # values-all covers every key of values.yaml (and invents none)
    dl, vl = leaves(defaults), leaves(vall)
    missing = {d for d in dl if not any(v == d or v.startswith(d + ".") for v in vl)}
    check(not missing, "values-all.yaml misses keys of values.yaml: %s" % sorted(missing))
    unknown = {v for v in vl if not any(v == d or v.startswith(d + ".") or d.startswith(v + ".") for d in dl)}
    check(not unknown, "values-all.yaml sets keys values.yaml lacks: %s" % sorted(unknown))

    # the chart's default ports are the binaries' defaults
    if dflags.get("listen", {}).get("default"):
        check(port_of(dflags["listen"]["default"]) == defaults["coordinator"]["ports"]["grpc"] == defaults["coordinator"]["service"]["grpcPort"],
              "coordinator grpc port default != tconstd --listen default %s" % dflags["listen"]["default"])
    if dflags.get("http-listen", {}).get("default"):
        check(port_of(dflags["http-listen"]["default"]) == defaults["coordinator"]["ports"]["http"] == defaults["coordinator"]["service"]["httpPort"],
              "coordinator http port default != tconstd --http-listen default %s" % dflags["http-listen"]["default"])
    if dflags.get("drain-timeout", {}).get("default"):
        check(float(dflags["drain-timeout"]["default"]) == defaults["coordinator"]["drainTimeout"], "drainTimeout default != tconstd's")
    if wflags.get("listen", {}).get("default"):
        check(port_of(wflags["listen"]["default"]) == defaults["workers"]["ports"]["context"]["control"],
              "workers.ports.context.control != tconst-worker --listen default %s" % wflags["listen"]["default"])

    tmp = tempfile.mkdtemp(prefix="tc-helm-")
    R = Render(a, tmp)
    rendered_sources = set()

    cpu_workers = {"workers.device": "cpu", "workers.transport": "host"}
    valid = [
        ("defaults", []),
        ("values-all", [a.values_all]),
        ("pair layout, model PVC, 3 pairs", [nest({"workers.layout": "pair", "workers.pairs": 3, "model.source": "pvc",
                                                    "coordinator.config": {"max_session_tokens": 1000000},
                                                    "model.pvc.claimName": "weights-41m", "model.subPath": "p41",
                                                    "workers.nccl.socketIfname": "eth0"})]),
        ("both layout, CPU, hostPath model", [nest(dict(cpu_workers, **{"workers.layout": "both", "workers.pairs": 2,
                                                    "model.source": "hostPath", "model.hostPath.path": "/srv/models/p41",
                                                    "persistence.existingClaim": "journal-old",
                                                    "serviceAccount.create": False}))]),
        ("embedded, 2 GPUs, HPA", [nest({"workers.enabled": False, "persistence.enabled": False,
                                        "coordinator.embedded.gpus": 2, "coordinator.embedded.workerMode": "split",
                                        "coordinator.autoscaling.enabled": True, "coordinator.replicas": 2})]),
        ("embedded CPU inprocess, no PDB", [nest({"workers.enabled": False, "coordinator.embedded.workerMode": "inprocess",
                                                 "coordinator.embedded.device": "cpu",
                                                 "coordinator.podDisruptionBudget.enabled": False})]),
        ("values-all + split CPU", [a.values_all, nest(cpu_workers)]),
        ("embedded, 1 GPU, both, IPv6", [nest({"workers.enabled": False, "persistence.enabled": False, "ipFamily": "IPv6",
                                              "coordinator.embedded.gpus": 1, "coordinator.embedded.workerMode": "both"})]),
        ("embedded, 1 GPU shared by split", [nest({"workers.enabled": False, "coordinator.embedded.gpus": 1})]),
        ("embedded, 1 GPU, own tolerations", [nest({"workers.enabled": False, "coordinator.embedded.gpus": 1,
                                                   "coordinator.tolerations": [{"key": "pool", "operator": "Equal",
                                                                                "value": "a100", "effect": "NoSchedule"}]})]),
        ("embedded, 2 GPUs swapped", [nest({"workers.enabled": False, "coordinator.embedded.gpus": 2,
                                            "coordinator.embedded.device": "cuda:1"})]),
        ("embedded, 2 GPUs explicit", [nest({"workers.enabled": False, "coordinator.embedded.gpus": 2,
                                             "coordinator.embedded.device": "cuda:1", "coordinator.embedded.contextDevice": "cuda:0",
                                             "coordinator.startupProbe.failureThreshold": 60})]),
        ("alerts and dashboard, default selector", [nest({"metrics.prometheusRule.enabled": True,
                                                          "metrics.grafanaDashboard.enabled": True})]),
        ("alerts scraped by the ServiceMonitor", [nest({"metrics.prometheusRule.enabled": True,
                                                        "metrics.serviceMonitor.enabled": True})]),
        ("slow worker start, IPv6 pairs", [nest({"workers.layout": "pair", "ipFamily": "IPv6",
                                                 "workers.startupProbe.periodSeconds": 20, "workers.startupProbe.failureThreshold": 270})]),
    ]
    owned = set()  # tconstd config keys the chart renders itself
    for case, files in valid:
        rc, out, err, merged, notes = R.run(files)
        if not check(rc == 0, "%s: render failed: %s" % (case, err.strip())):
            continue
        errs = sorted(validator.iter_errors(merged), key=lambda e: list(e.path))
        check(not errs, "%s: values rejected by the schema: %s" % (case, "; ".join("%s: %s" % ("/".join(map(str, e.path)), e.message) for e in errs[:5])))
        try:
            docs = split_docs(out)
        except yaml.YAMLError as e:
            check(False, "%s: rendered YAML does not parse: %s" % (case, e))
            continue
        rendered_sources |= {s for s, _ in docs}
        n0 = len(FAILS)
        check_release(case, docs, merged, bins, notes)
        check_monitoring(case, docs, merged, metric_families, dashboard, a.promtool, tmp)
        for _, d in docs:
            if d["kind"] == "ConfigMap" and "tconstd.json" in d["data"]:
                raw = d["data"]["tconstd.json"]
                owned |= set(json.loads(raw)) - set(merged["coordinator"]["config"])
                rc, err, ok = preflight_tconstd(a.tconstd, raw, case, tmp)
                check(ok, "%s: tconstd refuses the rendered ConfigMap (rc %s): %s" % (case, rc, err))
        check("tc" in notes and str(merged["coordinator"]["service"]["grpcPort"]) in notes, "%s: NOTES.txt" % case)
        oai = merged["coordinator"]["ports"]["openai"]
        check(("/v1/completions" in notes) == bool(oai) and
              (not oai or ":%d/v1" % merged["coordinator"]["service"]["openaiPort"] in notes),
              "%s: NOTES.txt names the OpenAI API's address exactly when coordinator.ports.openai is set" % case)
        kinds = sorted({d["kind"] for _, d in docs})
        print("%-34s %s  %2d docs: %s" % (case, "ok  " if len(FAILS) == n0 else "FAIL", len(docs), ", ".join(kinds)))
        if case == "defaults" and os.environ.get("TC_HELM_DUMP"):
            print(out)

    # the preflight tells a refused config from an accepted one
    for bad in ({"worker_timeout": 0.25}, {"max_session": 5}, {"listen": "0.0.0.0"},
                {"worker_mode": "split", "device": "cpu", "context_device": "cuda:1", "workers": "w:1"}):
        rc, err, ok = preflight_tconstd(a.tconstd, json.dumps(bad), "preflight self-check", tmp)
        check(not ok and rc == 2, "preflight: tconstd accepts %s (rc %s): %s" % (json.dumps(bad), rc, err))

    # every numeric (and other) value that reaches a knob: the schema takes
    # what the binary takes, and the chart's own config keys are refused
    n = check_schema_knobs(validator, defaults, dflags, wflags, owned)
    print("schema vs --help: %d knob values probed; chart-owned config keys: %s" % (n, ", ".join(sorted(owned))))

    # every template renders in some case
    tdir = os.path.join(a.chart, "templates")
    templates = {"tconst/templates/" + f for f in os.listdir(tdir) if f.endswith(".yaml")}
    check(rendered_sources == templates, "templates never rendered: %s" % sorted(templates - rendered_sources))

    # values the schema must reject (one per rule)
    invalid = [
        ("unknown top-level key", {"replicaCount": 2}),
        ("typo in a nested key", {"workers": {"pair": 2}}),
        ("log level", {"log": {"level": "verbose"}}),
        ("port out of range", {"coordinator": {"ports": {"grpc": 70000}}}),
        ("port as a string", {"coordinator": {"ports": {"http": "9180"}}}),
        ("drain timeout beyond tconstd's range", {"coordinator": {"drainTimeout": 100000}}),
        ("negative drain timeout", {"coordinator": {"drainTimeout": -1}}),
        ("zero worker pairs", {"workers": {"pairs": 0}}),
        ("worker layout", {"workers": {"layout": "mesh"}}),
        ("NCCL on CPU workers", {"workers": {"device": "cpu", "transport": "nccl"}}),
        ("device pattern", {"coordinator": {"embedded": {"device": "gpu0"}}}),
        ("worker mode", {"coordinator": {"embedded": {"workerMode": "remote"}}}),
        ("chart-owned config key", {"coordinator": {"config": {"listen": "127.0.0.1:1"}}}),
        ("chart-owned config key, dash form", {"coordinator": {"config": {"data-dir": "/x"}}}),
        ("HPA with worker StatefulSets", {"coordinator": {"autoscaling": {"enabled": True}}, "persistence": {"enabled": False}}),
        ("HPA with the journal", {"coordinator": {"autoscaling": {"enabled": True}}, "workers": {"enabled": False}}),
        ("2 coordinators sharing workers", {"coordinator": {"replicas": 2}}),
        ("pvc model without a claim", {"model": {"source": "pvc"}}),
        ("hostPath model without a path", {"model": {"source": "hostPath"}}),
        ("init container without a command", {"model": {"source": "initContainer"}}),
        ("bad size quantity", {"persistence": {"size": "10 GB"}}),
        ("NCCL env not NCCL_*", {"workers": {"nccl": {"env": {"LD_PRELOAD": "x"}}}}),
        ("required key removed", {"workers": {"ports": None}}),
        ("access mode", {"persistence": {"accessModes": ["ReadOnlyMany"]}}),
        ("scrape interval", {"metrics": {"serviceMonitor": {"interval": "often"}}}),
        ("worker timeout below tconstd's 0.5", {"coordinator": {"workerTimeout": 0.25}}),
        ("worker timeout above tconstd's 3600", {"coordinator": {"workerTimeout": 7200}}),
        ("zero worker timeout", {"coordinator": {"workerTimeout": 0}}),
        ("worker start timeout below 1", {"coordinator": {"workerStartTimeout": 0.5}}),
        ("worker start timeout above 86400", {"coordinator": {"workerStartTimeout": 100000}}),
        ("worker start timeout as a duration", {"coordinator": {"workerStartTimeout": "30m"}}),
        ("worker threads above 1024", {"workers": {"threads": 2048}}),
        ("config key misspelled", {"coordinator": {"config": {"max_session": 512}}}),
        ("config key in flag form", {"coordinator": {"config": {"max-sessions": 512}}}),
        ("config value beyond tconstd's range", {"coordinator": {"config": {"max_batch": 5000}}}),
        ("config value below tconstd's range", {"coordinator": {"config": {"max_message_bytes": 512}}}),
        ("config int as a fraction", {"coordinator": {"config": {"multi_step": 1.5}}}),
        ("config number as a string", {"coordinator": {"config": {"idle_timeout": "1h"}}}),
        ("config bool as a string", {"coordinator": {"config": {"overlap_syncs": "false"}}}),
        ("chart-owned context_device", {"coordinator": {"config": {"context_device": "cuda:1"}}}),
        ("chart-owned worker_start_timeout", {"coordinator": {"config": {"worker_start_timeout": 600}}}),
        ("3 embedded GPUs (2 workers at most)", {"coordinator": {"embedded": {"gpus": 3}}}),
        ("context device pattern", {"coordinator": {"embedded": {"contextDevice": "gpu1"}}}),
        ("ip family", {"ipFamily": "DualStack"}),
        ("alert selector unquoted", {"metrics": {"prometheusRule": {"selector": "namespace=ml"}}}),
        ("alert selector leading comma", {"metrics": {"prometheusRule": {"selector": ',namespace="ml"'}}}),
        ("up selector unquoted", {"metrics": {"prometheusRule": {"upSelector": "job=tconst"}}}),
        ("boundary stall past the last bucket", {"metrics": {"prometheusRule": {"boundaryStallSeconds": 60}}}),
        ("alert error ratio over 1", {"metrics": {"prometheusRule": {"errorRatio": 1.5}}}),
        ("liveness timeout 1 (0 or at least 2)", {"coordinator": {"config": {"liveness_timeout": 1}}}),
        ("served model name over 255 bytes", {"coordinator": {"config": {"served_model_name": "m" * 256}}}),
    ]
    for case, vals in invalid:
        rc, out, err, merged, notes = R.run([vals], values_only=True)
        if not check(rc == 0 and merged is not None, "invalid %s: values did not merge: %s" % (case, err)):
            continue
        errs = list(validator.iter_errors(merged))
        check(errs, "schema accepts invalid values (%s): %s" % (case, json.dumps(vals)))
        print("rejected by schema: %-38s %s" % (case, (errs[0].message[:70] if errs else "NOT REJECTED")))

    # values the templates refuse (beyond what the schema can say), and a
    # cluster older than Chart.yaml's kubeVersion
    refused = [
        ("grpc port == http port", [{"coordinator": {"ports": {"http": 50051}}}], [], "must differ"),
        ("openai port == http port", [{"coordinator": {"ports": {"openai": 9180}}}], [], "must differ"),
        ("worker ports collide", [{"workers": {"ports": {"generation": {"control": 50061}}}}], [], "must differ"),
        ("pvc model without a claim", [{"model": {"source": "pvc"}}], [], "model.pvc.claimName is required"),
        ("embedded cuda device without GPUs", [emb(device="cuda:0")], [], "the pod requests 0 GPU(s)"),
        ("embedded context device without GPUs", [emb(contextDevice="cuda:0")], [], "the pod requests 0 GPU(s)"),
        ("embedded device beyond the pod's GPUs", [emb(gpus=2, device="cuda:2")], [], "the pod requests 2 GPU(s)"),
        ("embedded GPUs on the CPU", [emb(gpus=1, device="cpu")], [], "GPU cuda:0 is requested but no spawned worker uses it"),
        ("embedded 2 GPUs, one worker", [emb(gpus=2, workerMode="both")], [], "GPU cuda:1 is requested but no spawned worker uses it"),
        ("embedded 2 GPUs, both roles on one", [emb(gpus=2, contextDevice="cuda:0")], [], "GPU cuda:1 is requested but no spawned worker uses it"),
        ("embedded context device, mode both", [emb(gpus=1, workerMode="both", contextDevice="cuda:0")], [], "needs workerMode split"),
        ("embedded in-process with a GPU", [emb(gpus=1, workerMode="inprocess")], [], "inprocess runs on the CPU"),
        ("Kubernetes 1.22", [], ["--kube-version", "v1.22.0"], "kubeVersion"),
        ("17 split pairs (34 workers)", [{"workers": {"pairs": 17}}], [], "tconstd attaches at most 32"),
        ("33 both workers", [{"workers": {"pairs": 33, "layout": "both"}}], [], "tconstd attaches at most 32"),
        ("2 GPUs a worker", [{"workers": {"gpusPerWorker": 2}}], [], "a worker runs on one device"),
        ("weight_dtype with attached workers", [{"coordinator": {"config": {"weight_dtype": "bf16"}}}], [],
         "set workers.weightDtype"),
        ("message size over the budget", [{"coordinator": {"config": {"max_message_bytes": 134217728}}}], [],
         "large_request_budget 67108864 is below max_message_bytes"),
        ("memory quota under 4 messages", [{"coordinator": {"config": {"grpc_memory_quota": 1000000}}}], [],
         "grpc_memory_quota 1000000 is below 4 x max_message_bytes"),
        ("scrape timeout over the interval", [{"metrics": {"serviceMonitor": {"enabled": True, "interval": "5s"}}}], [],
         "scrapeTimeout 10s is longer than its interval 5s"),
    ]
    check(len(refused) >= 12, "refused cases lost")
    for case, vals, extra, msg in refused:
        rc, out, err, merged, notes = R.run(vals, extra)
        check(rc != 0 and msg in err, "template does not refuse %s (rc %d): %s" % (case, rc, err.strip()))
        print("refused by template: %-37s %s" % (case, err.strip().splitlines()[-1][-70:] if err.strip() else "NOT REFUSED"))

    check_docker(a.repo, defaults)

    print("%d checks, %d failed" % (CHECKS[0], len(FAILS)))
    for f in FAILS:
        print("FAIL: " + f)
    sys.exit(1 if FAILS else 0)


def check_docker(repo, defaults):
    """The images put the binaries where the chart runs them, as non-root,
    and EXPOSE the ports the chart's pods listen on by default."""
    c, wp = defaults["coordinator"]["ports"], defaults["workers"]["ports"]
    chart_ports = {c["grpc"], c["http"], wp["context"]["control"], wp["context"]["data"],
                   wp["generation"]["control"], wp["generation"]["data"]}
    for name in ("Dockerfile.cuda", "Dockerfile.cpu"):
        p = os.path.join(repo, "docker", name)
        if not check(os.path.exists(p), "docker/%s missing" % name):
            continue
        text = open(p).read()
        froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
        check(len(froms) >= 2, "docker/%s: not multi-stage" % name)
        check(any(re.search(r"--from=build", l) for l in text.splitlines() if l.startswith("COPY")), "docker/%s: runtime stage copies nothing from build" % name)
        for b in ("tconstd", "tconst-worker", "tconst"):
            check(re.search(r"/usr/local/bin/%s\b" % re.escape(b), text) is not None, "docker/%s: no /usr/local/bin/%s" % (name, b))
        exposed = {int(x.split("/")[0]) for l in re.findall(r"^EXPOSE\s+(.+)$", text, flags=re.M) for x in l.split()}
        check(exposed == chart_ports, "docker/%s: EXPOSE %s, the chart's default ports are %s" % (name, sorted(exposed), sorted(chart_ports)))
        users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
        check(users and users[-1].split(":")[0] == "10001", "docker/%s: last USER is not 10001 (the chart's runAsUser)" % name)
        if name.endswith("cuda"):
            check(re.search(r"^FROM\s+\S*cuda\S*devel", text, flags=re.M) and re.search(r"^FROM\s+\S*cuda\S*runtime", text, flags=re.M),
                  "docker/%s: CUDA devel builds, CUDA runtime runs" % name)
        else:
            check(all(f[0].startswith("debian:12") or f[0].startswith("debian:bookworm") for f in froms), "docker/%s: Debian 12 stages" % name)
    check(os.path.exists(os.path.join(repo, ".dockerignore")), ".dockerignore missing")


if __name__ == "__main__":
    main()
