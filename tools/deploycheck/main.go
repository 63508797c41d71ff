// Command deploycheck checks the deployment files offline, with no cluster
// and no Docker: every Kubernetes manifest of the kustomize base decodes
// strictly into the Kubernetes API types (an unknown or misspelt field is
// an error), the kustomization lists every manifest and nothing else, the
// workloads keep the promised probes, resources and security settings, and
// docker-compose.yml pins its images and leaves the ports of
// `make services` free. kustomize's own library then builds the base, and
// what it makes is decoded as strictly. It is a module of its own, so that the Kubernetes
// API packages stay out of the service's binary.
//
//	go run . [-root ../..]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func main() {
	root := flag.String("root", "../..", "the repository's root directory")
	flag.Parse()
	err := errors.Join(
		CheckKustomization(filepath.Join(*root, "deploy", "kubernetes")),
		CheckCompose(filepath.Join(*root, "docker-compose.yml")),
		CheckDockerfile(filepath.Join(*root, "Dockerfile")),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("deploycheck: deploy/kubernetes, docker-compose.yml and Dockerfile are valid")
}

// kustomization is the part of kustomize's Kustomization the base uses.
// Decoding is strict: a field this checker does not know is refused, to be
// added here deliberately rather than slip through misspelt.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// objects are the decoded manifests of a base, by kind.
type objects struct {
	deployments []*appsv1.Deployment
	jobs        []*batchv1.Job
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	secrets     []*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
}

// CheckKustomization checks the kustomize base in dir.
func CheckKustomization(dir string) error {
	k, err := readKustomization(dir)
	if err != nil {
		return err
	}
	var errs []error
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		errs = append(errs, fmt.Errorf("kustomization.yaml: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind))
	}
	manifests, err := manifestsIn(dir)
	if err != nil {
		return err
	}
	errs = append(errs, checkResources(dir, k.Resources, manifests)...)
	var objs objects
	for _, r := range k.Resources {
		if slices.Contains(manifests, r) {
			errs = append(errs, objs.decodeFile(filepath.Join(dir, r)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := objs.check(pinnedImages(k)); err != nil {
		return err
	}
	return checkBuild(dir)
}

// readKustomization decodes dir's kustomization.yaml strictly.
func readKustomization(dir string) (kustomization, error) {
	var k kustomization
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return k, err
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		return k, fmt.Errorf("%s: %w", filepath.Join(dir, "kustomization.yaml"), err)
	}
	return k, nil
}

// manifestsIn lists the base names of the YAML files in dir other than
// kustomization.yaml: the manifests the kustomization should list.
func manifestsIn(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	var manifests []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			manifests = append(manifests, base)
		}
	}
	return manifests, nil
}

// checkResources checks that every manifest is listed, once, and every
// listed file exists.
func checkResources(dir string, resources, manifests []string) []error {
	var errs []error
	listed := slices.Clone(resources)
	sort.Strings(listed)
	if dup := duplicates(listed); len(dup) > 0 {
		errs = append(errs, fmt.Errorf("kustomization.yaml lists %v more than once", dup))
	}
	for _, m := range manifests {
		if !slices.Contains(listed, m) {
			errs = append(errs, fmt.Errorf("%s is not in kustomization.yaml's resources: kustomize would leave it out", m))
		}
	}
	for _, r := range listed {
		if !slices.Contains(manifests, r) {
			errs = append(errs, fmt.Errorf("kustomization.yaml lists %s, which is not a manifest in %s", r, dir))
		}
	}
	return errs
}

// pinnedImages maps each image the kustomization names to whether it
// gives it a tag or digest.
func pinnedImages(k kustomization) map[string]bool {
	images := map[string]bool{}
	for _, img := range k.Images {
		images[img.Name] = img.NewTag != "" || img.Digest != ""
	}
	return images
}

// checkBuild runs kustomize itself (the library behind kubectl apply -k)
// on dir and decodes what it makes as strictly as the files: what the
// cluster would receive.
func checkBuild(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	built, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := built.AsYaml()
	if err != nil {
		return fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	var objs objects
	if err := objs.decode("kustomize build "+dir, out); err != nil {
		return err
	}
	for _, d := range objs.deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			if !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@") {
				return fmt.Errorf("kustomize build %s: Deployment %s runs image %q, with no tag", dir, d.Name, c.Image)
			}
		}
	}
	return nil
}

// decodeFile decodes each document of a manifest file strictly into the
// API type its apiVersion and kind name.
func (o *objects) decodeFile(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return o.decode(file, raw)
}

