package procstat_test

import (
	"os"
	"testing"

	"github.com/outboxrelay/outboxrelay/internal/procstat"
)

func TestParse(t *testing.T) {
	// A command name with a space and a ')' in it: fields are counted from
	// the last ')'.
	line := "4242 (post gres) x) S 17 4242 4242 0 -1 4194560 1200 0 0 0 731 95 0 0 20 0 1 0 88123 219000000 4000 18446744073709551615 1 1 0 0 0 0 0 4096 16384 0 0 0 17 1 0 0 0 0 0\n"
	got, err := procstat.Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procstat.Stat{State: 'S', PPID: 17, UTime: 731, STime: 95, StartTime: 88123}
	if got != want {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	for name, line := range map[string]string{
		"no command name": "4242 postgres S 17",
		"too few fields":  "4242 (postgres) S 17 4242 4242 0 -1",
		"bad ppid":        "4242 (postgres) S x 4242 4242 0 -1 4194560 1200 0 0 0 731 95 0 0 20 0 1 0 88123 1",
	} {
		if st, err := procstat.Parse([]byte(line)); err == nil {
			t.Errorf("%s: Parse(%q) = %+v, want an error", name, line, st)
		}
	}
}

func TestReadSelf(t *testing.T) {
	st, err := procstat.Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() || st.State != 'R' && st.State != 'S' {
		t.Errorf("Read(self) = %+v, want ppid %d and state R or S", st, os.Getppid())
	}
}
