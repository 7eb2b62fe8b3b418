package testenv

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CloneOptions configures ClonePostgres.
type CloneOptions struct {
	// Standby makes the clone a hot standby that streams from the source
	// through a physical slot named after it, with hot_standby_feedback on.
	// Otherwise the clone is a restored backup: it replays the WAL copied
	// with it and becomes a primary of its own (with the source's system
	// identifier, as a restored backup has).
	Standby bool
	// Name names the clone's physical slot on the source, and its
	// application_name; default "standby_1".
	Name string
	// Settings are extra settings of the clone, such as
	// sync_replication_slots.
	Settings map[string]string
}

// ClonePostgres takes a base backup of src with the low-level backup API
// (pg_backup_start, a file copy, pg_backup_stop: pg_basebackup is not in
// every package of the server binaries), and starts it as a new cluster
// with src's binaries. Cleanup stops it and removes its directory. It needs
// PostgreSQL 15 or later.
func ClonePostgres(t testing.TB, src *Postgres, o CloneOptions) *Postgres {
	t.Helper()
	if o.Name == "" {
		o.Name = "standby_1"
	}
	ctx := context.Background()
	conn, err := src.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if o.Standby {
		// Reserved now, the slot keeps the WAL from before the backup starts.
		if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", o.Name); err != nil {
			t.Fatalf("clone: create physical slot %s: %v", o.Name, err)
		}
	}
	if _, err := conn.Exec(ctx, "SELECT pg_backup_start('testenv clone', true)"); err != nil {
		t.Fatalf("clone: pg_backup_start: %v", err)
	}
	dir, err := os.MkdirTemp("", "testenv-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	dst := filepath.Join(dir, "data")
	if err := copyData(src.DataDir(), dst); err != nil {
		t.Fatalf("clone: copy %s: %v", src.DataDir(), err)
	}
	var label, spcmap string
	if err := conn.QueryRow(ctx, "SELECT labelfile, spcmapfile FROM pg_backup_stop(false)").Scan(&label, &spcmap); err != nil {
		t.Fatalf("clone: pg_backup_stop: %v", err)
	}
	// The WAL up to the backup's end is in src's pg_wal now.
	if err := copyDir(filepath.Join(src.DataDir(), "pg_wal"), filepath.Join(dst, "pg_wal"), func(rel string, d fs.DirEntry) bool { return true }); err != nil {
		t.Fatalf("clone: copy pg_wal: %v", err)
	}
	files := map[string]string{"backup_label": label}
	if spcmap != "" {
		files["tablespace_map"] = spcmap
	}
	settings := map[string]string{}
	for k, v := range src.settings {
		settings[k] = v
	}
	if o.Standby {
		files["standby.signal"] = ""
		settings["primary_conninfo"] = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres application_name=%s", src.Port(), o.Name)
		settings["primary_slot_name"] = o.Name
		settings["hot_standby_feedback"] = "on"
	}
	for k, v := range o.Settings {
		settings[k] = v
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pg, err := NewPostgres(dir, PostgresOptions{BinDir: src.binDir, Settings: settings, StartTimeout: src.startTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clone's postgres log %s (last %d lines):\n%s", pg.LogFile(), logLines, tailFile(pg.LogFile(), logLines))
		}
		if pg.Running() {
			_ = pg.Stop("immediate")
		}
	})
	if err := pg.Start(); err != nil {
		t.Fatalf("clone: %v\n%s", err, tailFile(pg.LogFile(), logLines))
	}
	return pg
}

// Promote ends recovery on a standby, and waits until it accepts writes.
func (p *Postgres) Promote(ctx context.Context) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok); err != nil || !ok {
		return fmt.Errorf("promote the standby on port %d: %v (promoted %v)", p.Port(), err, ok)
	}
	return nil
}

// copyData copies a data directory as a base backup does: without the
// files a running server owns (postmaster.pid), its WAL, its replication
// slots, and the contents of its temporary directories.
func copyData(src, dst string) error {
	skip := map[string]bool{"postmaster.pid": true, "postmaster.opts": true, "backup_label": true, "tablespace_map": true, "standby.signal": true, "recovery.signal": true}
	emptied := map[string]bool{"pg_wal": true, "pg_replslot": true, "pg_stat_tmp": true, "pg_dynshmem": true, "pg_notify": true, "pg_serial": true, "pg_snapshots": true, "pg_subtrans": true, "pg_logical/snapshots": true, "pg_logical/mappings": true}
	return copyDir(src, dst, func(rel string, d fs.DirEntry) bool {
		if skip[rel] {
			return false
		}
		if parent := filepath.Dir(rel); emptied[parent] || strings.HasPrefix(parent, "pg_wal/") {
			return false
		}
		return true
	})
}

// copyDir copies the regular files and directories under src that keep
// accepts (given the path relative to src), with their modes.
func copyDir(src, dst string, keep func(rel string, d fs.DirEntry) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) { // removed by the server meanwhile
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel != "." && !keep(rel, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
