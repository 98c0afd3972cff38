package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// strict decodes a manifest into v, refusing any field v's type does not
// have (a misspelt or misplaced key), and checks its kind.
func strict(t *testing.T, path string, v any, apiVersion, kind string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	exactKeys(t, path, b, v)
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(b, &meta); err != nil || meta.APIVersion != apiVersion || meta.Kind != kind {
		t.Fatalf("%s: apiVersion %q kind %q, want %s %s", path, meta.APIVersion, meta.Kind, apiVersion, kind)
	}
}

func TestDaemonSet(t *testing.T) {
	var ds appsv1.DaemonSet
	strict(t, "kubernetes/daemonset.yaml", &ds, "apps/v1", "DaemonSet")
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || spec.HostNetwork {
		t.Errorf("hostPID %v, hostNetwork %v: the snapshot needs the host's pids, nothing needs its network", spec.HostPID, spec.HostNetwork)
	}
	if got := ds.Spec.Selector.MatchLabels; !mapsSubset(got, ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the template's labels %v", got, ds.Spec.Template.Labels)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	var add []string
	for _, a := range sc.Capabilities.Add {
		add = append(add, string(a))
	}
	slices.Sort(add)
	// serve's set as measured (README, Privileges; TestLeastPrivilege in
	// cmd/tcpstate runs serve with it and with each one dropped): no
	// DAC_READ_SEARCH, serve reads no tracefs.
	if want := []string{"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"}; !slices.Equal(add, want) {
		t.Errorf("capabilities added %v, want exactly %v", add, want)
	}
	if len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("capabilities dropped %v, want ALL", sc.Capabilities.Drop)
	}
	if sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v: want unprivileged, no privilege escalation, a read-only root", sc)
	}
	if !slices.Contains(c.Args, "serve") || !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--listen=") && strings.HasSuffix(a, ":9464") }) {
		t.Errorf("args %v: want serve --listen=...:9464", c.Args)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
	}{{"readiness", c.ReadinessProbe}, {"liveness", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != "/healthz" || p.probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe %+v: want GET /healthz on the metrics port", p.name, p.probe)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9464 {
		t.Errorf("ports %+v: want metrics 9464", c.Ports)
	}
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Memory().IsZero() || req.Cpu().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 || lim.Cpu().Cmp(*req.Cpu()) < 0 {
		t.Errorf("resources %+v: want requests and limits, limits above requests", c.Resources)
	}
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != "9464" || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v", ann)
	}
	// Exactly the host mounts the programs need: BTF, read-only.
	mounts := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		mounts[v.Name] = v.HostPath.Path
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
		if mounts[m.Name] != m.MountPath {
			t.Errorf("mount %s at %s of host path %s", m.Name, m.MountPath, mounts[m.Name])
		}
	}
	if len(mounts) != 1 || mounts["btf"] != "/sys/kernel/btf" {
		t.Errorf("host mounts %v, want only /sys/kernel/btf", mounts)
	}
}

func TestServiceAndServiceMonitor(t *testing.T) {
	var svc corev1.Service
	strict(t, "kubernetes/service.yaml", &svc, "v1", "Service")
	var sm monitoringv1.ServiceMonitor
	strict(t, "kubernetes/servicemonitor.yaml", &sm, "monitoring.coreos.com/v1", "ServiceMonitor")
	var ds appsv1.DaemonSet
	strict(t, "kubernetes/daemonset.yaml", &ds, "apps/v1", "DaemonSet")
	if !mapsSubset(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("the Service selects %v, the pods have %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if !mapsSubset(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("the ServiceMonitor selects %v, the Service has %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("the ServiceMonitor looks in %v, the Service is in %s", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("endpoints %+v, service ports %+v: want the metrics port", sm.Spec.Endpoints, svc.Spec.Ports)
	}
	// The rules select job="tcpstate": the job label is the Service's name label.
	if sm.Spec.JobLabel == "" || svc.Labels[sm.Spec.JobLabel] != "tcpstate" {
		t.Errorf("jobLabel %q gives job %q, the rules want tcpstate", sm.Spec.JobLabel, svc.Labels[sm.Spec.JobLabel])
	}
}

// The rules file has exactly a PrometheusRule's spec: it decodes strictly.
func TestRulesDecodeAsPrometheusRule(t *testing.T) {
	var spec monitoringv1.PrometheusRuleSpec
	b, err := os.ReadFile("prometheus/tcpstate-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &spec); err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" || r.Labels["severity"] == "" {
				t.Errorf("alert %s: want a summary, a description and a severity", r.Alert)
			}
		}
	}
	t.Logf("alerts: %v", alerts)
}

// tool finds a command; in CI (CI=true) a missing one is a failure:
// .ci/run installs it.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (Debian package %s; .ci/run installs it)", name, pkg)
	}
	t.Skipf("%s not found: apt-get install %s", name, pkg)
	return ""
}

// promtool accepts the rules, and their unit tests pass: every alert fires
// where it should and stays silent where it should not.
func TestRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "tcpstate-rules.yml"},
		{"test", "rules", "tcpstate-rules.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert of the rules has a test that fires it.
	rules, _ := os.ReadFile("prometheus/tcpstate-rules.yml")
	tests, _ := os.ReadFile("prometheus/tcpstate-rules.test.yml")
	for _, line := range strings.Split(string(rules), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert: "); ok {
			if !strings.Contains(string(tests), "alertname: "+name+"\n        exp_alerts:\n          - exp_labels") {
				t.Errorf("alert %s: no test in which it fires", name)
			}
		}
	}
}

// systemd-analyze verify accepts the unit (it needs no running systemd).
// It checks that ExecStart's binary exists: the unit is verified with it
// pointing at a binary built for the test.
func TestSystemdUnit(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	unit, err := os.ReadFile("systemd/tcpstate.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	// The capabilities: serve's measured set, as for the DaemonSet.
	for _, want := range []string{
		"DynamicUser=yes",
		"AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE\n",
		"CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE\n",
		"NoNewPrivileges=yes", "ProtectSystem=strict", "RestrictNamespaces=net\n",
		"ExecStart=/usr/local/bin/tcpstate serve ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tcpstate")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goTool, "build", "-o", bin, "../cmd/tcpstate").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "tcpstate.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "/usr/local/bin/tcpstate", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// exactKeys checks that every key of the manifest survives a round trip
// through its type with the same spelling: Go's JSON decoding matches field
// names regardless of case, so UnmarshalStrict alone takes hostPid for
// hostPID, which the API server would refuse.
func exactKeys(t *testing.T, path string, manifest []byte, v any) {
	t.Helper()
	again, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var orig, back any
	if err := yaml.Unmarshal(manifest, &orig); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(again, &back); err != nil {
		t.Fatal(err)
	}
	var walk func(at string, a, b any)
	walk = func(at string, a, b any) {
		switch a := a.(type) {
		case map[string]any:
			bm, _ := b.(map[string]any)
			for k, av := range a {
				bv, ok := bm[k]
				if !ok {
					t.Errorf("%s: %s%s is not a field of its type as spelt (or it was dropped)", path, at, k)
					continue
				}
				walk(at+k+".", av, bv)
			}
		case []any:
			bl, _ := b.([]any)
			for i, av := range a {
				if i < len(bl) {
					walk(fmt.Sprintf("%s%d.", at, i), av, bl[i])
				}
			}
		}
	}
	walk("", orig, back)
}

func mapsSubset(sub, of map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if of[k] != v {
			return false
		}
	}
	return true
}
