package testenv

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// natsServerModule is the tool dependency NATSServerBinary builds.
const natsServerModule = "github.com/nats-io/nats-server/v2"

// ModuleRoot returns the directory of the nearest go.mod at or above the
// working directory: the module root when run from a test or from `make`.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory; run from inside the outboxrelay module")
		}
		dir = parent
	}
}

var natsBin struct {
	sync.Mutex
	path string
}

// NATSServerBinary returns the path of a nats-server binary: $NATS_SERVER_BIN
// if set, else <module root>/bin/nats-server, which it builds from the
// version pinned in go.mod unless the file there already reports that
// version. Concurrent callers, in this process or in other test binaries,
// build it at most once: they take a file lock, build into a temporary file
// and rename it into place.
func NATSServerBinary() (string, error) {
	if p := os.Getenv("NATS_SERVER_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NATS_SERVER_BIN: %w", err)
		}
		return p, nil
	}
	natsBin.Lock()
	defer natsBin.Unlock()
	if natsBin.path != "" {
		return natsBin.path, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	want, err := requiredVersion(filepath.Join(root, "go.mod"), natsServerModule)
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(root, "bin")
	target := filepath.Join(binDir, "nats-server")
	if binaryVersion(target) == want {
		natsBin.path = target
		return target, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	unlock, err := lockFile(filepath.Join(binDir, ".nats-server.lock"))
	if err != nil {
		return "", fmt.Errorf("build nats-server: %w", err)
	}
	defer unlock()
	if binaryVersion(target) != want { // another process may have built it meanwhile
		if err := goBuild(root, natsServerModule, target, nil); err != nil {
			return "", err
		}
	}
	natsBin.path = target
	return target, nil
}

// requiredVersion reads the version of module from the require lines of the
// go.mod file at path.
func requiredVersion(path, module string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == module {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read go.mod: %w", err)
	}
	return "", fmt.Errorf("%s does not require %s: add it with `go get -tool %s@<version>`", path, module, module)
}

// binaryVersion runs `bin --version` and returns the version it prints
// ("nats-server: v2.15.2" gives "v2.15.2"), or "" if that fails.
func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// lockFile takes an exclusive flock on path, creating it if needed.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// goBuild runs `go build` for pkg in the module at root and renames the
// result to target, so nobody ever runs a half-written binary.
func goBuild(root, pkg, target string, flags []string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(target), ".build-")
	if err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, filepath.Base(target))
	args := append([]string{"build", "-buildvcs=false", "-o", out}, flags...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", pkg, root, err, b)
	}
	if err := os.Rename(out, target); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

var builds sync.Map // "pkg name" -> *buildResult

// BuildBinary builds the main package pkg of this module (a path relative to
// the module root such as "." or "./cmd/tool") into a binary called name, at
// most once per process, and returns its path. When this process was built
// with -race the binary is too. Binaries live in a directory under
// os.TempDir() named after the module root, and are replaced atomically, so
// test binaries running in parallel can share them.
func BuildBinary(pkg, name string) (string, error) {
	v, _ := builds.LoadOrStore(pkg+" "+name, &buildResult{})
	r := v.(*buildResult)
	r.once.Do(func() { r.path, r.err = buildBinary(pkg, name) })
	return r.path, r.err
}

func buildBinary(pkg, name string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), "outboxrelay-testbin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
		name += "-race"
	}
	target := filepath.Join(dir, name)
	if err := goBuild(root, pkg, target, flags); err != nil {
		return "", err
	}
	return target, nil
}
