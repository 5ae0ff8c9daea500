// Package readme reads the shell examples of the repository's README.md,
// so that the command-line tools' tests can check that the README shows
// what the tools do.
package readme

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Example is one command of a README code block: the "$ tool args" line
// and the output lines up to the next command or the end of the block.
type Example struct {
	Args   []string // after the tool's name, split at spaces (no quoting)
	Output []string
}

// Examples returns the examples of tool in the README.md found in dir or
// the nearest parent directory that has one.
func Examples(dir, tool string) ([]Example, error) {
	path, err := find(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Example
	var cur *Example
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```"):
			inBlock = !inBlock
			cur = nil
		case !inBlock:
		case strings.HasPrefix(line, "$ "):
			cur = nil
			if fields := strings.Fields(line[2:]); len(fields) > 0 && fields[0] == tool {
				out = append(out, Example{Args: fields[1:]})
				cur = &out[len(out)-1]
			}
		case cur != nil:
			cur.Output = append(cur.Output, line)
		}
	}
	return out, sc.Err()
}

// find returns the path of the README.md in dir or its nearest parent.
func find(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(d, "README.md")
		if _, err := os.Stat(p); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return p, nil
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no README.md beside a go.mod in %s or above", dir)
		}
		d = parent
	}
}
