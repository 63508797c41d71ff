package e2e_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"allocation/tests/testenv"
)

// `allocation healthcheck` is what a container runtime runs on an image
// without a shell: exit 0 while the service on HTTP_ADDR is ready, 1 when
// nothing answers there.
func TestHealthcheckSubcommandExitsZeroOnlyWhileTheServiceIsReady(t *testing.T) {
	s := startService(t)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	healthcheck := func(httpAddr string) (int, string) {
		cmd := exec.Command(binary, "healthcheck")
		// Only HTTP_ADDR matters: a broken setting of another part must not
		// make a healthy container look sick.
		cmd.Env = append(os.Environ(), "HTTP_ADDR="+httpAddr, "DATABASE_URL=mysql://not-even-postgres")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatalf("healthcheck: %v", err)
		}
		return 0, string(out)
	}
	// ":port" as in the Dockerfile: reached on the loopback interface.
	if code, out := healthcheck(":" + port); code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("healthcheck of a ready service exited %d: %s", code, out)
	}
	if code, out := healthcheck(freeAddr(t)); code != 1 {
		t.Fatalf("healthcheck with nothing listening exited %d, want 1: %s", code, out)
	}
}

// ADMIN_ADDR serves pprof and the metrics on a listener of its own; the
// metrics, on both listeners, say which build runs.
func TestAdminListenerServesProfilesAndMetricsWithTheBuildInfo(t *testing.T) {
	s := newService(t, testenv.RedisURL())
	admin := freeAddr(t)
	s.env = append(s.env, "ADMIN_ADDR="+admin)
	s.start()

	get := func(url string) string {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s answered %d: %s", url, resp.StatusCode, body)
		}
		return string(body)
	}
	if body := get("http://" + admin + "/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/ lists no goroutine profile:\n%s", body)
	}
	if body := get("http://" + admin + "/debug/pprof/goroutine?debug=1"); !strings.Contains(body, "goroutine profile") {
		t.Fatalf("no goroutine profile:\n%.500s", body)
	}
	// The test binary is built without -ldflags: version "dev".
	want := fmt.Sprintf(`go_version=%q,version="dev"} 1`, runtime.Version())
	for _, url := range []string{"http://" + admin + "/metrics", s.url + "/metrics"} {
		body := get(url)
		var line string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "allocation_build_info{") {
				line = l
			}
		}
		if !strings.Contains(line, want) || !strings.Contains(line, `commit="`) {
			t.Fatalf("%s: allocation_build_info is %q, want labels commit, go_version and version ending %s", url, line, want)
		}
	}
	// Profiles stay off the API's listener.
	resp, err := http.Get(s.url + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("the API's listener serves /debug/pprof/")
	}
}
