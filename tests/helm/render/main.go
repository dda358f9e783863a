// helm-render — renders a Helm chart the way `helm template` does, for the
// chart test (tests/helm/run.sh). helm itself is not installable on the
// machines this project builds on, so this stands in for it: Go's
// text/template with the sprig function library (the two helm is built on)
// plus the helm built-ins the tconst chart uses.
//
// What it is: .Values (chart defaults coalesced with -f files as helm does:
// maps merge, a user null deletes a key, YAML numbers decode as JSON
// numbers), .Release, .Chart (from Chart.yaml), .Capabilities (KubeVersion,
// APIVersions.Has), .Template; include, tpl, required, toYaml, fromYaml,
// toJson, fromJson, lookup (always empty, as in `helm template`); sprig
// without env/expandenv (helm removes them); Chart.yaml's kubeVersion
// constraint; strict missing-key errors (as `helm lint --strict`);
// .Files.Get of a file in the chart outside templates/ (a missing one is an
// error here, where helm gives ""; no .helmignore).
// What it is not: a full helm. No subcharts, hooks, the other .Files
// methods, CRD handling or install ordering; output is in template-file
// order.
//
// Build (offline, Debian's packages; GOPATH mode):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o helm-render main.go
//
// Usage:
//
//	helm-render --chart DIR [-f values.yaml ...] [--release NAME]
//	            [--namespace NS] [--kube-version v1.29.0]
//	            [--api-versions a/v1,b/v1] [--values-out FILE]
//	            [--notes-out FILE] [--values-only]
//
// Manifests go to stdout, each file preceded by `# Source: CHART/templates/F`
// as helm prints them; errors to stderr with exit status 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	semver "github.com/Masterminds/semver"
	sprig "github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// ---- YAML / JSON with helm's semantics -------------------------------------

// yamlToJSONValue turns what yaml.v2 decodes (map[interface{}]interface{},
// ints) into what sigs.k8s.io/yaml gives helm: JSON-shaped values with
// string keys and float64 numbers.
func yamlToJSONValue(v interface{}) (interface{}, error) {
	switch x := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k) // sigs.k8s.io/yaml stringifies keys too
			}
			c, err := yamlToJSONValue(e)
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []interface{}:
		s := make([]interface{}, len(x))
		for i, e := range x {
			c, err := yamlToJSONValue(e)
			if err != nil {
				return nil, err
			}
			s[i] = c
		}
		return s, nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case float32:
		return float64(x), nil
	default:
		return x, nil
	}
}

func parseYAMLMap(data []byte, what string) (map[string]interface{}, error) {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	v, err := yamlToJSONValue(raw)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: top level is not a mapping", what)
	}
	return m, nil
}

// toYAML is helm's toYaml: sigs.k8s.io/yaml.Marshal (through JSON, so
// integral numbers come out as integers, keys sorted), trailing newline cut.
func toYAML(v interface{}) string {
	j, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return ""
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(out), "\n")
}

// fromYAML is helm's fromYaml: a map; a parse error goes in map["Error"].
func fromYAML(s string) map[string]interface{} {
	m, err := parseYAMLMap([]byte(s), "fromYaml")
	if err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	return m
}

// fromYAMLArray is helm's fromYamlArray: a list; an error becomes its only element.
func fromYAMLArray(s string) []interface{} {
	var raw interface{}
	if err := yaml.Unmarshal([]byte(s), &raw); err != nil {
		return []interface{}{err.Error()}
	}
	v, err := yamlToJSONValue(raw)
	if err != nil {
		return []interface{}{err.Error()}
	}
	if v == nil {
		return []interface{}{}
	}
	a, ok := v.([]interface{})
	if !ok {
		return []interface{}{"fromYamlArray: not a list"}
	}
	return a
}

func fromJSONArray(s string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

// coalesce merges user values over chart defaults as helm does: maps merge
// key by key, anything else replaces, and a user null removes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		dm, dok := dst[k].(map[string]interface{})
		sm, sok := sv.(map[string]interface{})
		if dok && sok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

// ---- .Capabilities ----------------------------------------------------------

type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

type kubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
	HelmVersion map[string]interface{}
}

