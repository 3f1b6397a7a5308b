package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/tallyledger/tally/enforcer"
	"github.com/tallyledger/tally/events"
	"github.com/tallyledger/tally/projector"
)

// The shipped deployment, relative to this package's directory.
const repoRoot = "../.."

// seriesNames records what collectors register: each series name and its
// labels, from the collectors' descriptions.
type seriesNames map[string][]string

// descRE reads a description's name and labels (prometheus.Desc.String).
var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*, constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

func (n seriesNames) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			panic("unreadable description: " + d.String())
		}
		var labels []string
		for _, kv := range strings.Split(m[2], ",") {
			if name, _, ok := strings.Cut(kv, "="); ok {
				labels = append(labels, name)
			}
		}
		for _, l := range strings.Split(m[3], ",") {
			if l != "" {
				labels = append(labels, l)
			}
		}
		n[m[1]] = labels
	}
	return nil
}

func (n seriesNames) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = n.Register(c)
	}
}

func (n seriesNames) Unregister(prometheus.Collector) bool { return false }

// TestDeployAlertRules checks the shipped alerting rules: Prometheus in
// docker-compose.yml loads them (the file is mounted where
// deploy/prometheus.yml's rule_files points), each parses as Prometheus
// parses it, has a severity and a summary, and reads only series tally
// exports, with labels those series have. A renamed metric or a typo in a
// label would otherwise make an alert that never fires.
func TestDeployAlertRules(t *testing.T) {
	const promConfigIn, rulesIn = "/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{} // container path → host path, of the Prometheus service
	for _, svc := range compose.Services {
		if strings.HasPrefix(svc.Image, "prom/prometheus") {
			for _, v := range svc.Volumes {
				if parts := strings.Split(v, ":"); len(parts) >= 2 {
					mounts[parts[1]] = filepath.Join(repoRoot, parts[0])
				}
			}
		}
	}
	if mounts[promConfigIn] == "" || mounts[rulesIn] == "" {
		t.Fatalf("docker-compose.yml: Prometheus mounts %v, want %s and %s", mounts, promConfigIn, rulesIn)
	}
	data, err = os.ReadFile(mounts[promConfigIn])
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	if err := yaml.Unmarshal(data, &prom); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(prom.RuleFiles, rulesIn) {
		t.Errorf("%s: rule_files %q, want %s", mounts[promConfigIn], prom.RuleFiles, rulesIn)
	}

	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile(mounts[rulesIn], false, model.UTF8Validation, p, nil)
	if len(errs) > 0 {
		t.Fatalf("%s: %v", mounts[rulesIn], errs)
	}

	exported := seriesNames{}
	enforcer.NewMetrics(exported)
	projector.NewMetrics(exported)
	registerConnMetrics(exported, &nats.Conn{})
	registerFsyncMetrics(exported)
	outcomes := []string{"granted", "denied", "ok", "error"}
	for _, c := range []events.Code{events.CodeInvalidRequest, events.CodeForbidden, events.CodeNotFound, events.CodeReservationClosed,
		events.CodeIdempotencyConflict, events.CodeUnavailable, events.CodeTooLarge, events.CodeInternal} {
		outcomes = append(outcomes, string(c))
	}
	// Labels Prometheus adds to every scraped series.
	scraped := []string{"job", "instance"}

	rules := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules++
			name := r.Alert
			if name == "" {
				t.Errorf("group %s: a rule without an alert name (record rules are not expected): %s", g.Name, r.Expr)
				continue
			}
			if sev := r.Labels["severity"]; sev != "page" && sev != "warning" {
				t.Errorf("%s: severity %q, want page or warning", name, sev)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", name)
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", name, err) // rulefmt has parsed it already
				continue
			}
			tallySeries := 0
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				vs, ok := node.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				if !strings.HasPrefix(vs.Name, "tally_") {
					if vs.Name != "up" {
						t.Errorf("%s: reads %q, which is neither tally's nor Prometheus's up", name, vs.Name)
					}
					return nil
				}
				tallySeries++
				series := vs.Name
				labels, ok := exported[series]
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if base, cut := strings.CutSuffix(series, suffix); !ok && cut {
						labels, ok = exported[base]
						if suffix == "_bucket" {
							labels = append(slices.Clone(labels), "le")
						}
					}
				}
				if !ok {
					t.Errorf("%s: reads %s, which tally does not export", name, series)
					return nil
				}
				for _, m := range vs.LabelMatchers {
					if m.Name == "__name__" || slices.Contains(scraped, m.Name) {
						continue
					}
					if !slices.Contains(labels, m.Name) {
						t.Errorf("%s: %s has no label %q (it has %q)", name, series, m.Name, labels)
					}
					if m.Name == "outcome" && !slices.Contains(outcomes, m.Value) {
						t.Errorf("%s: outcome %q is not one tally counts (%q)", name, m.Value, outcomes)
					}
				}
				return nil
			})
			if tallySeries == 0 && !strings.Contains(r.Expr, "up{") {
				t.Errorf("%s: reads no tally series", name)
			}
		}
	}
	if rules == 0 {
		t.Fatalf("%s: no rules", mounts[rulesIn])
	}
}
