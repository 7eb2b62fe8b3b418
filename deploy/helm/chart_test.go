// Package helm holds the test of the Helm chart in outboxrelay/.
package helm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/outboxrelay/outboxrelay/config"
	"github.com/outboxrelay/outboxrelay/internal/testenv"
)

// object is one rendered Kubernetes object, as generic YAML.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

// get walks o by keys (map keys, or list indexes as ints).
func (o object) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

// render runs helm template on the chart with --set args (or -f file for
// an arg ending in .yaml) and returns the objects by kind.
func render(t *testing.T, set ...string) map[string][]object {
	t.Helper()
	args := []string{"template", "rel", "outboxrelay"}
	for _, s := range set {
		if strings.HasSuffix(s, ".yaml") {
			args = append(args, "-f", s)
		} else {
			args = append(args, "--set", s)
		}
	}
	out, err := exec.Command(helmBin(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	objs := map[string][]object{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o map[string]any // not object: yaml.v3 would make nested maps objects too
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("helm template output: %v\n%s", err, out)
		}
		if o != nil {
			objs[object(o).kind()] = append(objs[object(o).kind()], o)
		}
	}
	return objs
}

// helmBin is $HELM_BIN (make test sets it to bin/helm), else the helm
// pinned in tools/helm/go.mod, which `go tool -n` builds once into the
// build cache and names.
func helmBin(t *testing.T) string {
	t.Helper()
	bin, err := findHelm()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var findHelm = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("HELM_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("HELM_BIN: %w (run make bin/helm, or unset HELM_BIN to use the helm pinned in tools/helm/go.mod)", err)
		}
		return p, nil
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "-C", filepath.Join(root, "tools", "helm"), "tool", "-n", "helm").Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("build helm from tools/helm/go.mod: %v\n%s(run make bin/helm and set HELM_BIN=$PWD/bin/helm)", err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
})

func one(t *testing.T, objs map[string][]object, kind string) object {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("%d %s objects, want 1", len(objs[kind]), kind)
	}
	return objs[kind][0]
}

