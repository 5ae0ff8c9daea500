package vmhost

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/internal/usbvm/internal/cpio"
	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

func TestParseLDD(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n" +
		"\tlibusb-1.0.so.0 => /lib/x86_64-linux-gnu/libusb-1.0.so.0 (0x00007f1)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n"
	libs, err := parseLDD(out)
	require.NoError(t, err)
	assert.Equal(t, []string{
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib/x86_64-linux-gnu/libusb-1.0.so.0",
		"/lib64/ld-linux-x86-64.so.2",
	}, libs)

	_, err = parseLDD("\tlibudev.so.1 => not found\n")
	assert.ErrorContains(t, err, "libudev.so.1")
}

func TestGuestEnviron(t *testing.T) {
	env := GuestEnviron([]string{
		"CANCELIO_X=1", "GOTRACEBACK=all", "HOME=/home/me", "SSH_AUTH_SOCK=/x",
		"GOMAXPROCS=2", proto.GuestEnv + "=0",
	}, "/src/pkg")
	assert.Contains(t, env, "CANCELIO_X=1")
	assert.Contains(t, env, "GOTRACEBACK=all")
	assert.Contains(t, env, "GOMAXPROCS=2")
	assert.Contains(t, env, "PWD=/src/pkg")
	assert.Contains(t, env, "HOME=/root")
	assert.Contains(t, env, proto.GuestEnv+"=1")
	assert.NotContains(t, env, "HOME=/home/me")
	assert.NotContains(t, env, "SSH_AUTH_SOCK=/x")
	assert.NotContains(t, env, proto.GuestEnv+"=0")
}

func TestTestFlags(t *testing.T) {
	d, ok := testTimeout([]string{"-test.v", "-test.timeout=1m30s"})
	assert.True(t, ok)
	assert.Equal(t, 90*time.Second, d)
	d, ok = testTimeout([]string{"--test.timeout", "0s"})
	assert.True(t, ok)
	assert.Zero(t, d)
	_, ok = testTimeout([]string{"-test.run=x"})
	assert.False(t, ok)

	dirs := outputDirs([]string{"-test.testlogfile=/tmp/go-build1/b001/testlog.txt", "-test.gocoverdir", "/tmp/cov", "-test.outputdir=rel"})
	assert.Equal(t, []string{"/tmp/go-build1/b001", "/tmp/cov"}, dirs)
}

// bzImage builds a minimal image: a setup header pointing at payload.
func bzImage(payload []byte) []byte {
	const setupSects = 1
	img := make([]byte, (setupSects+1)*512+16)
	img[0x1f1] = setupSects
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 16) // payload_offset
	binary.LittleEndian.PutUint32(img[0x24c:], uint32(len(payload)))
	return append(img, payload...)
}

func TestBzPayload(t *testing.T) {
	xz := append(bytes.Clone(magicXZ), "rest of the stream"...)
	p, tool, err := bzPayload(bzImage(xz))
	require.NoError(t, err)
	assert.Equal(t, "xz", tool)
	assert.Equal(t, xz, p)

	_, _, err = bzPayload(bzImage([]byte("plain")))
	assert.ErrorContains(t, err, "unknown payload compression")
	_, _, err = bzPayload(make([]byte, 1024))
	assert.ErrorContains(t, err, "not a bzImage")
	bad := bzImage(xz)
	binary.LittleEndian.PutUint32(bad[0x24c:], 1<<20)
	_, _, err = bzPayload(bad)
	assert.ErrorContains(t, err, "outside")
}

// atExit holds what TestMain does after the tests (removing files they
// shared).
var atExit []func()

// runThenClean runs the tests, then atExit.
type runThenClean struct{ m *testing.M }

func (r runThenClean) Run() int {
	code := r.m.Run()
	for _, f := range atExit {
		f()
	}
	return code
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(runThenClean{m})
}