// decode decodes each document of raw, from file, strictly.
func (o *objects) decode(file string, raw []byte) error {
	var errs []error
	for i, doc := range splitDocuments(raw) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			errs = append(errs, fmt.Errorf("%s, document %d: %w", file, i+1, err))
			continue
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			o.deployments, obj = append(o.deployments, d), d
		case "batch/v1 Job":
			j := &batchv1.Job{}
			o.jobs, obj = append(o.jobs, j), j
		case "v1 Service":
			s := &corev1.Service{}
			o.services, obj = append(o.services, s), s
		case "v1 ConfigMap":
			c := &corev1.ConfigMap{}
			o.configMaps, obj = append(o.configMaps, c), c
		case "v1 Secret":
			s := &corev1.Secret{}
			o.secrets, obj = append(o.secrets, s), s
		case "policy/v1 PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			o.pdbs, obj = append(o.pdbs, p), p
		default:
			errs = append(errs, fmt.Errorf("%s, document %d: apiVersion %q kind %q is not one this checker knows: add it to deploycheck", file, i+1, meta.APIVersion, meta.Kind))
			continue
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			errs = append(errs, fmt.Errorf("%s, document %d (%s): %w", file, i+1, meta.Kind, err))
		}
	}
	return errors.Join(errs...)
}

// splitDocuments splits a YAML stream at its "---" lines, leaving out
// documents with nothing but comments.
func splitDocuments(raw []byte) [][]byte {
	var docs [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(raw), -1) {
		for _, line := range strings.Split(doc, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, []byte(doc))
				break
			}
		}
	}
	return docs
}

// failFunc records one failed check, in the words of a format and its
// arguments.
type failFunc func(format string, args ...any)

// check holds the base to what the README promises. The checks run in a
// fixed order, so that the report reads the same from run to run.
func (o *objects) check(images map[string]bool) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !o.hasOneOfEach() {
		fail("want one Deployment, one migration Job, one Service, one PodDisruptionBudget, a ConfigMap and a Secret; got %d, %d, %d, %d, %d, %d",
			len(o.deployments), len(o.jobs), len(o.services), len(o.pdbs), len(o.configMaps), len(o.secrets))
		return errors.Join(errs...)
	}
	d, job, svc, pdb := o.deployments[0], o.jobs[0], o.services[0], o.pdbs[0]
	checkSelectors(fail, d, svc, pdb)
	errs = append(errs, o.checkPods(images, d, job)...)
	checkServeContainer(fail, d, svc)
	checkMigrationJob(fail, job)
	o.checkSecrets(fail)
	return errors.Join(errs...)
}

// hasOneOfEach reports whether the base has the one Deployment, Job,
// Service and PodDisruptionBudget, and the ConfigMaps and Secrets, that
// the other checks look at.
func (o *objects) hasOneOfEach() bool {
	return len(o.deployments) == 1 && len(o.jobs) == 1 && len(o.services) == 1 && len(o.pdbs) == 1 && len(o.configMaps) > 0 && len(o.secrets) > 0
}

// checkSelectors checks the replicas, and that the Deployment, the
// PodDisruptionBudget and the Service all select the Deployment's pods.
func checkSelectors(fail failFunc, d *appsv1.Deployment, svc *corev1.Service, pdb *policyv1.PodDisruptionBudget) {
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 3 {
		fail("Deployment %s: want at least 3 replicas", d.Name)
	}
	podLabels := d.Spec.Template.Labels
	if !selects(d.Spec.Selector, podLabels) {
		fail("Deployment %s: the selector does not match the pod template's labels", d.Name)
	}
	if !selects(pdb.Spec.Selector, podLabels) {
		fail("PodDisruptionBudget %s: the selector does not match the Deployment's pods", pdb.Name)
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		fail("PodDisruptionBudget %s: want minAvailable or maxUnavailable", pdb.Name)
	}
	if !subset(svc.Spec.Selector, podLabels) || len(svc.Spec.Selector) == 0 {
		fail("Service %s: the selector does not match the Deployment's pods", svc.Name)
	}
}

// selects reports whether sel is a non-empty label selector that matches
// labels.
func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	return sel != nil && subset(sel.MatchLabels, labels) && len(sel.MatchLabels) > 0
}

