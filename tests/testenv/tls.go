package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// CA is a certificate authority made up for one test: it signs the
// certificates of the servers the test starts and of its clients.
type CA struct {
	// CertFile is the CA certificate, PEM: what clients trust.
	CertFile string
	dir      string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	serial   int64
}

// NewCA makes a CA whose files live in a temporary directory removed when
// the test ends.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	ca := &CA{dir: tb.TempDir(), serial: 1}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(ca.serial),
		Subject:               pkix.Name{CommonName: "allocation test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("CA certificate: %v", err)
	}
	ca.cert, err = x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("CA certificate: %v", err)
	}
	ca.key = key
	ca.CertFile = filepath.Join(ca.dir, "ca.crt")
	writePEM(tb, ca.CertFile, "CERTIFICATE", der)
	return ca
}

// Issue signs a certificate for name into dir (the CA's own directory when
// empty) and returns its certificate and key files. A server certificate
// is valid for localhost and 127.0.0.1; a client one names the client.
func (ca *CA) Issue(tb testing.TB, dir, name string, server bool) (certFile, keyFile string) {
	tb.Helper()
	if dir == "" {
		dir = ca.dir
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("key of %s: %v", name, err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("certificate of %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("key of %s: %v", name, err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(tb, certFile, "CERTIFICATE", der)
	writePEM(tb, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(tb testing.TB, file, kind string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		tb.Fatalf("write %s: %v", file, err)
	}
}

// TLSRedis is a private redis-server that speaks TLS only and knows one
// ACL user besides a disabled default one.
type TLSRedis struct {
	// URL is rediss://user:password@127.0.0.1:port/0.
	URL string
	// ClientCertFile and ClientKeyFile are a client certificate the
	// server accepts; it refuses clients without one.
	ClientCertFile, ClientKeyFile string
}

// StartTLSRedis starts redis-server on a free loopback port with TLS,
// client certificates required, and the ACL user username with password;
// it is stopped and its files removed when the test ends. It fails the test
// when redis-server is missing or cannot start.
func StartTLSRedis(tb testing.TB, ca *CA, username, password string) TLSRedis {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server is not installed (%v): `make services` installs it on Debian (apt-get install redis-server)", err)
	}
	dir := tb.TempDir()
	certFile, keyFile := ca.Issue(tb, dir, "redis", true)
	clientCert, clientKey := ca.Issue(tb, dir, "allocation", false)
	port := freePort(tb)
	conf := strings.Join([]string{
		"bind 127.0.0.1",
		"port 0",
		"tls-port " + strconv.Itoa(port),
		"tls-cert-file " + certFile,
		"tls-key-file " + keyFile,
		"tls-ca-cert-file " + ca.CertFile,
		"tls-auth-clients yes",
		`save ""`,
		"appendonly no",
		"dir " + dir,
		"user default off",
		"user " + username + " on >" + password + " ~* &* +@all",
	}, "\n") + "\n"
	confFile := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		tb.Fatalf("write %s: %v", confFile, err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, confFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	stop, exited := startProcess(tb, cmd, syscall.SIGTERM, &out)
	tb.Cleanup(stop)

	r := TLSRedis{
		URL:            fmt.Sprintf("rediss://%s:%s@127.0.0.1:%d/0", url.PathEscape(username), url.PathEscape(password), port),
		ClientCertFile: clientCert,
		ClientKeyFile:  clientKey,
	}
	// Ready when a TLS client with the user's password gets PONG.
	opts, err := redis.ParseURL(r.URL)
	if err != nil {
		tb.Fatalf("parse %s: %v", r.URL, err)
	}
	opts.TLSConfig.RootCAs = ca.pool()
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		tb.Fatalf("client certificate: %v", err)
	}
	opts.TLSConfig.Certificates = []tls.Certificate{pair}
	c := redis.NewClient(opts)
	defer c.Close()
	Eventually(tb, 20*time.Second, func() error {
		select {
		case <-exited:
			tb.Fatalf("redis-server exited:\n%s", out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("TLS redis-server on port %d: %w\n%s", port, err, out.String())
		}
		return nil
	})
	return r
}

// StartTLSPostgres initialises a private PostgreSQL cluster that accepts
// TLS connections from loopback only, with password (SCRAM) authentication
// of the user postgres, creates the database allocation, and starts it on a
// free port; it is stopped and its files removed when the test ends. It
// returns the URL of that database with sslmode=verify-full and the CA as
// sslrootcert. As root, the server runs as the user postgres, since
// PostgreSQL refuses to run as root.
func StartTLSPostgres(tb testing.TB, ca *CA, password string) string {
	tb.Helper()
	initdb, postgresBin := postgresBinaries(tb)
	dir, err := os.MkdirTemp("", "allocation-pgtls-")
	if err != nil {
		tb.Fatalf("temp dir: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	cred := postgresCredential(tb)
	data := filepath.Join(dir, "data")
	certFile, keyFile := ca.Issue(tb, dir, "postgres", true)
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		tb.Fatalf("write %s: %v", pwFile, err)
	}
	if cred != nil {
		for _, f := range []string{dir, certFile, keyFile, pwFile} {
			if err := os.Chown(f, int(cred.Uid), int(cred.Gid)); err != nil {
				tb.Fatalf("chown %s to postgres: %v", f, err)
			}
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	if out, err := run(initdb, "-D", data, "-U", "postgres", "--pwfile", pwFile, "--auth-local", "trust",
		"--auth-host", "scram-sha-256", "-N").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	// TLS or nothing, and a password over it.
	hba := "local all all trust\n" +
		"hostssl all all 127.0.0.1/32 scram-sha-256\n" +
		"hostnossl all all 0.0.0.0/0 reject\n"
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		tb.Fatalf("write pg_hba.conf: %v", err)
	}
	port := freePort(tb)
	var out syncBuffer
	cmd := run(postgresBin, "-D", data,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(port),
		"-c", "unix_socket_directories="+dir,
		"-c", "ssl=on",
		"-c", "ssl_cert_file="+certFile,
		"-c", "ssl_key_file="+keyFile,
		"-c", "fsync=off",
		"-c", "max_connections=60",
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	// SIGINT: the fast shutdown, which does not wait for clients.
	stop, exited := startProcess(tb, cmd, syscall.SIGINT, &out)
	tb.Cleanup(stop)

	admin := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=verify-full&sslrootcert=%s",
		url.QueryEscape(password), port, url.QueryEscape(ca.CertFile))
	db, err := sql.Open("postgres", admin)
	if err != nil {
		tb.Fatalf("open the TLS PostgreSQL: %v", err)
	}
	defer db.Close()
	Eventually(tb, 30*time.Second, func() error {
		select {
		case <-exited:
			tb.Fatalf("postgres exited:\n%s", out.String())
		default:
		}
		_, err := db.Exec("CREATE DATABASE allocation")
		return err
	})
	return strings.Replace(admin, "/postgres?", "/allocation?", 1)
}

// postgresBinaries finds initdb and postgres: on the PATH, or in the
// newest /usr/lib/postgresql/*/bin, where Debian puts them.
func postgresBinaries(tb testing.TB) (initdb, postgres string) {
	tb.Helper()
	if i, err := exec.LookPath("initdb"); err == nil {
		if p, err := exec.LookPath("postgres"); err == nil {
			return i, p
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if fileExists(i) && fileExists(p) {
			return i, p
		}
	}
	tb.Fatalf("initdb and postgres not found on the PATH or in /usr/lib/postgresql/*/bin: `make services` installs PostgreSQL on Debian (apt-get install postgresql)")
	return "", ""
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil
}

// postgresCredential is the user postgres when the test runs as root, and
// nil (run as ourselves) otherwise.
func postgresCredential(tb testing.TB) *syscall.Credential {
	tb.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		tb.Fatalf("running as root, PostgreSQL needs another user to run as: %v (the postgresql package creates the user postgres)", err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// startProcess starts cmd and returns what stops it (sig, then a bounded
// wait, then SIGKILL) and a channel closed when it has exited.
func startProcess(tb testing.TB, cmd *exec.Cmd, sig os.Signal, out *syncBuffer) (func(), <-chan struct{}) {
	tb.Helper()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	return func() {
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			tb.Errorf("%s did not stop within 15s:\n%s", filepath.Base(cmd.Path), out.String())
		}
	}, exited
}

func (ca *CA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
