//go:build linux

package vmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

// Defaults of VM's zero fields.
const (
	DefaultMemory      = "512M"
	DefaultCPUs        = 2
	DefaultBootTimeout = 60 * time.Second
)

// KernelCmdline is the guest kernel's command line. panic=-1 turns a panic
// (and, with oops=panic, an oops) into an immediate reboot, which -no-reboot
// turns into a QEMU exit without a status. no_timer_check skips the boot
// check of the IO-APIC timer, which an emulated (TCG) CPU on a loaded host
// fails at random ("IO-APIC + timer doesn't work!", a panic at 0.05 s);
// virtual machines commonly boot with it. A CPU that stalls RCU for a
// minute panics the guest (a stuck CPU otherwise leaves the guest wedged
// until the run watchdog, its program unable even to time out): a minute,
// not the default 21 s, so that an emulated CPU the loaded host did not
// run for a while does not count.
const KernelCmdline = "console=ttyS0 panic=-1 oops=panic quiet mitigations=off no_timer_check " +
	"rcupdate.rcu_cpu_stall_timeout=60 sysctl.kernel.panic_on_rcu_stall=1 rdinit=" + proto.InitPath

// VM describes a guest. Fill it in and call Run: each call boots a new one.
type VM struct {
	QEMU      string  // QEMU binary; empty: $CANCELIO_USBVM_QEMU or qemu-system-x86_64
	Kernel    *Kernel // the guest kernel
	Initramfs string  // host path of the initramfs
	Accel     string  // "tcg" or "kvm"; empty: Kernel.Accel, else tcg
	Memory    string  // guest memory in QEMU syntax; empty: DefaultMemory
	CPUs      int     // guest CPUs; 0: DefaultCPUs
	// BootTimeout bounds the time from QEMU's start to the init's first
	// console line; 0: DefaultBootTimeout.
	BootTimeout time.Duration
	// RunTimeout bounds the time from the init's start to QEMU's exit;
	// 0: no bound.
	RunTimeout time.Duration
	// Stdout receives the program's output (the raw ttyS1); nil discards it.
	Stdout io.Writer
}

// Result is the outcome of a run.
type Result struct {
	Status   int  // the program's exit status, valid if Reported
	Reported bool // the init reported a status through isa-debug-exit
	QEMUExit int  // QEMU's exit code (-1: killed by a signal)
	// Reason says why there is no status (watchdog, panic, QEMU error).
	Reason  string
	Panic   bool   // the console shows a kernel panic
	Stall   bool   // the console shows an RCU stall (with Panic: its panic)
	NoBoot  bool   // the boot watchdog fired: the guest's init never started
	Console []byte // the guest console (ttyS0), with QEMU's stderr appended
	Boot    time.Duration
	Elapsed time.Duration
}

// Summary is a one-line description of the result.
func (r *Result) Summary() string {
	if r.Reported {
		return fmt.Sprintf("guest program exited with status %d (boot %.1fs, total %.1fs)", r.Status, r.Boot.Seconds(), r.Elapsed.Seconds())
	}
	return fmt.Sprintf("usbvm: %s (QEMU exit code %d after %.1fs)", r.Reason, r.QEMUExit, r.Elapsed.Seconds())
}

// StalledKernel says whether the run ended in the guest kernel's panic on
// an RCU stall (a CPU stuck with interrupts off), with no status from the
// program.
func (r *Result) StalledKernel() bool {
	return !r.Reported && r.Panic && r.Stall
}

// GuestFailed says whether the run ended with no status from the program
// because the guest itself failed, which says nothing of the program:
// its kernel stalled (StalledKernel), or its init did not start within
// the boot watchdog (a host too busy to run the emulated CPU).
func (r *Result) GuestFailed() bool {
	return r.StalledKernel() || !r.Reported && r.NoBoot
}

// AccelName returns the accelerator the VM uses: "kvm" or "tcg".
func (vm *VM) AccelName() string {
	accel := vm.Accel
	if accel == "" {
		accel = vm.Kernel.Accel
	}
	if accel != "kvm" {
		accel = "tcg"
	}
	return accel
}

// QEMUArgs returns QEMU's command line for the VM, with the guest console on
// /dev/fd/3 and the program's output port on /dev/fd/4.
func (vm *VM) QEMUArgs() []string {
	accel, cpu := vm.AccelName(), "max"
	if accel == "kvm" {
		cpu = "host"
	}
	mem := vm.Memory
	if mem == "" {
		mem = DefaultMemory
	}
	cpus := vm.CPUs
	if cpus <= 0 {
		cpus = DefaultCPUs
	}
	return []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", accel, "-cpu", cpu, "-m", mem, "-smp", strconv.Itoa(cpus),
		"-kernel", vm.Kernel.ImagePath(), "-initrd", vm.Initramfs,
		"-append", KernelCmdline,
		"-chardev", "file,id=con,path=/dev/fd/3", "-serial", "chardev:con",
		"-chardev", "file,id=out,path=/dev/fd/4", "-serial", "chardev:out",
		"-device", fmt.Sprintf("isa-debug-exit,iobase=%#x,iosize=0x04", proto.DebugExitPort),
	}
}

// consoleLog collects the console and watches it for markers.
type consoleLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	line    []byte
	started chan struct{} // closed at proto.MarkerStarted
	once    sync.Once
	panic   bool
	stall   bool
}

