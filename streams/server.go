package streams

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Defaults and limits of the embedded server.
const (
	// DefaultServerName is the server_name when ServerConfig.Name is empty.
	DefaultServerName = "tally"
	// DefaultListen is the client address when ServerConfig.Listen is empty.
	DefaultListen = "127.0.0.1:4222"
	// DefaultReadyTimeout bounds how long StartServer waits for the server.
	DefaultReadyTimeout = 10 * time.Second
	// MaxPayload is the server's max_payload: the largest message NATS
	// accepts. It is well above the enforcer's 64 KiB request limit so that
	// an oversize request reaches the enforcer and is answered TOO_LARGE
	// (with a clear message) instead of being dropped by the client
	// library; atomic batches need each message within it.
	MaxPayload = 4 << 20
	// randomPort asks nats-server for any free port.
	randomPort = server.RANDOM_PORT
)

// ServerConfig configures the embedded nats-server of `tally serve` (and of
// tests). Zero fields take the defaults named above.
type ServerConfig struct {
	// Name is the server_name (no white space). Default DefaultServerName.
	Name string
	// DataDir is where JetStream keeps its file store. Required.
	DataDir string
	// Listen is the client address host:port; port 0 or -1 picks a free
	// port (read it back with (*server.Server).ClientURL). Default
	// DefaultListen.
	Listen string
	// Partitions is P for the request mapping. It must equal the ledger's P
	// (see Ensure and ApplyMapping). Default DefaultPartitions.
	Partitions int
	// SyncAlways makes JetStream fsync every write before acknowledging it
	// (`--sync always`): acknowledged spend survives power loss. false
	// keeps the server's default interval sync (2 minutes): writes survive
	// a crash of the process but not of the machine.
	SyncAlways bool
	// Logger receives the server's log; nil silences it.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections.
	// Default DefaultReadyTimeout.
	ReadyTimeout time.Duration

	// ConfigFile is a nats-server configuration file whose accounts,
	// users, permissions, authorization and TLS the server takes. What
	// tally owns stays tally's: the client address (Listen), JetStream's
	// store and sync, max_payload, the server name and the request
	// mapping. A cluster, gateway, operator (JWT), token or single-user
	// authorization in it is refused. Empty: a server without users.
	ConfigFile string
	// Account names the account of ConfigFile that holds the ledger: its
	// streams, the request mapping, and ServiceUser. Default: the only
	// account ConfigFile defines, PreferredAccount among several, the
	// global account without any. It must have JetStream enabled.
	Account string
	// ServiceUser and ServicePassword are the user tally itself connects
	// as, added to Account when ConfigFile has users. Required with
	// ConfigFile.
	ServiceUser, ServicePassword string
}

// withDefaults fills zero fields with their defaults.
func (c ServerConfig) withDefaults() ServerConfig {
	if c.Name == "" {
		c.Name = DefaultServerName
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	return c
}

// Validate reports the first nonsensical field, after defaults. It does
// not read ConfigFile: LedgerAccount does, and so does StartServer.
func (c ServerConfig) Validate() error {
	c = c.withDefaults()
	if strings.ContainsFunc(c.Name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("server name %q: contains white space or control characters", c.Name)
	}
	if c.DataDir == "" {
		return errors.New("data dir: required")
	}
	if _, _, err := splitListen(c.Listen); err != nil {
		return err
	}
	if err := validatePartitions(c.Partitions); err != nil {
		return err
	}
	if c.ReadyTimeout < 0 {
		return fmt.Errorf("ready timeout %s: negative", c.ReadyTimeout)
	}
	if c.ConfigFile == "" {
		if c.Account != "" || c.ServiceUser != "" || c.ServicePassword != "" {
			return errors.New("account and service user: only with a configuration file")
		}
		return nil
	}
	if c.ServiceUser == "" || c.ServicePassword == "" {
		return errors.New("configuration file: a service user and password are required")
	}
	return nil
}

// LedgerAccount validates c, reads its configuration file, and returns
// the name of the account that holds the ledger on the server StartServer
// starts with c ("" for the global account) and whether the server has
// users (without, anyone who reaches it may do anything). A file
// StartServer would refuse is an error here, before anything starts.
func (c ServerConfig) LedgerAccount() (account string, users bool, err error) {
	if err := c.Validate(); err != nil || c.ConfigFile == "" {
		return "", false, err
	}
	opts := &server.Options{}
	account, err = loadConfigFile(opts, c.withDefaults())
	return account, len(opts.Users) > 0 || len(opts.Nkeys) > 0, err
}

// splitListen parses host:port; port 0 and -1 both mean "any free port".
func splitListen(listen string) (string, int, error) {
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < randomPort || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port must be -1..65535", listen)
	}
	if port == 0 {
		port = randomPort // nats-server reads 0 as "the default port 4222"
	}
	return host, port, nil
}

