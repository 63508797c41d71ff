package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"allocation/tests/testenv"
)

// Every subcommand explains itself, and asking for help does nothing else:
// no database is created, no migration applied.
func TestEverySubcommandExplainsItselfWithoutTouchingAnything(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "allocation serve [flags]"},
		{[]string{"help"}, "CONSUMER_CONCURRENCY"},
		{[]string{"serve", "-h"}, "-skip-migrate"},
		{[]string{"serve", "-http=false", "--help"}, "-skip-migrate"},
		{[]string{"migrate", "-h"}, "Usage: allocation migrate"},
		{[]string{"migrate", "status", "-h"}, "allocation migrate status"},
		{[]string{"events", "--help"}, "replay ID"},
		{[]string{"dead-letters", "-h"}, "retry [-again] ID"},
		{[]string{"dead-letters", "list", "-h"}, "-limit N"},
		// Help after a subcommand's own word, not a JSON error from it.
		{[]string{"events", "dead", "-h"}, "replay ID"},
		{[]string{"events", "replay", "-h"}, "replay ID"},
		{[]string{"events", "replay", "42", "--help"}, "replay ID"},
		{[]string{"version", "-h"}, "Usage: allocation version"},
		{[]string{"healthcheck", "-h"}, "Usage: allocation healthcheck"},
		{[]string{"events", "log", "-h"}, "-after"},
		{[]string{"version"}, "commit"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(binary, c.args...)
			// The embedded mode: a command that did more than explain
			// itself would leave a database file behind.
			cmd.Env = append(os.Environ(), "DATABASE_URL=", "REDIS_URL=", "DATA_DIR="+dataDir, "EMBEDDED_REDIS_ADDR=127.0.0.1:0")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %v\n%s%s", c.args, err, out, stderr.String())
			}
			// Help that was asked for is the output, not a diagnostic.
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("%v printed %q on stdout (stderr %q), want it to mention %q", c.args, out, stderr.String(), c.want)
			}
		})
	}
	if files, _ := filepath.Glob(filepath.Join(dataDir, "*")); len(files) != 0 {
		t.Fatalf("asking for help left %v behind", files)
	}
}

// `allocation migrate status` lists every migration, pending or applied
// (with when), on the SQLite file and on PostgreSQL alike, and changes
// nothing: a SQLite file that is not there is not created.
func TestMigrateStatusListsPendingThenAppliedMigrations(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	for name, env := range map[string][]string{
		"sqlite":   {"DATABASE_URL=", "DATA_DIR=" + dataDir},
		"postgres": {"DATABASE_URL=" + testenv.FreshDatabase(t)},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			run := func(args ...string) string {
				t.Helper()
				cmd := exec.Command(binary, args...)
				cmd.Env = append(os.Environ(), append(env, "REDIS_URL=", "EMBEDDED_REDIS_ADDR=127.0.0.1:0")...)
				var stderr strings.Builder
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("%v: %v\n%s%s", args, err, out, stderr.String())
				}
				return string(out)
			}
			before := run("migrate", "status")
			if !strings.Contains(before, "00001_init.sql") || !strings.Contains(before, "pending") || !strings.Contains(before, " 0 of ") {
				t.Fatalf("status before migrating:\n%s\nwant 00001_init.sql pending and 0 applied", before)
			}
			if name == "sqlite" {
				if files, _ := filepath.Glob(filepath.Join(dataDir, "*")); len(files) != 0 {
					t.Fatalf("migrate status created %v", files)
				}
			}
			run("migrate")
			after := run("migrate", "status")
			lines := strings.Split(strings.TrimSpace(after), "\n")
			if len(lines) < 3 || !strings.HasPrefix(lines[0], "VERSION") || !strings.Contains(lines[len(lines)-1], ", 0 pending") {
				t.Fatalf("status after migrating:\n%s\nwant a header, the migrations and 0 pending", after)
			}
			for _, line := range lines[1 : len(lines)-1] {
				fields := strings.Fields(line)
				if len(fields) != 3 {
					t.Fatalf("migration line %q: want version, file, applied at", line)
				}
				if _, err := time.Parse(time.RFC3339, fields[2]); err != nil {
					t.Errorf("migration %s: applied at %q: %v", fields[1], fields[2], err)
				}
			}
		})
	}
}

// make build stamps the version and the commit from git, and make run and
// make run-postgres exec the service: run through the recipe's shell, it
// would stay behind as an orphan when make is sent SIGTERM. make -n shows
// the commands without running them.
func TestMakefileStampsTheBuildAndExecsTheService(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	git := exec.Command("git", "rev-parse", "HEAD")
	git.Dir = root
	commit, err := git.Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD in %s: %v", root, err)
	}
	cmd := exec.Command("make", "-n", "build", "run", "run-postgres")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n: %v\n%s", err, out)
	}
	dry := string(out)
	for _, want := range []string{"-X main.version=", "-X main.commit=" + strings.TrimSpace(string(commit))} {
		if !strings.Contains(dry, want) {
			t.Errorf("make build does not pass %q:\n%s", want, dry)
		}
	}
	if n := strings.Count(dry, "exec ./bin/allocation serve"); n != 2 {
		t.Errorf("make run and make run-postgres: %d recipes exec the service, want 2:\n%s", n, dry)
	}
}