const maxConsole = 4 << 20

func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf.Len() < maxConsole {
		c.buf.Write(p)
	}
	c.line = append(c.line, p...)
	for {
		i := bytes.IndexByte(c.line, '\n')
		if i < 0 {
			break
		}
		l := c.line[:i]
		if bytes.Contains(l, []byte(proto.MarkerStarted)) {
			c.once.Do(func() { close(c.started) })
		}
		if bytes.Contains(l, []byte("Kernel panic")) {
			c.panic = true
		}
		if bytes.Contains(l, []byte("detected stalls on CPUs")) || bytes.Contains(l, []byte("self-detected stall on CPU")) {
			c.stall = true
		}
		c.line = c.line[i+1:]
	}
	if len(c.line) > 4096 {
		c.line = c.line[len(c.line)-4096:]
	}
	return len(p), nil
}

// Run boots the guest and waits until QEMU ends. Its error covers failures
// to start QEMU; everything after that is in the Result. Canceling ctx kills
// QEMU.
func (vm *VM) Run(ctx context.Context) (*Result, error) {
	qemu := vm.QEMU
	if qemu == "" {
		qemu = os.Getenv(EnvQEMU)
	}
	if qemu == "" {
		qemu = QEMUBinary
	}
	if _, err := exec.LookPath(qemu); err != nil {
		return nil, toolError(qemu, QEMUPackage, "the usbvm guest")
	}
	stdout := vm.Stdout
	if stdout == nil {
		stdout = io.Discard
	}
	bootTimeout := vm.BootTimeout
	if bootTimeout <= 0 {
		bootTimeout = DefaultBootTimeout
	}

	conR, conW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer conR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		conW.Close()
		return nil, err
	}
	defer outR.Close()

	con := &consoleLog{started: make(chan struct{})}
	var qemuErr bytes.Buffer
	cmd := exec.Command(qemu, vm.QEMUArgs()...)
	cmd.ExtraFiles = []*os.File{conW, outW}
	cmd.Stderr = &qemuErr
	// QEMU must not outlive the runner (go test kills it on its timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Start()
	conW.Close()
	outW.Close()
	if err != nil {
		return nil, fmt.Errorf("usbvm: start %s: %w", qemu, err)
	}

	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		_, _ = io.Copy(stdout, outR)
	}()
	go func() {
		defer copies.Done()
		_, _ = io.Copy(con, conR)
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	res := &Result{}
	kill := func(reason string) {
		if res.Reason == "" {
			res.Reason = reason
		}
		_ = cmd.Process.Kill()
	}
	bootTimer := time.NewTimer(bootTimeout)
	defer bootTimer.Stop()
	var runTimer <-chan time.Time
	started := con.started
	var waitErr error
loop:
	for {
		select {
		case <-started:
			started = nil
			res.Boot = time.Since(start)
			bootTimer.Stop()
			if vm.RunTimeout > 0 {
				t := time.NewTimer(vm.RunTimeout)
				defer t.Stop()
				runTimer = t.C
			}
		case <-bootTimer.C:
			res.NoBoot = true
			kill(fmt.Sprintf("boot watchdog: the guest init did not start within %v", bootTimeout))
		case <-runTimer:
			kill(fmt.Sprintf("run watchdog: the guest did not finish within %v after boot", vm.RunTimeout))
		case <-ctx.Done():
			kill(fmt.Sprintf("interrupted: %v", context.Cause(ctx)))
		case waitErr = <-waitDone:
			break loop
		}
	}
	copies.Wait()
	res.Elapsed = time.Since(start)

	var ee *exec.ExitError
	switch {
	case waitErr == nil:
		res.QEMUExit = 0
	case errors.As(waitErr, &ee):
		res.QEMUExit = ee.ExitCode()
	default:
		return nil, fmt.Errorf("usbvm: wait for QEMU: %w", waitErr)
	}
	con.mu.Lock()
	res.Console = bytes.Clone(con.buf.Bytes())
	res.Panic = con.panic
	res.Stall = con.stall
	con.mu.Unlock()
	if qemuErr.Len() > 0 {
		res.Console = append(res.Console, "\n--- QEMU stderr ---\n"...)
		res.Console = append(res.Console, qemuErr.Bytes()...)
	}
	if res.Reason != "" {
		return res, nil // a watchdog or ctx killed QEMU
	}
	res.Status, res.Reported = proto.DecodeExit(res.QEMUExit)
	switch {
	case res.Reported:
		// QEMU's own exit codes are 0 and 1; still, trust a decoded status
		// only if our init ran (its first console line is long flushed).
		if !bytes.Contains(res.Console, []byte(proto.MarkerStarted)) {
			res.Reported = false
			res.Reason = fmt.Sprintf("QEMU exit code %d decodes to status %d, but the guest init never started", res.QEMUExit, res.Status)
		}
	case res.Panic && res.Stall:
		res.Reason = "guest kernel panic: a CPU stalled RCU"
	case res.Panic:
		res.Reason = "guest kernel panic"
	case res.QEMUExit == 0:
		res.Reason = "the guest ended without reporting a status (reboot, power-off or panic)"
	default:
		res.Reason = "QEMU failed: " + strings.TrimSpace(qemuErr.String())
	}
	return res, nil
}
