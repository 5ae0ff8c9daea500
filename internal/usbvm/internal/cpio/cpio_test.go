package cpio

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type entry struct {
	name, link string
	mode       fs.FileMode
	data       string
}

func readAll(t *testing.T, archive []byte) []entry {
	t.Helper()
	r := NewReader(bytes.NewReader(archive))
	var got []entry
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		require.NoError(t, err)
		data, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Len(t, data, int(h.Size)-len(h.Linkname), "data of %s", h.Name)
		got = append(got, entry{name: h.Name, link: h.Linkname, mode: h.Mode, data: string(data)})
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Bytes("/a/b/c.txt", 0o644, []byte("hello")))
	require.NoError(t, w.Bytes("a/odd", 0o755, []byte("123456789")))
	require.NoError(t, w.Symlink("/lib64", "usr/lib64"))
	require.NoError(t, w.Dir("/a/b", 0o700)) // exists: ignored
	require.NoError(t, w.Dir("/tmp", 0o1777))
	require.NoError(t, w.Bytes("empty", 0o600, nil))
	require.NoError(t, w.Close())
	assert.Zero(t, buf.Len()%4, "archive length %d is not a multiple of 4", buf.Len())
	assert.True(t, w.Has("/a/b/c.txt"))
	assert.False(t, w.Has("/nope"))

	want := []entry{
		{name: "a", mode: fs.ModeDir | 0o755},
		{name: "a/b", mode: fs.ModeDir | 0o755},
		{name: "a/b/c.txt", mode: 0o644, data: "hello"},
		{name: "a/odd", mode: 0o755, data: "123456789"},
		{name: "lib64", mode: fs.ModeSymlink | 0o777, link: "usr/lib64"},
		{name: "tmp", mode: fs.ModeDir | 0o777},
		{name: "empty", mode: 0o600},
	}
	assert.Equal(t, want, readAll(t, buf.Bytes()))
}

func TestWriterErrors(t *testing.T) {
	w := NewWriter(io.Discard)
	require.NoError(t, w.Bytes("x", 0o644, []byte("1")))
	assert.ErrorContains(t, w.Bytes("/x", 0o644, []byte("2")), "duplicate")
	assert.ErrorContains(t, w.File("short", 0o644, 10, strings.NewReader("abc")), "short data")
	// A short write leaves the archive corrupt: the error is sticky.
	assert.Error(t, w.Bytes("y", 0o644, nil))

	w = NewWriter(io.Discard)
	assert.Error(t, w.Dir("/", 0o755))
	require.NoError(t, w.Close())
	assert.ErrorIs(t, w.Close(), ErrWriterClosed)
	assert.ErrorIs(t, w.Bytes("z", 0o644, nil), ErrWriterClosed)
}

func TestReaderErrors(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Bytes("f", 0o644, []byte("data")))
	require.NoError(t, w.Close())

	_, err := NewReader(strings.NewReader("0707xx" + strings.Repeat("0", 200))).Next()
	assert.ErrorContains(t, err, "bad magic")

	r := NewReader(bytes.NewReader(buf.Bytes()[:buf.Len()-headerSize]))
	_, err = r.Next()
	require.NoError(t, err)
	_, err = r.Next()
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "archive cut before its trailer")
}

// TestCPIOTool checks the archive against GNU cpio where it is installed.
func TestCPIOTool(t *testing.T) {
	tool, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed; the round trip through our own reader still runs")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Bytes("d/file", 0o640, []byte("contents\n")))
	require.NoError(t, w.Symlink("d/link", "file"))
	require.NoError(t, w.Close())

	dir := t.TempDir()
	cmd := exec.Command(tool, "-i", "-d", "--quiet", "-H", "newc")
	cmd.Dir = dir
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "cpio -i: %s", out)
	data, err := os.ReadFile(filepath.Join(dir, "d", "link"))
	require.NoError(t, err)
	assert.Equal(t, "contents\n", string(data))
}
