package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/tallyledger/tally/internal/natstest"
	"github.com/tallyledger/tally/streams"
)

// The shipped deployment, relative to this package's directory.
const (
	repoRoot       = ".."
	composeFile    = "docker-compose.yml"
	deployAccount  = "TALLY"
	deployP        = 8    // the P the shipped mapping and permissions are written for
	deployReplicas = 3    // what the shipped tally services ask for
	metricsPort    = 9464 // tally's --http-listen port in the compose file
	exporterPort   = 7777 // prometheus-nats-exporter's default
	clientPort     = 4222
	routePort      = 6222
	monitorPort    = 8222
)

var deployNodes = []string{"n1", "n2", "n3"}

type composeSpec struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image   string   `yaml:"image"`
	Build   any      `yaml:"build"`
	Command []string `yaml:"command"`
	Volumes []string `yaml:"volumes"`
}

func loadCompose(t *testing.T) composeSpec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, composeFile))
	if err != nil {
		t.Fatal(err)
	}
	var c composeSpec
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return c
}

// hostPath finds the repository file that a service sees at containerPath
// through its bind mounts, or "" if none is mounted there.
func hostPath(svc composeService, containerPath string) string {
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			continue
		}
		src, dst := parts[0], parts[1]
		if rel, ok := strings.CutPrefix(containerPath, dst); ok && (rel == "" || strings.HasPrefix(rel, "/")) {
			return filepath.Join(repoRoot, src, rel)
		}
	}
	return ""
}

