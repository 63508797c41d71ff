package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const base = "../../deploy/kubernetes"

func TestTheRepositorysDeploymentFilesAreValid(t *testing.T) {
	for name, err := range map[string]error{
		"kubernetes": CheckKustomization(base),
		"compose":    CheckCompose("../../docker-compose.yml"),
		"dockerfile": CheckDockerfile("../../Dockerfile"),
	} {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// copyBase copies the base into a temporary directory, applying edit to
// the named file, and returns the directory.
func copyBase(t *testing.T, file string, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(base, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		if e.Name() == file {
			edited := edit(text)
			if edited == text {
				t.Fatalf("the edit left %s unchanged", file)
			}
			text = edited
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBrokenManifestsAreRefused(t *testing.T) {
	cases := []struct {
		name, file string
		edit       func(string) string
		want       string
	}{
		{"misspelt field", "deployment.yaml", func(s string) string {
			return strings.Replace(s, "  replicas: 3\n", "  replicas: 3\n  replica: 3\n", 1)
		}, `unknown field "replica"`},
		{"field at the wrong level", "service.yaml", func(s string) string {
			return strings.Replace(s, "  type: ClusterIP\n", "  type: ClusterIP\n  targetPort: http\n", 1)
		}, `unknown field "targetPort"`},
		{"manifest not in the kustomization", "kustomization.yaml", func(s string) string {
			return strings.Replace(s, "  - service.yaml\n", "", 1)
		}, "service.yaml is not in kustomization.yaml's resources"},
		{"listed file missing", "kustomization.yaml", func(s string) string {
			return strings.Replace(s, "  - service.yaml\n", "  - service.yaml\n  - ingress.yaml\n", 1)
		}, "lists ingress.yaml, which is not a manifest"},
		{"unknown kustomization field", "kustomization.yaml", func(s string) string {
			return strings.Replace(s, "resources:", "resource:", 1)
		}, `unknown field "resource"`},
		{"writable root file system", "deployment.yaml", func(s string) string {
			return strings.Replace(s, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", 1)
		}, "want readOnlyRootFilesystem: true"},
		{"capabilities kept", "migrate-job.yaml", func(s string) string {
			return strings.Replace(s, `drop: ["ALL"]`, `drop: ["NET_RAW"]`, 1)
		}, "want capabilities: drop [ALL]"},
		{"readiness on the liveness path", "deployment.yaml", func(s string) string {
			return strings.Replace(s, "path: /readyz", "path: /healthz", 1)
		}, "want a readiness probe on GET /readyz"},
		{"probe on a port the container lacks", "deployment.yaml", func(s string) string {
			return strings.Replace(s, "path: /healthz\n              port: http", "path: /healthz\n              port: web", 1)
		}, "port web is not a container port"},
		{"password in the ConfigMap", "configmap.yaml", func(s string) string {
			return strings.Replace(s, "\ndata:\n", "\ndata:\n  REDIS_URL: redis://:pw@redis:6379/0\n", 1)
		}, "ConfigMap allocation-config holds REDIS_URL"},
		{"secret of another name", "secret.yaml", func(s string) string {
			return strings.Replace(s, "name: allocation-secrets", "name: allocation-secret", 1)
		}, "reads Secret allocation-secrets, which is not in the base"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckKustomization(copyBase(t, c.file, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestComposeRefusesUnpinnedImagesLocalPortsAndAShellHealthcheck(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ old, new, want string }{
		{"image: redis:7.4.2", "image: redis:latest", "image \"redis:latest\" is not pinned"},
		{"image: redis:7.4.2", "image: redis", "image \"redis\" is not pinned"},
		{`"127.0.0.1:15432:5432"`, `"5432:5432"`, "publishes host port 5432"},
		{`"127.0.0.1:16379:6379"`, `"127.0.0.1:6379:6379"`, "publishes host port 6379"},
		{`["CMD", "/allocation", "healthcheck"]`, `["CMD-SHELL", "curl -f localhost:8080/readyz"]`, "healthcheck must run"},
	} {
		edited := strings.Replace(string(raw), c.old, c.new, 1)
		if edited == string(raw) {
			t.Fatalf("%q is not in docker-compose.yml", c.old)
		}
		file := filepath.Join(t.TempDir(), "docker-compose.yml")
		if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := CheckCompose(file); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s -> %s: got %v, want an error with %q", c.old, c.new, err, c.want)
		}
	}
}