// checkPods checks every container of the Deployment's and the Job's
// pods.
func (o *objects) checkPods(images map[string]bool, d *appsv1.Deployment, job *batchv1.Job) []error {
	var errs []error
	pods := []struct {
		kind, name string
		spec       corev1.PodSpec
	}{{"Deployment", d.Name, d.Spec.Template.Spec}, {"Job", job.Name, job.Spec.Template.Spec}}
	for _, p := range pods {
		where := p.kind + " " + p.name
		for _, c := range p.spec.Containers {
			where := where + ", container " + c.Name
			errs = append(errs, checkContainer(where, p.spec, c, images))
			errs = append(errs, o.checkEnvSources(where, c))
		}
	}
	return errs
}

// checkServeContainer checks that the Deployment's container runs
// `serve`, has its probes on its own ports, and has the ports the Service
// sends to.
func checkServeContainer(fail failFunc, d *appsv1.Deployment, svc *corev1.Service) {
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		fail("Deployment %s: the container runs %v, want `serve`", d.Name, c.Args)
	}
	checkProbe(fail, d.Name, c, "liveness", c.LivenessProbe, "/healthz")
	checkProbe(fail, d.Name, c, "readiness", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		checkProbe(fail, d.Name, c, "startup", c.StartupProbe, "/healthz")
	}
	for _, port := range svc.Spec.Ports {
		if !hasPort(c, port.TargetPort.String()) {
			fail("Service %s: targetPort %s is not a port of the Deployment's container", svc.Name, port.TargetPort.String())
		}
	}
}

// checkProbe checks that the Deployment deployment's container c has a
// probe p, called name, on GET path at one of its ports.
func checkProbe(fail failFunc, deployment string, c corev1.Container, name string, p *corev1.Probe, path string) {
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path {
		fail("Deployment %s: want a %s probe on GET %s", deployment, name, path)
		return
	}
	if !hasPort(c, p.HTTPGet.Port.String()) {
		fail("Deployment %s: the %s probe's port %s is not a container port", deployment, name, p.HTTPGet.Port.String())
	}
}

// checkMigrationJob checks that the Job runs `migrate` alone and is not
// restarted once it has succeeded.
func checkMigrationJob(fail failFunc, job *batchv1.Job) {
	if jc := job.Spec.Template.Spec.Containers; len(jc) != 1 || !slices.Equal(jc[0].Args, []string{"migrate"}) {
		fail("Job %s: want one container that runs `migrate`", job.Name)
	}
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure && job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		fail("Job %s: restartPolicy must be OnFailure or Never", job.Name)
	}
}

// urlsWithPasswords are the settings that carry a password, so belong in
// a Secret.
var urlsWithPasswords = []string{"DATABASE_URL", "REDIS_URL"}

// checkSecrets checks that the settings with passwords are in a Secret
// and in no ConfigMap.
func (o *objects) checkSecrets(fail failFunc) {
	secretKeys := map[string]bool{}
	for _, s := range o.secrets {
		for k := range s.StringData {
			secretKeys[k] = true
		}
		for k := range s.Data {
			secretKeys[k] = true
		}
	}
	for _, k := range urlsWithPasswords {
		if !secretKeys[k] {
			fail("no Secret holds %s", k)
		}
	}
	for _, cm := range o.configMaps {
		for _, k := range urlsWithPasswords {
			if _, ok := cm.Data[k]; ok {
				fail("ConfigMap %s holds %s, which carries a password: put it in the Secret", cm.Name, k)
			}
		}
	}
}

// checkContainer checks what every container of the base must have: an
// image set by the kustomization, resources, and a locked-down security
// context (non-root, read-only root file system, no capabilities).
func checkContainer(where string, pod corev1.PodSpec, c corev1.Container, images map[string]bool) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(where+": "+format, args...)) }
	if pinned, ok := images[c.Image]; !ok || !pinned {
		fail("image %q is not given a tag or digest by the kustomization's images", c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		fail("want cpu and memory requests")
	}
	if c.Resources.Limits.Memory().IsZero() {
		fail("want a memory limit")
	}
	if !runsAsNonRoot(pod, c) {
		fail("want runAsNonRoot: true")
	}
	checkSecurityContext(fail, c.SecurityContext)
	return errors.Join(errs...)
}

// runsAsNonRoot reports whether c runs as non-root: its own security
// context decides, and the pod's when it says nothing.
func runsAsNonRoot(pod corev1.PodSpec, c corev1.Container) bool {
	if sc := c.SecurityContext; sc != nil && sc.RunAsNonRoot != nil {
		return *sc.RunAsNonRoot
	}
	return pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
}

// checkSecurityContext checks a container's file system, privileges and
// capabilities are locked down.
func checkSecurityContext(fail failFunc, sc *corev1.SecurityContext) {
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail("want readOnlyRootFilesystem: true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail("want allowPrivilegeEscalation: false")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		fail("want capabilities: drop [ALL], add none")
	}
}