// TestChart renders the chart and checks what users rely on: two relays
// (active and standby), the probes, a non-root read-only container, the
// config mounted from a ConfigMap that the relay can load, secrets only in
// a Secret, the disruption budget, and the ServiceMonitor only on request.
func TestChart(t *testing.T) {
	if out, err := exec.Command(helmBin(t), "lint", "outboxrelay").CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	const secret = "s3cret-Value-9"
	objs := render(t, "secrets.PGPASSWORD="+secret)

	d := one(t, objs, "Deployment")
	if got := d.get("spec", "replicas"); got != 2 {
		t.Errorf("replicas = %v, want 2 (active and standby)", got)
	}
	c := object(d.get("spec", "template", "spec", "containers", 0).(map[string]any))
	for _, p := range []struct {
		path []any
		want any
	}{
		{[]any{"readinessProbe", "httpGet", "path"}, "/readyz?standby=ok"},
		{[]any{"livenessProbe", "httpGet", "path"}, "/healthz"},
		{[]any{"securityContext", "readOnlyRootFilesystem"}, true},
		{[]any{"securityContext", "allowPrivilegeEscalation"}, false},
		{[]any{"securityContext", "capabilities", "drop", 0}, "ALL"},
		{[]any{"volumeMounts", 0, "mountPath"}, "/etc/outboxrelay"},
		{[]any{"volumeMounts", 0, "readOnly"}, true},
		{[]any{"args", 2}, "/etc/outboxrelay/config.yaml"},
		{[]any{"envFrom", 0, "secretRef", "name"}, "rel-outboxrelay"},
	} {
		if got := c.get(p.path...); got != p.want {
			t.Errorf("container %v = %v, want %v", p.path, got, p.want)
		}
	}
	for _, p := range []struct {
		path []any
		want any
	}{
		{[]any{"runAsNonRoot"}, true},
		{[]any{"runAsUser"}, 65532},
		{[]any{"fsGroup"}, 65532},
		{[]any{"seccompProfile", "type"}, "RuntimeDefault"},
	} {
		if got := d.get(append([]any{"spec", "template", "spec", "securityContext"}, p.path...)...); got != p.want {
			t.Errorf("pod securityContext %v = %v, want %v", p.path, got, p.want)
		}
	}
	if got := d.get("spec", "template", "spec", "volumes", 0, "configMap", "name"); got != "rel-outboxrelay" {
		t.Errorf("config volume from ConfigMap %v, want rel-outboxrelay", got)
	}

	// The config the relay loads: secrets as ${VAR}, expanded from the
	// Secret's env, never in the ConfigMap.
	cm := one(t, objs, "ConfigMap")
	text, _ := cm.get("data", "config.yaml").(string)
	for kind, list := range objs {
		for _, o := range list {
			if b, _ := yaml.Marshal(o); kind != "Secret" && strings.Contains(string(b), secret) {
				t.Errorf("the secret value is in %s %v", kind, o.get("metadata", "name"))
			}
		}
	}
	if got := one(t, objs, "Secret").get("stringData", "PGPASSWORD"); got != secret {
		t.Errorf("Secret PGPASSWORD = %v, want the value set", got)
	}
	cfg, err := config.ParseConfigEnv(strings.NewReader(text), func(k string) (string, bool) {
		return map[string]string{"PGPASSWORD": secret}[k], k == "PGPASSWORD"
	})
	if err != nil {
		t.Fatalf("the relay cannot load the chart's config: %v\n%s", err, text)
	}
	if !strings.Contains(cfg.Postgres.URL, secret) || cfg.HTTP.Listen != "0.0.0.0:8080" {
		t.Errorf("loaded config: postgres.url %q, http.listen %q; want the secret expanded and 0.0.0.0:8080", config.Redact(cfg.Postgres.URL), cfg.HTTP.Listen)
	}

	pdb := one(t, objs, "PodDisruptionBudget")
	if got := pdb.get("spec", "maxUnavailable"); got != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable = %v, want 1", got)
	}
	if n := len(objs["ServiceMonitor"]); n != 0 {
		t.Errorf("%d ServiceMonitors by default, want none", n)
	}

	// An existing Secret, and a ServiceMonitor on request.
	objs = render(t, "existingSecret=mine", "serviceMonitor.enabled=true")
	if n := len(objs["Secret"]); n != 0 {
		t.Errorf("%d Secrets with existingSecret, want none", n)
	}
	if got := one(t, objs, "Deployment").get("spec", "template", "spec", "containers", 0, "envFrom", 0, "secretRef", "name"); got != "mine" {
		t.Errorf("envFrom secret %v, want mine", got)
	}
	if got := one(t, objs, "ServiceMonitor").get("spec", "endpoints", 0, "path"); got != "/metrics" {
		t.Errorf("ServiceMonitor path %v, want /metrics", got)
	}

	// A new password restarts the relays: they read their environment at start.
	sum := func(objs map[string][]object) any {
		return one(t, objs, "Deployment").get("spec", "template", "metadata", "annotations", "checksum/secret")
	}
	if a, b := sum(objs), sum(render(t, "secrets.PGPASSWORD=other")); a == nil || a == b {
		t.Errorf("checksum/secret %v with one password and %v with another, want two different sums", a, b)
	}

	// A password with the characters YAML and URLs care about reaches the
	// Secret unchanged.
	const odd = `p@ss:w#rd "q" \\ 'x' {y}, $z`
	values := filepath.Join(t.TempDir(), "values.yaml")
	if b, err := yaml.Marshal(map[string]any{"secrets": map[string]string{"PGPASSWORD": odd}}); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(values, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := one(t, render(t, values), "Secret").get("stringData", "PGPASSWORD"); got != odd {
		t.Errorf("Secret PGPASSWORD = %q, want %q", got, odd)
	}

	// Files the config names (nats.creds) mounted from a Secret the user manages.
	objs = render(t, "extraVolumes[0].name=nats", "extraVolumes[0].secret.secretName=nats-relay",
		"extraVolumeMounts[0].name=nats", "extraVolumeMounts[0].mountPath=/etc/nats")
	d = one(t, objs, "Deployment")
	if got := d.get("spec", "template", "spec", "volumes", 1, "secret", "secretName"); got != "nats-relay" {
		t.Errorf("extra volume from Secret %v, want nats-relay", got)
	}
	if got := d.get("spec", "template", "spec", "containers", 0, "volumeMounts", 1, "mountPath"); got != "/etc/nats" {
		t.Errorf("extra volume mounted at %v, want /etc/nats", got)
	}

	// The relay's default http.listen, loopback, would keep both pods unready:
	// the chart refuses it and says what to set.
	out, err := exec.Command(helmBin(t), "template", "rel", "outboxrelay", "--set", "config.http.listen=127.0.0.1:8080").CombinedOutput()
	if want := "set config.http.listen to 0.0.0.0:8080"; err == nil {
		t.Errorf("helm template with http.listen 127.0.0.1:8080 rendered; want a failure saying %q", want)
	} else if !strings.Contains(string(out), want) {
		t.Errorf("helm template with http.listen 127.0.0.1:8080: %s; want it to say %q", out, want)
	}

	// A values change that breaks the relay's config fails here.
	objs = render(t, "config.nats.format=xml")
	if _, err := config.ParseConfigEnv(strings.NewReader(one(t, objs, "ConfigMap").get("data", "config.yaml").(string)), func(string) (string, bool) { return "x", true }); err == nil {
		t.Error("a config with nats.format: xml loaded; the config check would pass anything")
	}
}
