package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// errNoPostgres says how to get the server binaries.
var errNoPostgres = errors.New("PostgreSQL server binaries not found: install them (apt-get install postgresql) or set PG_BINDIR")

// PostgresBinDir finds the directory holding initdb and postgres. With
// $PG_VERSION set (a major version, such as 16) it is that version's, see
// versionBinDir. Otherwise it is $PG_BINDIR if set, else `pg_config
// --bindir`, else the highest /usr/lib/postgresql/*/bin.
func PostgresBinDir() (string, error) {
	if v := os.Getenv("PG_VERSION"); v != "" {
		return versionBinDir(v)
	}
	if d := os.Getenv("PG_BINDIR"); d != "" {
		if !hasServerBinaries(d) {
			return "", fmt.Errorf("PG_BINDIR=%s has no initdb and postgres: %w", d, errNoPostgres)
		}
		return d, nil
	}
	// On Debian pg_config may come from libpq-dev and point at /usr/bin,
	// which has no server binaries, so check before trusting it.
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); hasServerBinaries(d) {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(matches, func(i, j int) bool { return pgVersion(matches[i]) > pgVersion(matches[j]) })
	for _, d := range matches {
		if hasServerBinaries(d) {
			return d, nil
		}
	}
	return "", errNoPostgres
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

// pgVersion extracts 15 from /usr/lib/postgresql/15/bin; 0 if it is not a number.
func pgVersion(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// runAs is the OS user Postgres runs as when the caller is root.
type runAs struct {
	name     string
	uid, gid int
}

// lookupRunAs returns nil when the caller is not root: Postgres then runs as
// the caller.
func lookupRunAs(name string) (*runAs, error) {
	if os.Getuid() != 0 {
		return nil, nil
	}
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses to run as root, but OS user %q to run it as is missing (create it with `useradd -r %s`, or run as a non-root user): %w", name, name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid of OS user %q: %w", name, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid of OS user %q: %w", name, err)
	}
	return &runAs{name: name, uid: uid, gid: gid}, nil
}

// apply makes cmd run as the user. A nil *runAs leaves cmd unchanged.
func (r *runAs) apply(cmd *exec.Cmd) {
	if r == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(r.uid), Gid: uint32(r.gid)}
}

// own gives dir and everything below it to the user.
func (r *runAs) own(dir string) error {
	if r == nil {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, r.uid, r.gid); err != nil {
			return fmt.Errorf("give %s to OS user %q: %w", path, r.name, err)
		}
		return nil
	})
}

// checkReachable fails early, with advice, when the user cannot traverse the
// parents of dir: initdb's own error for that is obscure. t.TempDir() as root
// is such a case (its parent is 0700 root).
func (r *runAs) checkReachable(dir string) error {
	if r == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		m := fi.Mode().Perm()
		ok := m&0o001 != 0 ||
			(int(st.Uid) == r.uid && m&0o100 != 0) ||
			(int(st.Gid) == r.gid && m&0o010 != 0)
		if !ok {
			return fmt.Errorf("OS user %q cannot reach %s because %s is %v owned by uid %d: put the Postgres directory under %s", r.name, dir, p, m, st.Uid, os.TempDir())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
