package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
)

// versionBinDir finds PostgreSQL major's server binaries, so the tests can
// run against each supported version (make test-pg): $PG_BINDIR if set,
// else /usr/lib/postgresql/<major>/bin (Debian), else where `.ci/pgfetch
// <major>` unpacks them. Whichever it is must hold that major version: a
// matrix run that silently tested another version would prove nothing.
func versionBinDir(major string) (string, error) {
	return findVersion(major, os.Getenv("PG_BINDIR"))
}

// PostgresBinDirFor finds PostgreSQL major's server binaries for a test
// that needs that version whatever PG_VERSION is (the failover tests need
// 17 and 18): in /usr/lib/postgresql/<major>/bin, else where `.ci/pgfetch
// <major>` unpacks them. make test fetches them first.
func PostgresBinDirFor(major int) (string, error) { return findVersion(strconv.Itoa(major), "") }

func findVersion(major, pgBinDir string) (string, error) {
	fix := fmt.Sprintf("run `.ci/pgfetch %s` to download them once (needs npm), or set PG_BINDIR to a PostgreSQL %s bindir", major, major)
	dirs := []string{pgBinDir}
	if pgBinDir == "" {
		dirs = []string{filepath.Join("/usr/lib/postgresql", major, "bin"), filepath.Join(pgCacheDir(), major, "package", "native", "bin")}
	}
	for _, d := range dirs {
		if !hasServerBinaries(d) {
			continue
		}
		got, err := PostgresVersion(d)
		if err != nil {
			return "", err
		}
		if got != major {
			return "", fmt.Errorf("need PostgreSQL %s, but %s holds PostgreSQL %s: %s", major, d, got, fix)
		}
		return d, nil
	}
	return "", fmt.Errorf("need PostgreSQL %s, but found no PostgreSQL %s server binaries in %v: %s", major, major, dirs, fix)
}

// pgCacheDir is where .ci/pgfetch unpacks: $PG_CACHE, else
// /var/cache/outboxrelay-pg as root, else the user's cache directory.
func pgCacheDir() string {
	if d := os.Getenv("PG_CACHE"); d != "" {
		return d
	}
	if os.Getuid() == 0 {
		return "/var/cache/outboxrelay-pg"
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "outboxrelay-pg")
	}
	return filepath.Join(d, "outboxrelay-pg")
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// PostgresVersion returns the major version of the postgres binary in
// binDir, such as "16", from `postgres --version`.
func PostgresVersion(binDir string) (string, error) {
	bin := filepath.Join(binDir, "postgres")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w\n%s", bin, err, out)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("%s --version printed %q, which names no PostgreSQL version", bin, out)
	}
	return string(m[1]), nil
}