// The API groups a 1.2x cluster serves by default (enough for .Has checks).
var defaultAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v1", "autoscaling/v2",
	"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1", "storage.k8s.io/v1",
	"apps/v1/Deployment", "apps/v1/StatefulSet", "v1/Service", "v1/ConfigMap",
	"v1/PersistentVolumeClaim", "v1/ServiceAccount", "policy/v1/PodDisruptionBudget",
	"autoscaling/v2/HorizontalPodAutoscaler",
}

// ---- rendering --------------------------------------------------------------

// chartFiles is .Files: Get reads a file of the chart (not under templates/,
// not outside the chart). helm answers "" for a file it does not have; a
// chart test is better served by an error naming it.
type chartFiles struct{ dir string }

func (f chartFiles) Get(name string) (string, error) {
	clean := filepath.ToSlash(filepath.Clean(name))
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.HasPrefix(clean, "templates/") {
		return "", fmt.Errorf(".Files.Get %q: not a file of the chart outside templates/", name)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, clean))
	if err != nil {
		return "", fmt.Errorf(".Files.Get %q: %v", name, err)
	}
	return string(b), nil
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "helm-render: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	var valueFiles, apiFlags listFlag
	chartDir := flag.String("chart", "", "chart directory")
	flag.Var(&valueFiles, "f", "values file (repeatable; later wins)")
	release := flag.String("release", "tconst", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVer := flag.String("kube-version", "v1.29.0", "Kubernetes version for .Capabilities")
	flag.Var(&apiFlags, "api-versions", "extra API versions for .Capabilities.APIVersions (comma-separated, repeatable)")
	valuesOut := flag.String("values-out", "", "write the coalesced values as JSON here")
	notesOut := flag.String("notes-out", "", "write the rendered NOTES.txt here")
	valuesOnly := flag.Bool("values-only", false, "only coalesce the values (with --values-out); render nothing")
	flag.Parse()
	if *chartDir == "" || flag.NArg() != 0 {
		fail("usage: helm-render --chart DIR [-f values.yaml ...] (see the top of main.go)")
	}

	// Chart.yaml -> .Chart (helm capitalizes the keys: name -> Name).
	chartYAML, err := os.ReadFile(filepath.Join(*chartDir, "Chart.yaml"))
	if err != nil {
		fail("%v", err)
	}
	meta, err := parseYAMLMap(chartYAML, "Chart.yaml")
	if err != nil {
		fail("%v", err)
	}
	chart := map[string]interface{}{}
	for k, v := range meta {
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	for _, k := range []string{"ApiVersion", "Name", "Version"} {
		if _, ok := chart[k]; !ok {
			fail("Chart.yaml: %s is required", strings.ToLower(k[:1])+k[1:])
		}
	}
	if chart["ApiVersion"] != "v2" {
		fail("Chart.yaml: apiVersion must be v2 (helm 3)")
	}
	if _, err := semver.StrictNewVersion(fmt.Sprint(chart["Version"])); err != nil {
		fail("Chart.yaml: version %v is not SemVer 2: %v", chart["Version"], err)
	}
	for _, k := range []string{"AppVersion", "Description", "Type", "KubeVersion", "Home", "Icon", "Keywords", "Maintainers", "Sources", "Annotations", "Dependencies", "Deprecated"} {
		if _, ok := chart[k]; !ok {
			chart[k] = nil // present, so strict mode treats them as helm's zero values
		}
	}

	// .Capabilities, and the chart's kubeVersion constraint (helm refuses to
	// render for a cluster outside it).
	kv, err := semver.NewVersion(*kubeVer)
	if err != nil {
		fail("--kube-version %q: %v", *kubeVer, err)
	}
	if c, ok := chart["KubeVersion"].(string); ok && c != "" {
		cons, err := semver.NewConstraint(c)
		if err != nil {
			fail("Chart.yaml: kubeVersion %q: %v", c, err)
		}
		if !cons.Check(kv) {
			fail("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c, *kubeVer)
		}
	}
	apis := append([]string{}, defaultAPIVersions...)
	for _, a := range apiFlags {
		for _, x := range strings.Split(a, ",") {
			if x = strings.TrimSpace(x); x != "" {
				apis = append(apis, x)
			}
		}
	}
	caps := capabilities{
		KubeVersion: kubeVersion{Version: "v" + kv.String(), Major: fmt.Sprint(kv.Major()),
			Minor: fmt.Sprint(kv.Minor()), GitVersion: "v" + kv.String()},
		APIVersions: apiVersions(apis),
		HelmVersion: map[string]interface{}{"Version": "v3.14.0-render"},
	}

	// .Values: the chart's values.yaml, then each -f file over it.
	defaults, err := os.ReadFile(filepath.Join(*chartDir, "values.yaml"))
	if err != nil {
		fail("%v", err)
	}
	values, err := parseYAMLMap(defaults, "values.yaml")
	if err != nil {
		fail("%v", err)
	}
	for _, f := range valueFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			fail("%v", err)
		}
		user, err := parseYAMLMap(data, f)
		if err != nil {
			fail("%v", err)
		}
		values = coalesce(values, user)
	}
	if *valuesOut != "" {
		b, _ := json.MarshalIndent(values, "", "  ")
		if err := os.WriteFile(*valuesOut, append(b, '\n'), 0o644); err != nil {
			fail("%v", err)
		}
	}
	if *valuesOnly {
		return
	}

	chartName := fmt.Sprint(chart["Name"])
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": *release, "Namespace": *namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": caps,
		"Files":        chartFiles{*chartDir},
	}

	// One template set for every file, as helm builds it, so that every
	// define is visible to every template.
	tdir := filepath.Join(*chartDir, "templates")
	entries, err := os.ReadDir(tdir)
	if err != nil {
		fail("%v", err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			fail("templates/%s: subdirectories are not supported by this renderer", e.Name())
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)

	var t *template.Template
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["fromYamlArray"] = fromYAMLArray
	funcs["toJson"] = toJSON
	funcs["fromJsonArray"] = fromJSONArray
	funcs["fromJson"] = fromJSON
	funcs["lookup"] = func(apiVersion, kind, ns, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil {
			return v, errors.New(msg)
		}
		if s, ok := v.(string); ok && s == "" {
			return v, errors.New(msg)
		}
		return v, nil
	}
	includeDepth := 0
	funcs["include"] = func(name string, data interface{}) (string, error) {
		includeDepth++
		defer func() { includeDepth-- }()
		if includeDepth > 1000 {
			return "", fmt.Errorf("include %q: rendering too deep (recursion?)", name)
		}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		c, err = c.New("tpl").Option("missingkey=error").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		var buf bytes.Buffer
		if err := c.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %v", err)
		}
		return buf.String(), nil
	}

	t = template.New(chartName).Funcs(funcs).Option("missingkey=error")
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(tdir, n))
		if err != nil {
			fail("%v", err)
		}
		full := chartName + "/templates/" + n
		if _, err := t.New(full).Parse(string(data)); err != nil {
			fail("parse %s: %v", full, err)
		}
	}

	var out bytes.Buffer
	for _, n := range names {
		full := chartName + "/templates/" + n
		if strings.HasPrefix(n, "_") {
			continue // partials: defines only
		}
		isNotes := n == "NOTES.txt"
		if !isNotes && !strings.HasSuffix(n, ".yaml") && !strings.HasSuffix(n, ".yml") && !strings.HasSuffix(n, ".tpl") {
			continue
		}
		if isNotes && *notesOut == "" {
			continue
		}
		scope := map[string]interface{}{}
		for k, v := range top {
			scope[k] = v
		}
		scope["Template"] = map[string]interface{}{"Name": full, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, full, scope); err != nil {
			fail("render %s: %v", full, err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if isNotes {
			if err := os.WriteFile(*notesOut, []byte(text), 0o644); err != nil {
				fail("%v", err)
			}
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue // a disabled resource renders nothing, and helm prints nothing
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", full, strings.TrimLeft(text, "\n"))
	}
	os.Stdout.Write(out.Bytes())
}
