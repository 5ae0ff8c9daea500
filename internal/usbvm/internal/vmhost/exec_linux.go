//go:build linux

package vmhost

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// runGrace is added to the program's -test.timeout for the run watchdog: the
// test binary's own timeout panic (with its goroutine dump) should win.
const runGrace = 30 * time.Second

// defaultRunTimeout bounds a run whose program has no -test.timeout.
const defaultRunTimeout = 30 * time.Minute

// Exec is `go test -exec`'s entry point: args are the program and its
// arguments. It runs the program in a guest and returns the exit status for
// the runner to exit with: the program's own status, or 1 when the guest
// reported none (boot watchdog, kernel panic, hang). On any failure the
// guest console goes to stderr.
func Exec(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: usbvm-exec PROGRAM [ARGS...]  (as go test -exec usbvm-exec)")
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "usbvm-exec: %v\n", err)
		return 1
	}
	root, err := CacheRoot()
	if err != nil {
		return fail(err)
	}
	k, err := LoadKernel(root)
	if err != nil {
		return fail(err)
	}
	init, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	prog, err := filepath.Abs(args[0])
	if err != nil {
		return fail(err)
	}
	dir, err := os.Getwd()
	if err != nil {
		return fail(err)
	}
	spec := &Spec{
		Init:     init,
		Kernel:   k,
		Program:  prog,
		Args:     args[1:],
		Env:      GuestEnviron(os.Environ(), dir),
		Dir:      dir,
		MkdirAll: outputDirs(args[1:]),
	}
	if st, err := os.Stat(filepath.Join(dir, "testdata")); err == nil && st.IsDir() {
		spec.Testdata = filepath.Join(dir, "testdata")
	}

	tmp, err := os.MkdirTemp("", "usbvm-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initramfs.cpio")
	f, err := os.Create(initrd)
	if err != nil {
		return fail(err)
	}
	err = BuildInitramfs(f, spec)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}

	vm := &VM{
		Kernel:     k,
		Initramfs:  initrd,
		Accel:      os.Getenv(EnvAccel),
		Memory:     os.Getenv(EnvMemory),
		Stdout:     stdout,
		RunTimeout: defaultRunTimeout,
	}
	if s := os.Getenv(EnvCPUs); s != "" {
		if _, err := fmt.Sscan(s, &vm.CPUs); err != nil {
			return fail(fmt.Errorf("%s=%q: %w", EnvCPUs, s, err))
		}
	}
	if s := os.Getenv(EnvBootTimeout); s != "" {
		if vm.BootTimeout, err = time.ParseDuration(s); err != nil {
			return fail(fmt.Errorf("%s: %w", EnvBootTimeout, err))
		}
	}
	if d, ok := testTimeout(args[1:]); ok {
		vm.RunTimeout = 0
		if d > 0 {
			vm.RunTimeout = d + runGrace
		}
	}

	// go test signals its -exec program on its own timeout; end QEMU and
	// show the console rather than leave a guest running.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGQUIT)
	defer stop()
	res, err := vm.Run(ctx)
	if err != nil {
		return fail(err)
	}
	if res.GuestFailed() && ctx.Err() == nil {
		// The guest failed, not the program: its run says nothing
		// either way. Show why and run it once more; a second failure
		// fails the run.
		fmt.Fprintf(stderr, "\n%s\n", res.Summary())
		printConsole(stderr, vm, res)
		what := "the guest kernel stalled"
		if res.NoBoot {
			what = "the guest did not boot in time"
		}
		fmt.Fprintf(stderr, "usbvm-exec: %s, not the program: running %s again in a new guest\n", what, filepath.Base(prog))
		if res, err = vm.Run(ctx); err != nil {
			return fail(err)
		}
	}
	show := os.Getenv(EnvConsole) == "1"
	status := res.Status
	if !res.Reported {
		status = 1
		fmt.Fprintf(stderr, "\n%s\n", res.Summary())
		show = true
	} else if status != 0 {
		show = true
	}
	if show {
		printConsole(stderr, vm, res)
	}
	return status
}

// printConsole writes the guest console of run res of vm to w.
func printConsole(w io.Writer, vm *VM, res *Result) {
	fmt.Fprintf(w, "--- usbvm guest console (kernel %s, %s) ---\n%s\n--- end of guest console ---\n",
		vm.Kernel.Release, vm.AccelName(), strings.TrimRight(string(res.Console), "\n"))
}
