package testenv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// initdb creates the data directory with the superuser "postgres" and this
// package's pg_hba.conf.
func (p *Postgres) initdb() error {
	cmd := exec.Command(filepath.Join(p.binDir, "initdb"),
		"-D", p.dataDir, "-U", "postgres", "--encoding=UTF8", "--locale=C",
		"--auth=trust", "--no-sync", "--no-instructions")
	cmd.Dir = p.dir // initdb complains if it cannot read the working directory
	p.user.apply(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", p.dataDir, err, out)
	}
	hba := strings.Join([]string{
		"# Written by internal/testenv.",
		"local all all trust",
		"local replication all trust",
		"host all +" + PasswordAuthRole + " 127.0.0.1/32 scram-sha-256",
		"host replication +" + PasswordAuthRole + " 127.0.0.1/32 scram-sha-256",
		"host all all 127.0.0.1/32 trust",
		"host replication all 127.0.0.1/32 trust",
		"",
	}, "\n")
	// Both files exist and belong to the run-as user; rewriting keeps that.
	if err := os.WriteFile(filepath.Join(p.dataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(p.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf: %w", err)
	}
	_, err = io.WriteString(f, "\ninclude_if_exists '"+confFile+"'\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write postgresql.conf: %w", err)
	}
	return nil
}

// writeConf writes the settings file included from postgresql.conf.
func (p *Postgres) writeConf() error {
	s := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"port":                    strconv.Itoa(p.port),
		"unix_socket_directories": p.dir,
		"wal_level":               "logical",
		"max_wal_senders":         "10",
		"max_replication_slots":   "10",
		"fsync":                   "off",
		"full_page_writes":        "off",
		"synchronous_commit":      "on",
		"shared_buffers":          "16MB",
		"max_connections":         "50",
		"timezone":                "UTC",
		"log_timezone":            "UTC",
		"log_line_prefix":         "%m [%p] %q%u@%d ",
		"logging_collector":       "off",
	}
	for k, v := range p.settings {
		s[k] = v
	}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by internal/testenv on every NewPostgres.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(s[k], "'", "''"))
	}
	path := filepath.Join(p.dataDir, confFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if p.user != nil {
		if err := os.Chown(path, p.user.uid, p.user.gid); err != nil {
			return fmt.Errorf("give %s to OS user %q: %w", path, p.user.name, err)
		}
	}
	return nil
}
