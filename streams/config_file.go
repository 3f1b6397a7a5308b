package streams

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// PreferredAccount is the account that holds the ledger when a server
// configuration defines several and none is named: the account of the
// shipped deploy/nats/accounts.conf.
const PreferredAccount = "TALLY"

// loadConfigFile reads cfg.ConfigFile into opts: the users, accounts,
// authorization and TLS of the embedded server. It refuses what the
// embedded server cannot be (a cluster or gateway member, an operator-mode
// server) and authorization that cannot take tally's own user beside it (a
// token, a single user), adds that user (cfg.ServiceUser) to the ledger's
// account when the configuration has users, and returns the name of that
// account ("" for the global account).
func loadConfigFile(opts *server.Options, cfg ServerConfig) (string, error) {
	if err := opts.ProcessConfigFile(cfg.ConfigFile); err != nil {
		if strings.Contains(err.Error(), cfg.ConfigFile) {
			return "", err
		}
		return "", fmt.Errorf("%s: %w", cfg.ConfigFile, err)
	}
	where := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", cfg.ConfigFile, fmt.Sprintf(format, args...))
	}
	switch {
	case opts.Cluster.Port != 0 || len(opts.Routes) > 0:
		return "", where("cluster: the embedded server is one server; a cluster runs nats-server (deploy/nats), its enforcers join it by URL")
	case opts.Gateway.Port != 0:
		return "", where("gateway: the embedded server is one server, not a super-cluster member")
	case len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0:
		return "", where("operator (JWT accounts): not for the embedded server; run nats-server in operator mode and join it by URL with a credentials file")
	case opts.Authorization != "":
		return "", where("authorization with a token: the embedded server needs a users list (users or nkeys) that tally's own user can join")
	case opts.Username != "":
		return "", where("authorization with a single user: give it as a users list, which tally's own user can join")
	case opts.AuthCallout != nil:
		return "", where("auth_callout: not for the embedded server")
	}
	acc, err := ledgerAccount(opts, cfg.Account)
	if err != nil {
		return "", where("%v", err)
	}
	if len(opts.Users) > 0 || len(opts.Nkeys) > 0 {
		if slices.ContainsFunc(opts.Users, func(u *server.User) bool { return u.Username == cfg.ServiceUser }) {
			return "", where("user %q: the name of tally's own user", cfg.ServiceUser)
		}
		opts.Users = append(opts.Users, &server.User{Username: cfg.ServiceUser, Password: cfg.ServicePassword, Account: acc})
	}
	if acc == nil {
		return "", nil
	}
	return acc.Name, nil
}

// ledgerAccount is the account of opts named name; without a name, the
// only account the configuration defines (PreferredAccount among several),
// or nil, the global account, when it defines none.
func ledgerAccount(opts *server.Options, name string) (*server.Account, error) {
	var accounts []*server.Account
	for _, a := range opts.Accounts {
		if a.Name != opts.SystemAccount && a.Name != server.DEFAULT_SYSTEM_ACCOUNT && a.Name != server.DEFAULT_GLOBAL_ACCOUNT {
			accounts = append(accounts, a)
		}
	}
	// The parser keeps accounts in map order: sort them for stable errors.
	slices.SortFunc(accounts, func(a, b *server.Account) int { return strings.Compare(a.Name, b.Name) })
	names := make([]string, len(accounts))
	for i, a := range accounts {
		names[i] = a.Name
	}
	if name != "" {
		if i := slices.Index(names, name); i >= 0 {
			return accounts[i], nil
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("account %q: the configuration defines no accounts", name)
		}
		return nil, fmt.Errorf("account %q: not defined (accounts: %s)", name, strings.Join(names, ", "))
	}
	switch {
	case len(accounts) == 0:
		return nil, nil
	case len(accounts) == 1:
		return accounts[0], nil
	}
	if i := slices.Index(names, PreferredAccount); i >= 0 {
		return accounts[i], nil
	}
	return nil, fmt.Errorf("accounts %s: name the one that holds the ledger", strings.Join(names, ", "))
}

// accountOf is the running server's account named name, its global
// account for "".
func accountOf(s *server.Server, name string) (*server.Account, error) {
	if name != "" {
		acc, err := s.LookupAccount(name)
		if err != nil {
			return nil, fmt.Errorf("account %q: %w", name, err)
		}
		return acc, nil
	}
	if acc := s.GlobalAccount(); acc != nil {
		return acc, nil
	}
	return nil, errors.New("the server has no global account")
}

// checkLedgerAccount checks, on the started server, that the ledger's
// account (name; "" the global account) has JetStream.
func checkLedgerAccount(s *server.Server, name string) error {
	acc, err := accountOf(s, name)
	if err != nil {
		return err
	}
	if !acc.JetStreamEnabled() {
		return fmt.Errorf("account %q has no JetStream: add `jetstream: enabled` to it", acc.Name)
	}
	return nil
}

// addMapping adds the request mapping for p partitions to the ledger's
// account in opts (the global account when account is ""), before the
// server starts or reloads them: requests are never without it.
func addMapping(opts *server.Options, account string, p int) error {
	name := account
	if name == "" {
		name = server.DEFAULT_GLOBAL_ACCOUNT
	}
	i := slices.IndexFunc(opts.Accounts, func(a *server.Account) bool { return a.Name == name })
	if i < 0 {
		// Only the global account can be missing: it is created on
		// start, and configured from opts if it is there.
		opts.Accounts = append(opts.Accounts, server.NewAccount(name))
		i = len(opts.Accounts) - 1
	}
	if err := opts.Accounts[i].AddMapping(MappingSource, MappingDestination(p)); err != nil {
		return fmt.Errorf("request mapping: %w", err)
	}
	return nil
}