// StartServer starts nats-server in-process with JetStream (file store in
// cfg.DataDir), the request mapping for cfg.Partitions partitions,
// max_payload MaxPayload and no signal handlers, and returns it once it
// accepts connections. The caller stops it with Shutdown and
// WaitForShutdown, after draining its own connections.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	cfg = cfg.withDefaults()
	opts, account, err := serverOptions(cfg, cfg.Partitions)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	log := &serverLog{slog: cfg.Logger}
	debug := cfg.Logger != nil && cfg.Logger.Enabled(context.Background(), slog.LevelDebug)
	s.SetLoggerV2(log, debug, false, false)
	s.Start()
	if !s.ReadyForConnections(cfg.ReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded server on %s: not ready after %s%s", cfg.Listen, cfg.ReadyTimeout, log.lastError())
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded server: JetStream did not start (store %s)%s", cfg.DataDir, log.lastError())
	}
	if err := checkLedgerAccount(s, account); cfg.ConfigFile != "" && err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded server: %s: %w", cfg.ConfigFile, err)
	}
	return s, nil
}

// serverOptions are the options of the embedded server cfg describes,
// with the request mapping for p partitions in the ledger's account, and
// that account's name ("" the global account).
func serverOptions(cfg ServerConfig, p int) (*server.Options, string, error) {
	host, port, err := splitListen(cfg.Listen)
	if err != nil {
		return nil, "", err
	}
	opts := &server.Options{}
	account := ""
	if cfg.ConfigFile != "" {
		if account, err = loadConfigFile(opts, cfg); err != nil {
			return nil, "", err
		}
		if err := addMapping(opts, account, p); err != nil {
			return nil, "", err
		}
	} else if err := opts.ProcessConfigString(Mapping(p)); err != nil {
		// The mapping goes through the configuration parser, exactly as
		// the shipped cluster configuration does.
		return nil, "", fmt.Errorf("request mapping: %w", err)
	}
	opts.ServerName = cfg.Name
	opts.Host = host
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = cfg.DataDir
	opts.SyncAlways = cfg.SyncAlways
	opts.MaxPayload = MaxPayload
	opts.NoSigs = true
	opts.NoLog = cfg.Logger == nil
	return opts, account, nil
}

// ReloadConfig reads cfg.ConfigFile again into the running server s, as
// nats-server does on SIGHUP: users, permissions and TLS certificates
// change, users no longer in it are disconnected. What tally owns stays as
// cfg says, the service user included (give the password s started with),
// and requests stay mapped for the ledger's p partitions, without a gap.
// A file that cannot be loaded changes nothing.
func ReloadConfig(s *server.Server, cfg ServerConfig, p int) error {
	if cfg.ConfigFile == "" {
		return errors.New("reload: the embedded server has no configuration file")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := validatePartitions(p); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	opts, account, err := serverOptions(cfg.withDefaults(), p)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := s.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload %s: %w", cfg.ConfigFile, err)
	}
	return checkLedgerAccount(s, account)
}

// ApplyMapping replaces the request mapping of a running server's account
// (named; "" the global account) with the one for p partitions. `tally
// serve` uses it when the data dir holds a ledger whose P differs from the
// one the server started with.
func ApplyMapping(s *server.Server, account string, p int) error {
	return MapPartitions(s, account, Ledger, p)
}

// MapPartitions adds to a running server's account (named; "" the global
// account) the request mapping of family f for p partitions, replacing
// the family's mapping for another P; ApplyMapping is Ledger's. The
// bench's contract floor routes its requests through it, so that they
// cost the server what tally's do. UnmapPartitions removes it.
func MapPartitions(s *server.Server, account string, f Family, p int) error {
	if err := validatePartitions(p); err != nil {
		return err
	}
	acc, err := accountOf(s, account)
	if err != nil {
		return fmt.Errorf("map partitions: %w", err)
	}
	if err := acc.AddMapping(f.mappingSource(), f.mappingDestination(p)); err != nil {
		return fmt.Errorf("map %s for %d partitions: %w", f.mappingSource(), p, err)
	}
	return nil
}

// UnmapPartitions removes what MapPartitions added.
func UnmapPartitions(s *server.Server, account string, f Family) error {
	acc, err := accountOf(s, account)
	if err != nil {
		return fmt.Errorf("unmap partitions: %w", err)
	}
	acc.RemoveMapping(f.mappingSource())
	return nil
}

// serverLog adapts nats-server's logger to slog and remembers the last error,
// so that a server that fails to start explains why. Its Fatalf does not
// exit: StartServer reports the failure.
type serverLog struct {
	slog *slog.Logger // nil: discard

	mu   sync.Mutex
	last string // last Errorf or Fatalf message
}

// Log attribute keys.
const logKeyComponent = "component"

func (l *serverLog) log(level slog.Level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	if level >= slog.LevelError {
		l.mu.Lock()
		l.last = msg
		l.mu.Unlock()
	}
	if l.slog != nil {
		l.slog.Log(context.Background(), level, msg, logKeyComponent, "nats-server")
	}
}

func (l *serverLog) lastError() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == "" {
		return ""
	}
	return ": " + l.last
}

func (l *serverLog) Noticef(format string, v ...any) { l.log(slog.LevelInfo, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log(slog.LevelWarn, format, v) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.log(slog.LevelError, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log(slog.LevelDebug, format, v) }
func (l *serverLog) Tracef(format string, v ...any)  { l.log(slog.LevelDebug, format, v) }
