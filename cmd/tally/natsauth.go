package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// natsAuth are the flags that secure a connection to NATS beyond what a
// URL carries (user and password, or a token): a credentials file (JWT
// and NKey seed, as nsc and Synadia Cloud issue them) or an NKey seed file,
// and TLS with a private CA and a client certificate; and the reply inbox
// prefix a user restricted to its own inboxes needs. Every command that
// connects to a NATS server by URL registers them.
type natsAuth struct {
	creds   string
	nkey    string
	tlsCA   string
	tlsCert string
	tlsKey  string
	inbox   string
}

func (a *natsAuth) register(fs *flag.FlagSet) {
	fs.StringVar(&a.creds, "nats-creds", "", "NATS user credentials file (user JWT and NKey seed, as nsc or Synadia Cloud issue them); read again at every reconnect")
	fs.StringVar(&a.nkey, "nats-nkey", "", "file holding the NKey seed (SU…) of a NATS user the servers know by its public key")
	fs.StringVar(&a.tlsCA, "nats-tls-ca", "", "PEM file of the CA certificate(s) that signed the NATS servers' certificates (empty: the system's roots); implies TLS; read again at every reconnect")
	fs.StringVar(&a.tlsCert, "nats-tls-cert", "", "PEM client certificate for NATS servers that verify clients (with --nats-tls-key); implies TLS; read again at every reconnect, so a renewed certificate applies without a restart")
	fs.StringVar(&a.tlsKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
	fs.StringVar(&a.inbox, "inbox-prefix", "", "prefix of the reply inboxes, e.g. _INBOX_acme: a NATS user allowed to subscribe only to its own inboxes gets no answer without it (empty: the NATS default, _INBOX)")
}

// natsAuthFlags are the names of the flags that secure the connection, in
// the order of natsAuth.values (--inbox-prefix only shapes it).
var natsAuthFlags = []string{"nats-creds", "nats-nkey", "nats-tls-ca", "nats-tls-cert", "nats-tls-key"}

func (a natsAuth) values() []string { return []string{a.creds, a.nkey, a.tlsCA, a.tlsCert, a.tlsKey} }

// given reports whether any of the flags is set, and names the first.
func (a natsAuth) given() (string, bool) {
	for i, v := range a.values() {
		if v != "" {
			return natsAuthFlags[i], true
		}
	}
	return "", false
}

// options checks the flags and the files they name, and returns the
// connection options they make. Its errors name the flag and the file, and
// are usage errors: nothing was tried yet.
func (a natsAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.creds != "" && a.nkey != "" {
		return nil, errors.New("--nats-creds and --nats-nkey exclude each other: a NATS user authenticates one way")
	}
	if a.creds != "" {
		data, err := os.ReadFile(a.creds)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		// ParseDecoratedJWT returns the whole file when it finds no
		// decorated JWT: decoding the claims is the check.
		token, err := nkeys.ParseDecoratedJWT(data)
		if err == nil {
			_, err = jwt.DecodeUserClaims(token)
		}
		if err != nil {
			return nil, fmt.Errorf("--nats-creds %s: no user JWT in it: %v", a.creds, err)
		}
		kp, err := nkeys.ParseDecoratedUserNKey(data)
		if err != nil {
			return nil, fmt.Errorf("--nats-creds %s: no user NKey seed in it: %v", a.creds, err)
		}
		kp.Wipe()
		// The file, not its contents: nats.go reads it again at each
		// (re)connect, so rotated credentials take effect without a restart.
		opts = append(opts, nats.UserCredentials(a.creds))
	}
	if a.nkey != "" {
		opt, err := nats.NkeyOptionFromSeed(a.nkey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %v", a.nkey, err)
		}
		opts = append(opts, opt)
	}
	if (a.tlsCert == "") != (a.tlsKey == "") {
		return nil, errors.New("--nats-tls-cert and --nats-tls-key go together: the certificate and its private key")
	}
	if a.tlsCA != "" {
		pem, err := os.ReadFile(a.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--nats-tls-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--nats-tls-ca %s: no PEM certificate in it", a.tlsCA)
		}
		opts = append(opts, nats.RootCAs(a.tlsCA))
	}
	if a.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(a.tlsCert, a.tlsKey); err != nil {
			return nil, fmt.Errorf("--nats-tls-cert %s, --nats-tls-key %s: %v", a.tlsCert, a.tlsKey, err)
		}
		opts = append(opts, nats.ClientCert(a.tlsCert, a.tlsKey))
	}
	if a.inbox != "" {
		if strings.ContainsAny(a.inbox, "*> \t") || strings.HasSuffix(a.inbox, ".") {
			return nil, fmt.Errorf("--inbox-prefix %q: want a subject prefix without wildcards, e.g. _INBOX_acme", a.inbox)
		}
		opts = append(opts, nats.CustomInboxPrefix(a.inbox))
	}
	return opts, nil
}

// connectFix is the fix to print when connecting to NATS failed with err
// because the servers refused the user or the TLS handshake failed: the
// flags to check. It is "" for other failures.
func connectFix(err error) string {
	var verify *tls.CertificateVerificationError
	switch {
	case errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		strings.Contains(strings.ToLower(err.Error()), "authorization violation"):
		return "check the credentials: --nats-creds, --nats-nkey, or the user and password in --nats-url"
	// An alert the server sent ("remote error: tls: certificate
	// required") has no exported type: its text says it.
	case errors.Is(err, nats.ErrTLS) || errors.As(err, &verify) || strings.Contains(err.Error(), "tls: ") ||
		errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted):
		return "check TLS: --nats-tls-ca (the CA of the servers' certificates), --nats-tls-cert and --nats-tls-key (a client certificate), a tls:// URL"
	}
	return ""
}

// fixPermissions is the fix printed with a request the servers refused.
const fixPermissions = "the NATS user of --nats-url may not send this request or receive its answer: " +
	"check its permissions (deploy/nats/accounts.conf); a user restricted to its own inboxes needs --inbox-prefix"

// refusal returns the permissions violation the servers last reported on
// nc, or nil. A request they do not let through, or whose answer they do
// not deliver, fails as a timeout: this is why.
func refusal(nc *nats.Conn) error {
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		return err
	}
	return nil
}

// quietAsync is the asynchronous error handler of the commands: none.
// nats.go's default prints every asynchronous error (a permissions
// violation, an authorization error while reconnecting) in its own format,
// from its own goroutine, beside the command's report of what made it
// fail; the command reads a refusal back from the connection (refusal).
func quietAsync() nats.Option {
	return nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
}