func TestBuildInitramfs(t *testing.T) {
	if os.Getenv(proto.GuestEnv) == "1" {
		t.Skip("the guest has no ldd")
	}
	dir := t.TempDir()
	k := &Kernel{Dir: dir, Modules: []string{"a.ko", "b.ko"}}
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "modules"), 0o755))
	for _, m := range k.Modules {
		require.NoError(t, os.WriteFile(k.ModulePath(m), []byte("module "+m), 0o644))
	}
	src := filepath.Join(dir, "src")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "testdata", "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "testdata", "sub", "f.txt"), []byte("data"), 0o600))

	// This test binary stands in for init and program; built with -race it
	// is dynamically linked and brings its libraries.
	self, err := os.Executable()
	require.NoError(t, err)
	spec := &Spec{
		Init: self, Kernel: k, Program: self, Args: []string{"-test.v"},
		Env: []string{"A=1"}, Dir: "/work/pkg", Testdata: filepath.Join(src, "testdata"),
		MkdirAll: []string{"/tmp/log"},
	}
	var buf bytes.Buffer
	require.NoError(t, BuildInitramfs(&buf, spec))

	files := map[string][]byte{}
	modes := map[string]os.FileMode{}
	r := cpio.NewReader(&buf)
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(r)
		require.NoError(t, err)
		files["/"+h.Name], modes["/"+h.Name] = data, h.Mode
	}
	selfData, err := os.ReadFile(self)
	require.NoError(t, err)
	assert.Equal(t, selfData, files[proto.InitPath], "init")
	assert.Equal(t, os.FileMode(0o755), modes[proto.InitPath])
	prog := proto.BinDir + "/" + filepath.Base(self)
	assert.Equal(t, selfData, files[prog], "program")
	assert.Equal(t, []byte("module a.ko"), files[proto.ModulesDir+"/a.ko"])
	assert.Equal(t, []byte("data"), files["/work/pkg/testdata/sub/f.txt"])
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp"} {
		assert.True(t, modes[d].IsDir(), "%s is a directory", d)
	}
	libs, err := SharedLibs(self)
	require.NoError(t, err)
	for _, l := range libs {
		assert.Contains(t, files, l, "shared library")
	}

	var cfg proto.Config
	require.NoError(t, json.Unmarshal(files[proto.ConfigPath], &cfg))
	assert.Equal(t, proto.Config{
		Program: prog, Args: []string{prog, "-test.v"}, Env: []string{"A=1"},
		Dir: "/work/pkg", Modules: k.Modules, MkdirAll: []string{"/tmp/log"},
	}, cfg)
}

// TestCachedKernel checks the set-up's output where it exists.
func TestCachedKernel(t *testing.T) {
	root, err := CacheRoot()
	require.NoError(t, err)
	k, err := LoadKernel(root)
	if errors.Is(err, ErrNotSetUp) {
		t.Skip(err)
	}
	require.NoError(t, err)
	assert.Equal(t, "usb_f_fs.ko", k.Modules[len(k.Modules)-1], "usb_f_fs loads last: it needs libcomposite")
	avail := map[string][]byte{}
	for _, m := range k.Modules {
		data, err := os.ReadFile(k.ModulePath(m))
		require.NoError(t, err)
		avail[modName(strings.TrimSuffix(m, ".ko"))] = data
	}
	order, err := loadOrder(wantModules, avail, nil)
	require.NoError(t, err)
	assert.Len(t, order, len(k.Modules))
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	for _, n := range order {
		deps, err := modDepends(avail[n])
		require.NoError(t, err)
		for _, d := range deps {
			assert.Less(t, pos[modName(d)], pos[n], "%s loads before %s", d, n)
		}
	}
	_, err = loadOrder([]string{"usb_f_fs"}, map[string][]byte{"usb_f_fs": avail["usb_f_fs"]}, nil)
	assert.ErrorContains(t, err, "needed by usb_f_fs")

	if k.Image == "vmlinux" {
		data, err := os.ReadFile(k.ImagePath())
		require.NoError(t, err)
		assert.True(t, hasPVHNote(data), "vmlinux has a PVH entry note")
	}
}
