// Package proto is the contract between the usbvm host runner and its guest
// init: where things are inside the initramfs, what the init reads, and how the
// program's exit status travels back through QEMU's isa-debug-exit device.
package proto

// Paths inside the guest.
const (
	// ConfigPath holds the JSON-encoded Config the init reads.
	ConfigPath = "/usbvm/config.json"
	// ModulesDir holds the kernel modules, loaded in Config.Modules order.
	ModulesDir = "/usbvm/modules"
	// BinDir holds the program to run.
	BinDir = "/usbvm/bin"
	// OutputTTY is the serial port (QEMU's second -serial) that carries the
	// program's stdout and stderr to the host, in raw mode.
	OutputTTY = "/dev/ttyS1"
	// InitPath is where the init binary sits; the kernel runs it (rdinit=).
	InitPath = "/init"
)

// GuestEnv is set to "1" in the environment of the program run in the guest.
const GuestEnv = "CANCELIO_USBVM_GUEST"

// Console markers: lines the init writes to the guest console (ttyS0), read
// by the runner.
const (
	// MarkerStarted ends the boot watchdog: the init runs.
	MarkerStarted = "usbvm-init: started"
	// MarkerRunning says modules are loaded and the program starts.
	MarkerRunning = "usbvm-init: running"
	// MarkerStatus is followed by the program's exit status.
	MarkerStatus = "usbvm-init: exit status "
)

// Config tells the init what to run.
type Config struct {
	Program string   // absolute path of the program in the guest
	Args    []string // argv, Args[0] included
	Env     []string // the program's complete environment
	Dir     string   // working directory, created if missing
	Modules []string // module files in ModulesDir, in load order
	// MkdirAll lists directories the program expects to exist, such as the
	// directory of go test's -test.testlogfile.
	MkdirAll []string
}

// Exit status encoding. QEMU's isa-debug-exit device makes QEMU exit with
// (value<<1)|1 for a value written to its port. QEMU itself exits with 1 on its
// own errors and 0 when the guest powers off or reboots (a kernel panic with
// panic=-1 and -no-reboot), so the guest writes status+1: every reported
// status then decodes from an odd exit code of at least 3.
const (
	// DebugExitPort is the I/O port of the isa-debug-exit device.
	DebugExitPort = 0xf4
	// MaxStatus is the largest status that survives the 8-bit exit code.
	MaxStatus = 126
)

// EncodeStatus returns the byte the guest writes to DebugExitPort for a
// program exit status. Statuses outside [0, MaxStatus] become MaxStatus.
func EncodeStatus(status int) byte {
	if status < 0 || status > MaxStatus {
		status = MaxStatus
	}
	return byte(status + 1)
}

// DecodeExit returns the guest program's exit status from QEMU's exit code,
// and false when the code does not carry one (QEMU failed, the guest
// panicked, rebooted or powered off without reporting).
func DecodeExit(qemuExit int) (status int, ok bool) {
	if qemuExit < 3 || qemuExit > 255 || qemuExit%2 == 0 {
		return 0, false
	}
	return qemuExit>>1 - 1, true
}
