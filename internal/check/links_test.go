package check

import (
	"bufio"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot returns the directory of the module's go.mod, above the test's
// working directory (the package directory).
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
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// repoFiles returns the repository's files with the given extension, as
// slash-separated paths relative to root. It skips hidden directories,
// testdata, benchmark results and nested modules (tools/), which are not
// part of the documentation a reader of the module opens.
func repoFiles(t *testing.T, root, ext string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || rel == "bench/results" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if strings.HasSuffix(rel, ext) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var (
	// inlineLink matches [text](target) and ![alt](target), with an
	// optional "title" after the target.
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// refLink matches a reference definition: [label]: target
	refLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	// heading matches an ATX heading.
	heading = regexp.MustCompile(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	// mdName matches a Markdown file name in a Go comment.
	mdName = regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
)

// markdown is what the check needs of one Markdown file: its links (with
// their line numbers) and the anchors of its headings.
type markdown struct {
	links    []link
	mentions []link // Markdown file names in the text, outside links
	anchors  map[string]bool
}

type link struct {
	line   int
	target string
}

// parseMarkdown reads a Markdown file, skipping fenced code blocks and
// inline code spans (their brackets are not links).
func parseMarkdown(t *testing.T, file string) markdown {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := markdown{anchors: map[string]bool{}}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			a := anchor(m[1])
			if k := seen[a]; k > 0 {
				md.anchors[a+"-"+itoa(k)] = true
			} else {
				md.anchors[a] = true
			}
			seen[a]++
		}
		for _, word := range strings.Fields(inlineLink.ReplaceAllString(line, " ")) {
			if !strings.Contains(word, "://") {
				for _, name := range mdName.FindAllString(word, -1) {
					md.mentions = append(md.mentions, link{n, name})
				}
			}
		}
		line = stripCodeSpans(line)
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			md.links = append(md.links, link{n, m[1]})
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			md.links = append(md.links, link{n, m[1]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return md
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}

// stripCodeSpans blanks out `code spans`.
func stripCodeSpans(s string) string {
	var b strings.Builder
	in := false
	for _, r := range s {
		if r == '`' {
			in = !in
			continue
		}
		if !in {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchor is the fragment GitHub (and most renderers) give a heading: lower
// case, markup and punctuation other than '-' and '_' dropped, spaces
// turned into '-'.
func anchor(h string) string {
	h = stripCodeSpans(h)
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestMarkdownLinks checks that every relative link in the repository's
// Markdown files (README.md, docs/ and any other) points at a file or
// directory of the repository, that a #fragment names a heading of the
// Markdown file it points at, and that a Markdown file named in the text
// (outside a link) exists too. Links that leave the repository (a scheme
// such as https:, or a path that climbs above the root) are refused unless
// they are absolute URLs: the documentation must be readable from a copy
// of the module alone.
func TestMarkdownLinks(t *testing.T) {
	root := repoRoot(t)
	files := repoFiles(t, root, ".md")
	if len(files) == 0 {
		t.Fatal("no Markdown files found")
	}
	parsed := map[string]markdown{}
	get := func(rel string) markdown {
		md, ok := parsed[rel]
		if !ok {
			md = parseMarkdown(t, filepath.Join(root, filepath.FromSlash(rel)))
			parsed[rel] = md
		}
		return md
	}
	checked := 0
	for _, rel := range files {
		for _, m := range get(rel).mentions {
			if !exists(root, m.target) && !exists(root, path.Join(path.Dir(rel), m.target)) {
				t.Errorf("%s:%d: names %s, which is not in the repository", rel, m.line, m.target)
			}
		}
		for _, l := range get(rel).links {
			u, err := url.Parse(l.target)
			if err != nil {
				t.Errorf("%s:%d: link %q: %v", rel, l.line, l.target, err)
				continue
			}
			if u.Scheme != "" || u.Host != "" {
				continue // an absolute URL: not this check's business
			}
			checked++
			target := rel
			if u.Path != "" {
				if path.IsAbs(u.Path) {
					t.Errorf("%s:%d: link %q is absolute: make it relative to %s", rel, l.line, l.target, path.Dir(rel))
					continue
				}
				target = path.Join(path.Dir(rel), u.Path)
				if target == ".." || strings.HasPrefix(target, "../") {
					t.Errorf("%s:%d: link %q leaves the repository", rel, l.line, l.target)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
					t.Errorf("%s:%d: link %q: %s does not exist in the repository", rel, l.line, l.target, target)
					continue
				}
			}
			if u.Fragment != "" && strings.HasSuffix(target, ".md") {
				if !get(target).anchors[u.Fragment] {
					t.Errorf("%s:%d: link %q: %s has no heading #%s", rel, l.line, l.target, target, u.Fragment)
				}
			}
		}
	}
	t.Logf("%d relative links in %d Markdown files", checked, len(files))
}

// TestGoCommentsNameExistingDocs checks that every Markdown file a Go file
// names (package docs pointing a reader at docs/engine.md, say) exists,
// relative to the repository root or to the Go file's directory, so that
// no comment sends a reader to a document outside the repository.
func TestGoCommentsNameExistingDocs(t *testing.T) {
	root := repoRoot(t)
	for _, rel := range repoFiles(t, root, ".go") {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(data), "\n") {
			i := strings.Index(line, "//")
			if i < 0 {
				continue
			}
			for _, word := range strings.Fields(line[i:]) {
				if strings.Contains(word, "://") {
					continue // a URL: not a file of this repository
				}
				for _, name := range mdName.FindAllString(word, -1) {
					if exists(root, name) || exists(root, path.Join(path.Dir(rel), name)) {
						continue
					}
					t.Errorf("%s:%d: names %s, which is not in the repository", rel, n+1, name)
				}
			}
		}
	}
}

func exists(root, rel string) bool {
	_, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel)))
	return err == nil
}
