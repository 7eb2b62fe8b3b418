package doclinks

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// TestRepositoryLinks checks the repository's own documents.
func TestRepositoryLinks(t *testing.T) {
	root := repoRoot(t)
	fsys := os.DirFS(root)
	files, err := docFiles(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 || files[0] != "README.md" {
		t.Fatalf("documents found: %v, want README.md first", files)
	}
	for _, f := range files {
		for _, p := range checkFile(fsys, f) {
			t.Error(p)
		}
	}
}

func TestSlug(t *testing.T) {
	for _, c := range []struct{ heading, want string }{
		{"Where the time goes", "where-the-time-goes"},
		{"PubAcks for some sends", "pubacks-for-some-sends"},
		{"`outboxrelay healthcheck`", "outboxrelay-healthcheck"},
		{"Postgres TLS (`sslmode`)", "postgres-tls-sslmode"},
		{"Configuration (exit code 2, before anything connects)", "configuration-exit-code-2-before-anything-connects"},
		{"Splitting the load: `{partition}`", "splitting-the-load-partition"},
		{"nats.go v1.56", "natsgo-v156"},
		{"2026-12-04, second sitting", "2026-12-04-second-sitting"},
		{"snake_case and kebab-case", "snake_case-and-kebab-case"},
		{"Two  spaces", "two--spaces"},
		{"**Bold** and [a link](https://example.com)", "bold-and-a-link"},
		{"Größe … → ok", "größe---ok"},
	} {
		if got := slugify(c.heading); got != c.want {
			t.Errorf("slugify(%q) = %q, want %q", c.heading, got, c.want)
		}
	}
}

func TestDuplicateHeadings(t *testing.T) {
	doc := "# Setup\n## Setup\n```sh\n# Setup (a shell comment, not a heading)\n```\n### Setup\n## Setup-1\n"
	got := anchors(doc)
	for _, want := range []string{"setup", "setup-1", "setup-2", "setup-1-1"} {
		if !got[want] {
			t.Errorf("anchors of %q lack %q; have %v", doc, want, got)
		}
	}
	if len(got) != 4 {
		t.Errorf("anchors of %q = %v, want 4", doc, got)
	}
}

// TestCheckReportsBrokenLinks proves the check fails on each kind of broken
// link, with its file and line, and passes the good ones.
func TestCheckReportsBrokenLinks(t *testing.T) {
	fsys := fstest.MapFS{
		"README.md": {Data: []byte(strings.Join([]string{
			"# Title", // 1
			"[ok](docs/a.md) [ok](docs/a.md#first-part)",         // 2
			"[ok](#title) [ok](docs) [ok](LICENSE)",              // 3
			"[web](https://example.com/x) [mail](mailto:a@b.c)",  // 4
			"[missing](docs/nope.md)",                            // 5
			"[bad anchor](docs/a.md#second)",                     // 6
			"[bad local](#nope)",                                 // 7
			"[outside](../other/README.md)",                      // 8
			"```",                                                // 9
			"[in a fence](nowhere.md)",                           // 10
			"```",                                                // 11
			"`[in code](nowhere.md)` ![img](docs/nope.png)",      // 12
			`[titled](docs/a.md "A title") [enc](docs/a%20b.md)`, // 13
		}, "\n"))},
		"LICENSE":     {Data: []byte("text")},
		"docs/a.md":   {Data: []byte("# First part\n[up](../README.md#title) [deep](../../x.md)\n")},
		"docs/a b.md": {Data: []byte("# Spaces\n")},
	}
	var got []string
	for _, f := range []string{"README.md", "docs/a.md"} {
		got = append(got, checkFile(fsys, f)...)
	}
	want := []string{
		`README.md:5: docs/nope.md: no such file or directory in the repository`,
		`README.md:6: docs/a.md#second: no heading in docs/a.md has the anchor "second"`,
		`README.md:7: #nope: no heading in README.md has the anchor "nope"`,
		`README.md:8: ../other/README.md: points outside the repository`,
		`README.md:12: docs/nope.png: no such file or directory in the repository`,
		`docs/a.md:2: ../../x.md: points outside the repository`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// repoRoot walks up from the test's directory to the one holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// docFiles lists the checked documents: README.md, every .md under docs/,
// and bench/HISTORY.md.
func docFiles(fsys fs.FS) ([]string, error) {
	files := []string{"README.md"}
	err := fs.WalkDir(fsys, "docs", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list docs/: %w", err)
	}
	return append(files, "bench/HISTORY.md"), nil
}

// linkRE matches an inline link or image, [text](target) or
// [text](target "title"), with the target in group 1 or, in angle
// brackets, group 2.
var linkRE = regexp.MustCompile(`\[[^\]]*\]\((?:([^\s()<>]+)|<([^>]*)>)(?:\s+"[^"]*")?\)`)

// checkFile returns one line per broken link in the document at name.
func checkFile(fsys fs.FS, name string) []string {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", name, err)}
	}
	var problems []string
	forEachProseLine(string(b), func(n int, line string) {
		for _, m := range linkRE.FindAllStringSubmatch(stripCodeSpans(line), -1) {
			target := m[1] + m[2]
			if msg := checkTarget(fsys, name, target); msg != "" {
				problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", name, n, target, msg))
			}
		}
	})
	return problems
}

// checkTarget says what is wrong with one link target in the document at
// from, or returns "".
func checkTarget(fsys fs.FS, from, target string) string {
	lower := strings.ToLower(target)
	if strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") || strings.HasPrefix(lower, "mailto:") {
		return ""
	}
	ref, anchor, _ := strings.Cut(target, "#")
	ref, err := url.PathUnescape(ref)
	if err != nil {
		return fmt.Sprintf("bad escape: %v", err)
	}
	file := from
	if ref != "" {
		if strings.HasPrefix(ref, "/") {
			file = path.Clean(strings.TrimPrefix(ref, "/"))
		} else {
			file = path.Join(path.Dir(from), ref)
		}
		if file == ".." || strings.HasPrefix(file, "../") {
			return "points outside the repository"
		}
		if _, err := fs.Stat(fsys, file); err != nil {
			return "no such file or directory in the repository"
		}
	}
	if anchor == "" || !strings.HasSuffix(file, ".md") {
		return ""
	}
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return err.Error()
	}
	if !anchors(string(b))[anchor] {
		return fmt.Sprintf("no heading in %s has the anchor %q", file, anchor)
	}
	return ""
}

