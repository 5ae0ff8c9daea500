//go:build linux

package guestinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

// IsInit reports whether this process is the guest's init: PID 1 started by
// the kernel as proto.InitPath.
func IsInit() bool {
	return os.Getpid() == 1 && len(os.Args) > 0 && os.Args[0] == proto.InitPath
}

// Main runs the guest and never returns: it ends the virtual machine.
func Main() {
	start := time.Now()
	status := run(start)
	logf("%s%d (%.2fs after init start)", proto.MarkerStatus, status, time.Since(start).Seconds())
	report(status)
}

// console is the guest console (ttyS0); the runner shows it on failure.
var console *os.File = os.Stderr

func logf(format string, args ...any) {
	fmt.Fprintf(console, format+"\n", args...)
}

// fail is a set-up failure: it is printed on the console and on the output
// port (so go test shows it), and the guest reports status 125.
const failStatus = 125

func run(start time.Time) int {
	if err := mountEarly(); err != nil {
		logf("usbvm-init: %v", err)
		return failStatus
	}
	logf("%s (kernel %s)", proto.MarkerStarted, kernelRelease())

	out, err := openOutput()
	if err != nil {
		logf("usbvm-init: %v", err)
		return failStatus
	}
	defer drain(out)
	failf := func(format string, args ...any) int {
		msg := fmt.Sprintf("usbvm-init: "+format, args...)
		logf("%s", msg)
		fmt.Fprintln(out, msg)
		return failStatus
	}

	data, err := os.ReadFile(proto.ConfigPath)
	if err != nil {
		return failf("read config: %v", err)
	}
	var cfg proto.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return failf("decode %s: %v", proto.ConfigPath, err)
	}
	if err := loadModules(cfg.Modules); err != nil {
		return failf("%v", err)
	}
	if err := mountLate(); err != nil {
		return failf("%v", err)
	}
	for _, d := range append([]string{cfg.Dir}, cfg.MkdirAll...) {
		if d == "" {
			continue
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return failf("%v", err)
		}
	}
	if cfg.Program == "" {
		// A boot check: report success once everything is up.
		logf("%s (no program: boot check, %.2fs)", proto.MarkerRunning, time.Since(start).Seconds())
		return 0
	}

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return failf("%v", err)
	}
	defer devnull.Close()
	cmd := &exec.Cmd{
		Path:   cfg.Program,
		Args:   cfg.Args,
		Env:    cfg.Env,
		Dir:    cfg.Dir,
		Stdin:  devnull,
		Stdout: out,
		Stderr: out,
	}
	logf("%s %s (%.2fs)", proto.MarkerRunning, filepath.Base(cfg.Program), time.Since(start).Seconds())
	// The boot was quiet; while the program runs, the console takes the
	// kernel's messages down to KERN_INFO: a hung task's stack and the
	// backtraces of a stall are printed at that level, and the runner
	// shows the console when the run fails.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("7\n"), 0); err != nil {
		logf("usbvm-init: console log level: %v", err)
	}
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			fmt.Fprintf(out, "usbvm-init: %s killed by signal %v\n", filepath.Base(cfg.Program), ws.Signal())
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		return failf("run %s: %v", cfg.Program, err)
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// mountEarly mounts devtmpfs, proc and sysfs and points stdin, stdout and
// stderr at the console (the kernel finds no /dev/console in our initramfs).
func mountEarly() error {
	for _, m := range []struct{ fstype, dir string }{
		{"devtmpfs", "/dev"}, {"proc", "/proc"}, {"sysfs", "/sys"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, unix.MS_NOSUID, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	c, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(c.Fd()), fd, 0); err != nil {
			return fmt.Errorf("dup console: %w", err)
		}
	}
	console = c
	return os.MkdirAll("/tmp", 0o1777)
}

// mountLate mounts configfs once its module is loaded.
func mountLate() error {
	const dir = "/sys/kernel/config"
	if _, err := os.Stat(dir); err != nil {
		return nil // no configfs in this kernel: gadget tests will say so
	}
	if err := unix.Mount("configfs", dir, "configfs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount configfs: %w", err)
	}
	return nil
}

// loadModules loads the modules with finit_module. A module whose
// dependencies are not loaded yet fails with ENOENT (unknown symbol); it is
// retried after the others, until a round makes no progress.
func loadModules(names []string) error {
	pending := names
	for len(pending) > 0 {
		var retry []string
		var lastErr error
		for _, name := range pending {
			err := loadModule(filepath.Join(proto.ModulesDir, name))
			switch {
			case err == nil, errors.Is(err, unix.EEXIST):
			case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
				retry = append(retry, name)
				lastErr = err
			default:
				return fmt.Errorf("load module %s: %w", name, err)
			}
		}
		if len(retry) == len(pending) {
			return fmt.Errorf("load modules %v: %w (missing dependency?)", retry, lastErr)
		}
		pending = retry
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err = unix.FinitModule(int(f.Fd()), "", 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// openOutput opens the output serial port in raw mode (cfmakeraw): no CR
// insertion, no echo, no signals.
func openOutput() (*os.File, error) {
	f, err := os.OpenFile(proto.OutputTTY, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open output port: %w", err)
	}
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("output port termios: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t); err != nil {
		f.Close()
		return nil, fmt.Errorf("output port raw mode: %w", err)
	}
	return f, nil
}

// drain waits until the port has sent everything (tcdrain).
func drain(f *os.File) {
	if err := unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1); err != nil {
		logf("usbvm-init: drain output: %v", err)
	}
}

// report ends the VM with the status. If the debug-exit port does not end
// QEMU, power off: the runner then sees no status and fails the run.
func report(status int) {
	drain(console)
	if f, err := os.OpenFile("/dev/port", os.O_WRONLY, 0); err == nil {
		_, err = f.WriteAt([]byte{proto.EncodeStatus(status)}, proto.DebugExitPort)
		logf("usbvm-init: isa-debug-exit did not end the VM (%v); powering off", err)
	} else {
		logf("usbvm-init: %v; powering off", err)
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour) // PID 1 must not exit
	}
}