// flagValue returns the value following name in args.
func flagValue(args []string, name string) (string, bool) {
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

// deployConfig is the path of node's shipped configuration.
func deployConfig(node string) string {
	return filepath.Join(repoRoot, "deploy", "nats", node+".conf")
}

// deployPasswords reads the (placeholder) passwords of the shipped users.
func deployPasswords(t *testing.T) map[string]string {
	t.Helper()
	opts, err := server.ProcessConfigFile(deployConfig(deployNodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	pass := make(map[string]string)
	for _, u := range opts.Users {
		if u.Account == nil || u.Account.Name != deployAccount {
			t.Errorf("user %s is not in account %s", u.Username, deployAccount)
		}
		pass[u.Username] = u.Password
	}
	return pass
}

// TestDeployTopology checks docker-compose.yml against the deployment the
// design names: 3 JetStream nodes, 2 enforcers, 1 projector, Prometheus
// scraping all of them.
func TestDeployTopology(t *testing.T) {
	c := loadCompose(t)
	pass := deployPasswords(t)
	var nodes, enforcers, projectors, proms, exporters []string
	for name, svc := range c.Services {
		switch {
		case strings.HasPrefix(svc.Image, "nats:"):
			nodes = append(nodes, name)
		case svc.Build != nil && len(svc.Command) > 0 && svc.Command[0] == "enforcer":
			enforcers = append(enforcers, name)
		case svc.Build != nil && len(svc.Command) > 0 && svc.Command[0] == "projector":
			projectors = append(projectors, name)
		case strings.HasPrefix(svc.Image, "prom/prometheus"):
			proms = append(proms, name)
		case strings.HasPrefix(svc.Image, "natsio/prometheus-nats-exporter"):
			exporters = append(exporters, name)
		default:
			t.Errorf("service %s: unexpected role (image %q, command %q)", name, svc.Image, svc.Command)
		}
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, deployNodes) {
		t.Errorf("nats nodes %q, want %q", nodes, deployNodes)
	}
	if len(enforcers) != 2 || len(projectors) != 1 || len(proms) != 1 {
		t.Fatalf("enforcers %q, projectors %q, prometheus %q: want 2, 1, 1", enforcers, projectors, proms)
	}

	for _, name := range nodes {
		svc := c.Services[name]
		want := []string{"--config", "/etc/nats/" + name + ".conf"}
		if !slices.Equal(svc.Command, want) {
			t.Errorf("%s: command %q, want %q", name, svc.Command, want)
		}
		if p := hostPath(svc, want[1]); p != deployConfig(name) {
			t.Errorf("%s: %s is mounted from %q, want %q", name, want[1], p, deployConfig(name))
		}
		if p := hostPath(svc, "/etc/nats/accounts.conf"); p == "" {
			t.Errorf("%s: accounts.conf not mounted next to its config", name)
		} else if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	tallyServices := slices.Concat(enforcers, projectors)
	for _, name := range tallyServices {
		args := c.Services[name].Command
		natsURL, _ := flagValue(args, "--nats-url")
		var hosts []string
		for _, raw := range strings.Split(natsURL, ",") {
			u, err := url.Parse(raw)
			if err != nil {
				t.Errorf("%s: --nats-url %q: %v", name, raw, err)
				continue
			}
			hosts = append(hosts, u.Host)
			// Every URL carries the credentials: nats.go tries them in random order.
			if p, _ := u.User.Password(); u.User.Username() != "tally" || p != pass["tally"] {
				t.Errorf("%s: --nats-url %q does not log in as the tally service user", name, raw)
			}
		}
		slices.Sort(hosts)
		var want []string
		for _, n := range deployNodes {
			want = append(want, net.JoinHostPort(n, strconv.Itoa(clientPort)))
		}
		if !slices.Equal(hosts, want) {
			t.Errorf("%s: --nats-url hosts %q, want %q", name, hosts, want)
		}
		if r, _ := flagValue(args, "--replicas"); r != strconv.Itoa(deployReplicas) {
			t.Errorf("%s: --replicas %q, want %d", name, r, deployReplicas)
		}
		listen, _ := flagValue(args, "--http-listen")
		if _, port, err := net.SplitHostPort(listen); err != nil || port != strconv.Itoa(metricsPort) {
			t.Errorf("%s: --http-listen %q, want port %d", name, listen, metricsPort)
		}
	}

	// Prometheus scrapes every tally process and every node's exporter.
	promConfig := hostPath(c.Services[proms[0]], "/etc/prometheus/prometheus.yml")
	data, err := os.ReadFile(promConfig)
	if err != nil {
		t.Fatalf("prometheus config: %v", err)
	}
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &prom); err != nil {
		t.Fatalf("%s: %v", promConfig, err)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for _, name := range tallyServices {
		if want := net.JoinHostPort(name, strconv.Itoa(metricsPort)); !slices.Contains(targets, want) {
			t.Errorf("prometheus does not scrape %s (targets %q)", want, targets)
		}
	}
	monitored := map[string]bool{}
	for _, name := range exporters {
		if want := net.JoinHostPort(name, strconv.Itoa(exporterPort)); !slices.Contains(targets, want) {
			t.Errorf("prometheus does not scrape %s (targets %q)", want, targets)
		}
		args := c.Services[name].Command
		if u, err := url.Parse(args[len(args)-1]); err == nil && u.Port() == strconv.Itoa(monitorPort) {
			monitored[u.Hostname()] = true
		}
	}
	for _, n := range deployNodes {
		if !monitored[n] {
			t.Errorf("no exporter reads %s's monitoring port", n)
		}
	}
}

// TestDeployNATSConfigs checks what each shipped node configuration says.
func TestDeployNATSConfigs(t *testing.T) {
	wantMapping, err := conf.Parse(streams.Mapping(deployP))
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range deployNodes {
		t.Run(node, func(t *testing.T) {
			opts, err := server.ProcessConfigFile(deployConfig(node))
			if err != nil {
				t.Fatal(err)
			}
			if opts.ServerName != node || !opts.JetStream || !opts.SyncAlways || opts.StoreDir == "" ||
				opts.Port != clientPort || opts.HTTPPort != monitorPort || opts.Cluster.Port != routePort ||
				opts.MaxPayload != streams.MaxPayload || opts.Cluster.Name == "" {
				t.Errorf("name %q jetstream %v sync always %v store %q port %d monitor %d route %d max payload %d cluster %q",
					opts.ServerName, opts.JetStream, opts.SyncAlways, opts.StoreDir, opts.Port, opts.HTTPPort,
					opts.Cluster.Port, opts.MaxPayload, opts.Cluster.Name)
			}
			var routes []string
			for _, r := range opts.Routes {
				routes = append(routes, r.Host)
			}
			slices.Sort(routes)
			var want []string
			for _, n := range deployNodes {
				want = append(want, net.JoinHostPort(n, strconv.Itoa(routePort)))
			}
			if !slices.Equal(routes, want) {
				t.Errorf("routes %q, want %q", routes, want)
			}

			// The account's mapping is streams.Mapping(deployP).
			m, err := conf.ParseFile(deployConfig(node))
			if err != nil {
				t.Fatal(err)
			}
			account, _ := m["accounts"].(map[string]any)[deployAccount].(map[string]any)
			if diff := cmp.Diff(wantMapping["mappings"], account["mappings"]); diff != "" {
				t.Errorf("account %s mappings differ from streams.Mapping(%d) (-want +got):\n%s", deployAccount, deployP, diff)
			}
		})
	}
}

// deployCluster is the shipped configuration running as a real 3-node
// cluster on loopback.
type deployCluster struct {
	servers  []*server.Server
	password map[string]string
}

// startDeployCluster starts every shipped node configuration with its
// ports moved to free loopback ports, routes rewritten to match, and the
// store in a temporary directory; everything else is as shipped.
func startDeployCluster(t *testing.T) *deployCluster {
	t.Helper()
	ports := natstest.FreePorts(t, 2*len(deployNodes))
	routePorts := map[string]int{}
	for i, n := range deployNodes {
		routePorts[n] = ports[len(deployNodes)+i]
	}
	dc := &deployCluster{password: deployPasswords(t)}
	for i, node := range deployNodes {
		opts, err := server.ProcessConfigFile(deployConfig(node))
		if err != nil {
			t.Fatal(err)
		}
		opts.Host, opts.Port = "127.0.0.1", ports[i]
		opts.HTTPHost, opts.HTTPPort = "127.0.0.1", server.RANDOM_PORT
		opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", routePorts[node]
		opts.Routes = rewriteRoutes(t, opts.Routes, routePorts)
		opts.StoreDir = t.TempDir()
		opts.NoSigs, opts.NoLog = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s: not ready", node)
		}
		dc.servers = append(dc.servers, s)
	}
	natstest.CheckFor(t, testTimeout, pollInterval, func() error {
		leaders := 0
		for _, s := range dc.servers {
			if s.JetStreamIsLeader() {
				leaders++
			}
			if !s.JetStreamIsCurrent() {
				return fmt.Errorf("%s not current", s.Name())
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d meta leaders", leaders)
		}
		return nil
	})
	return dc
}

// rewriteRoutes points each route at the loopback port chosen for its node,
// keeping its scheme and credentials.
func rewriteRoutes(t *testing.T, routes []*url.URL, ports map[string]int) []*url.URL {
	t.Helper()
	out := make([]*url.URL, 0, len(routes))
	for _, r := range routes {
		port, ok := ports[r.Hostname()]
		if !ok {
			t.Fatalf("route %s: unknown node %q", r.Redacted(), r.Hostname())
		}
		u := *r
		u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		out = append(out, &u)
	}
	return out
}

// asyncErrors collects a connection's asynchronous errors: NATS reports
// permission violations that way.
type asyncErrors struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

// waitViolation waits for a permission violation that mentions subject.
func (a *asyncErrors) waitViolation(t *testing.T, subject string) {
	t.Helper()
	natstest.CheckFor(t, 5*time.Second, pollInterval, func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, err := range a.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return nil
			}
		}
		return fmt.Errorf("no permission violation for %q among %v", subject, a.errs)
	})
}

// connect logs in to node i as user over TCP, with inbox prefix inbox
// ("" for the default) and any extra options.
func (dc *deployCluster) connect(t *testing.T, i int, user, inbox string, extra ...nats.Option) (*nats.Conn, *asyncErrors) {
	t.Helper()
	errs := &asyncErrors{}
	opts := []nats.Option{nats.UserInfo(user, dc.password[user]), nats.ErrorHandler(errs.handler), nats.Name(user)}
	opts = append(opts, extra...)
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(dc.servers[i].ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// responder answers every partition request with the subject it arrived
// on, and remembers the subjects.
type responder struct {
	mu       sync.Mutex
	subjects []string
}

func (r *responder) handle(m *nats.Msg) {
	r.mu.Lock()
	r.subjects = append(r.subjects, m.Subject)
	r.mu.Unlock()
	_ = m.Respond([]byte(m.Subject))
}

func (r *responder) saw(substr string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.subjects, func(s string) bool { return strings.Contains(s, substr) })
}

// request sends a request, retrying while the responder's interest is
// still propagating over the routes, and returns the reply's body.
func request(t *testing.T, nc *nats.Conn, subject string) string {
	t.Helper()
	var reply *nats.Msg
	natstest.CheckFor(t, 10*time.Second, pollInterval, func() error {
		var err error
		reply, err = nc.Request(subject, nil, time.Second)
		return err
	})
	return string(reply.Data)
}

// TestDeployCluster runs the shipped NATS configuration as a real cluster
// and checks the mapping, durability settings and every user's permissions.
func TestDeployCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: skipped in -short")
	}
	dc := startDeployCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()

	for _, s := range dc.servers {
		if !s.JetStreamConfig().SyncAlways {
			t.Errorf("%s: JetStream does not sync always", s.Name())
		}
	}

	// The tally service, on node n2, answers every partition's requests.
	service, _ := dc.connect(t, 1, "tally", "")
	resp := &responder{}
	if _, err := service.Subscribe("tally.v1.p.*.>", resp.handle); err != nil {
		t.Fatal(err)
	}
	if err := service.Flush(); err != nil {
		t.Fatal(err)
	}

	// The tally service creates the ledger, R3, and appends an event.
	js, err := jetstream.New(service)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(ctx, js, streams.Config{Partitions: deployP, RequirePartitions: true, Replicas: deployReplicas}); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	event := streams.EventSubject(0, "tenant:acme", "budget.set")
	if _, err := js.Publish(ctx, event, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	// Every node maps requests as streams.Mapping(deployP).
	for i := range dc.servers {
		nc, _ := dc.connect(t, i, "tally", "")
		if err := streams.VerifyMapping(ctx, nc, deployP); err != nil {
			t.Errorf("node %s: %v", dc.servers[i].Name(), err)
		}
	}

	t.Run("agent reaches its own tenant through the mapping", func(t *testing.T) {
		agent, _ := dc.connect(t, 0, "agent-acme", "_INBOX_acme")
		const root = "tenant:acme"
		want := streams.PartitionSubject(streams.Partition(root, deployP), root, "balance")
		if got := request(t, agent, streams.RequestSubject(root, "balance")); got != want {
			t.Errorf("request landed on %q, want %q", got, want)
		}
		if got := request(t, agent, want); got != want {
			t.Errorf("mapped-subject request landed on %q, want %q", got, want)
		}
	})

	t.Run("agent cannot reach another tenant", func(t *testing.T) {
		agent, errs := dc.connect(t, 0, "agent-acme", "_INBOX_acme")
		_, err := agent.Request(streams.RequestSubject("tenant:globex", "balance"), nil, 500*time.Millisecond)
		if err == nil {
			t.Fatal("request for tenant:globex was answered")
		}
		errs.waitViolation(t, "tenant:globex.balance")
		if err := agent.Publish(streams.PartitionSubject(0, "tenant:globex", "reserve"), nil); err != nil {
			t.Fatal(err)
		}
		errs.waitViolation(t, streams.PartitionSubject(0, "tenant:globex", "reserve"))
		if resp.saw("tenant:globex") {
			t.Error("the service received a tenant:globex request from agent-acme")
		}
	})

	t.Run("agent cannot read other inboxes or use JetStream", func(t *testing.T) {
		agent, errs := dc.connect(t, 0, "agent-acme", "_INBOX_acme")
		for _, subject := range []string{"_INBOX_globex.>", "_INBOX.>", "tally.v1.p.*.>", "$KV.tally_balances.>"} {
			if _, err := agent.SubscribeSync(subject); err != nil {
				t.Fatal(err)
			}
			errs.waitViolation(t, subject)
		}
		for _, subject := range []string{"$JS.API.INFO", "$KV.tally_balances.x", "$O.tally_snapshots.x"} {
			if err := agent.Publish(subject, nil); err != nil {
				t.Fatal(err)
			}
			errs.waitViolation(t, subject)
		}
	})

	t.Run("admin manages budgets of every tenant, cannot reserve", func(t *testing.T) {
		admin, errs := dc.connect(t, 2, "admin", "_INBOX_admin")
		for _, root := range []string{"tenant:acme", "tenant:globex"} {
			want := streams.PartitionSubject(streams.Partition(root, deployP), root, "budget-set")
			if got := request(t, admin, streams.RequestSubject(root, "budget-set")); got != want {
				t.Errorf("budget-set landed on %q, want %q", got, want)
			}
		}
		if err := admin.Publish(streams.RequestSubject("tenant:acme", "reserve"), nil); err != nil {
			t.Fatal(err)
		}
		errs.waitViolation(t, "tenant:acme.reserve")
	})

	t.Run("auditor reads the ledger and changes nothing", func(t *testing.T) {
		auditor, errs := dc.connect(t, 0, "auditor", "_INBOX_auditor")
		ajs, err := jetstream.New(auditor)
		if err != nil {
			t.Fatal(err)
		}
		layout, err := streams.Open(ctx, ajs)
		if err != nil || layout.Partitions != deployP {
			t.Fatalf("auditor Open = %+v, %v", layout, err)
		}
		stream, err := ajs.Stream(ctx, streams.StreamName(0))
		if err != nil {
			t.Fatalf("auditor stream info: %v", err)
		}
		if m, err := stream.GetMsg(ctx, 1); err != nil || m.Subject != event {
			t.Errorf("auditor GetMsg = %v, %v", m, err)
		}
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatalf("auditor ordered consumer: %v", err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m := range batch.Messages() {
			got = append(got, m.Subject())
		}
		if batch.Error() != nil || !slices.Equal(got, []string{event}) {
			t.Errorf("auditor consumed %q (%v), want %q", got, batch.Error(), event)
		}

		// Nothing that writes is allowed.
		if err := auditor.Publish(streams.PartitionSubject(0, "tenant:acme", "reserve"), nil); err != nil {
			t.Fatal(err)
		}
		errs.waitViolation(t, streams.PartitionSubject(0, "tenant:acme", "reserve"))
		// A refused API request is never answered: wait briefly for each.
		short := func() context.Context {
			c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			t.Cleanup(cancel)
			return c
		}
		if _, err := ajs.CreateStream(short(), jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
			t.Error("auditor created a stream")
		}
		errs.waitViolation(t, "$JS.API.STREAM.CREATE.EVIL")
		if err := ajs.DeleteStream(short(), streams.StreamName(0)); err == nil {
			t.Error("auditor deleted a stream")
		}
		errs.waitViolation(t, "$JS.API.STREAM.DELETE."+streams.StreamName(0))
		if _, err := js.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("stream EVIL: %v, want not found", err)
		}
		if _, err := js.Stream(ctx, streams.StreamName(0)); err != nil {
			t.Errorf("stream %s after the auditor's delete: %v", streams.StreamName(0), err)
		}
	})

	t.Run("a push consumer cannot deliver into the JetStream API", func(t *testing.T) {
		// JetStream does not check a push consumer's deliver subject against
		// its creator's permissions. Pin that delivering events onto the
		// delete API subject deletes nothing.
		target := "$JS.API.STREAM.DELETE." + streams.StreamName(0)
		watch, err := service.SubscribeSync(target) // the tally user sees the delivery
		if err != nil {
			t.Fatal(err)
		}
		if err := service.Flush(); err != nil {
			t.Fatal(err)
		}
		auditor, _ := dc.connect(t, 0, "auditor", "_INBOX_auditor")
		req, err := json.Marshal(map[string]any{
			"stream_name": streams.StreamName(0),
			"config":      map[string]any{"deliver_subject": target, "ack_policy": "none", "deliver_policy": "all"},
		})
		if err != nil {
			t.Fatal(err)
		}
		reply, err := auditor.Request("$JS.API.CONSUMER.CREATE."+streams.StreamName(0), req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var created struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &created); err != nil {
			t.Fatal(err)
		}
		if created.Error != nil {
			t.Logf("consumer refused: %s", created.Error.Description)
			return
		}
		if _, err := watch.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("no delivery to %s: %v", target, err)
		}
		// A later metadata operation goes through the meta leader after any
		// delete the delivery could have caused.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "AFTER", Subjects: []string{"after.>"}, Replicas: deployReplicas}); err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, streams.StreamName(0))
		if err != nil {
			t.Fatalf("stream %s after a delivery to %s: %v", streams.StreamName(0), target, err)
		}
		if n := s.CachedInfo().State.Msgs; n != 1 {
			t.Errorf("stream %s holds %d events, want 1", streams.StreamName(0), n)
		}
	})
}