// forEachProseLine calls fn with each line (numbered from 1) that is not
// inside a fenced code block, fences included.
func forEachProseLine(doc string, fn func(n int, line string)) {
	var fence string
	for i, line := range strings.Split(doc, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" \r") == "" {
				fence = ""
			}
			continue
		}
		if f := fenceOpener(trimmed); f != "" {
			fence = f
			continue
		}
		fn(i+1, line)
	}
}

// fenceOpener returns the run of three or more backticks or tildes that
// opens a fenced code block on this line, or "".
func fenceOpener(trimmed string) string {
	for _, c := range []string{"`", "~"} {
		n := len(trimmed) - len(strings.TrimLeft(trimmed, c))
		if n >= 3 {
			return strings.Repeat(c, n)
		}
	}
	return ""
}

// stripCodeSpans blanks out inline code, where brackets are not links.
func stripCodeSpans(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); {
		if line[i] != '`' {
			b.WriteByte(line[i])
			i++
			continue
		}
		n := len(line[i:]) - len(strings.TrimLeft(line[i:], "`"))
		ticks := line[i : i+n]
		end := -1
		for j := i + n; j < len(line); {
			k := strings.Index(line[j:], ticks)
			if k < 0 {
				break
			}
			k += j
			if m := len(line[k:]) - len(strings.TrimLeft(line[k:], "`")); m == n {
				end = k
				break
			} else {
				j = k + m
			}
		}
		if end < 0 {
			b.WriteString(ticks) // no closing run: the backticks are literal
			i += n
			continue
		}
		b.WriteString(strings.Repeat(" ", end+n-i))
		i = end + n
	}
	return b.String()
}

// headingRE matches an ATX heading, with its text in group 1 (without a
// closing run of '#').
var headingRE = regexp.MustCompile(`^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)

// htmlAnchorRE matches an explicit anchor, <a id="..."> or <a name="...">.
var htmlAnchorRE = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)

// anchors returns the anchors GitHub gives the document's headings, with its
// numbering of duplicates, plus any explicit HTML anchors.
func anchors(doc string) map[string]bool {
	seen := map[string]bool{}
	count := map[string]int{}
	forEachProseLine(doc, func(_ int, line string) {
		for _, m := range htmlAnchorRE.FindAllStringSubmatch(line, -1) {
			seen[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			return
		}
		base := slugify(m[1])
		id := base
		for seen[id] {
			count[base]++
			id = base + "-" + strconv.Itoa(count[base])
		}
		seen[id] = true
	})
	return seen
}

var (
	inlineLinkRE = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTagRE    = regexp.MustCompile(`<[^>]+>`)
)

// slugify turns a heading's Markdown into GitHub's anchor: the rendered text
// in lower case, without punctuation other than '-' and '_', each space a '-'.
func slugify(heading string) string {
	text := inlineLinkRE.ReplaceAllString(heading, "$1")
	text = htmlTagRE.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