// checkEnvSources checks that the ConfigMaps and Secrets a container reads
// are in the base.
func (o *objects) checkEnvSources(where string, c corev1.Container) error {
	var errs []error
	for _, from := range c.EnvFrom {
		if ref := from.ConfigMapRef; ref != nil && !slices.ContainsFunc(o.configMaps, func(cm *corev1.ConfigMap) bool { return cm.Name == ref.Name }) {
			errs = append(errs, fmt.Errorf("%s: reads ConfigMap %s, which is not in the base", where, ref.Name))
		}
		if ref := from.SecretRef; ref != nil && !slices.ContainsFunc(o.secrets, func(s *corev1.Secret) bool { return s.Name == ref.Name }) {
			errs = append(errs, fmt.Errorf("%s: reads Secret %s, which is not in the base", where, ref.Name))
		}
	}
	if len(c.EnvFrom) == 0 {
		errs = append(errs, fmt.Errorf("%s: reads no ConfigMap or Secret", where))
	}
	return errors.Join(errs...)
}

func hasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return true
		}
	}
	return false
}

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func duplicates(sorted []string) []string {
	var dup []string
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			dup = append(dup, sorted[i])
		}
	}
	return dup
}

// compose is the part of docker-compose.yml this checker looks at; other
// fields are left to docker compose itself.
type compose struct {
	Services map[string]struct {
		Image       string `json:"image"`
		Build       any    `json:"build"`
		Ports       []any  `json:"ports"`
		Healthcheck *struct {
			Test []string `json:"test"`
		} `json:"healthcheck"`
	} `json:"services"`
}

// portsOfMakeServices are the host ports `make services` and `make run`
// use: compose must not publish them.
var portsOfMakeServices = []string{"5432", "6379", "6380"}

// CheckCompose checks that every image is pinned to a version, that no
// published host port clashes with `make services`, and that every
// service has a health check, the allocation service's through
// `allocation healthcheck`.
func CheckCompose(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(file+": "+format, args...)) }
	pinned := regexp.MustCompile(`^[^:@]+(:[^:]*[0-9][^:]*|@sha256:[0-9a-f]{64})$`)
	for name, s := range c.Services {
		if s.Build == nil && (!pinned.MatchString(s.Image) || strings.HasSuffix(s.Image, ":latest")) {
			fail("service %s: image %q is not pinned to a version", name, s.Image)
		}
		for _, p := range s.Ports {
			host := hostPort(fmt.Sprint(p))
			if slices.Contains(portsOfMakeServices, host) {
				fail("service %s publishes host port %s, which `make services` or `make run` uses", name, host)
			}
		}
	}
	if a, ok := c.Services["allocation"]; !ok {
		fail("no allocation service")
	} else if a.Healthcheck == nil || !slices.Equal(a.Healthcheck.Test, []string{"CMD", "/allocation", "healthcheck"}) {
		fail("the allocation service's healthcheck must run [CMD, /allocation, healthcheck]")
	}
	return errors.Join(errs...)
}

// hostPort is the host side of a compose port mapping such as
// "127.0.0.1:15432:5432" or "8080:8080", or "" when nothing is published on
// the host. An environment default, ${VAR:-8080}, counts as its default.
func hostPort(mapping string) string {
	mapping = regexp.MustCompile(`\$\{[A-Za-z_]+:-([0-9]+)\}`).ReplaceAllString(mapping, "$1")
	mapping = strings.SplitN(mapping, "/", 2)[0]
	parts := strings.Split(mapping, ":")
	if len(parts) < 2 {
		return "" // only a container port: a random host port
	}
	return parts[len(parts)-2]
}

// CheckDockerfile checks that the image has a HEALTHCHECK through the
// binary (distroless has no shell) and that its base images are pinned.
func CheckDockerfile(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var errs []error
	if !bytes.Contains(raw, []byte(`CMD ["/allocation", "healthcheck"]`)) {
		errs = append(errs, fmt.Errorf(`%s: want HEALTHCHECK ... CMD ["/allocation", "healthcheck"]`, file))
	}
	for _, m := range regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllSubmatch(raw, -1) {
		image := string(m[1])
		if !strings.ContainsAny(image, ":@") || strings.HasSuffix(image, ":latest") {
			errs = append(errs, fmt.Errorf("%s: base image %s is not pinned", file, image))
		}
	}
	return errors.Join(errs...)
}
