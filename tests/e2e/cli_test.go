package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
		{[]string{"migrate", "-h"}, "Usage: allocation migrate"},
		{[]string{"events", "--help"}, "replay ID"},
		{[]string{"events", "log", "-h"}, "-after"},
		{[]string{"version"}, "commit"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			cmd := exec.Command(binary, c.args...)
			// The embedded mode: a command that did more than explain
			// itself would leave a database file behind.
			cmd.Env = append(os.Environ(), "DATABASE_URL=", "REDIS_URL=", "DATA_DIR="+dataDir, "EMBEDDED_REDIS_ADDR=127.0.0.1:0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v\n%s", c.args, err, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Fatalf("%v printed %q, want it to mention %q", c.args, out, c.want)
			}
		})
	}
	if files, _ := filepath.Glob(filepath.Join(dataDir, "*")); len(files) != 0 {
		t.Fatalf("asking for help left %v behind", files)
	}
}
