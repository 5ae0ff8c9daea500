package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cancelio/cancelio/internal/units"
	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
	"github.com/cancelio/cancelio/usb"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// shutdownTimeout bounds the clean shutdown after SIGTERM.
const shutdownTimeout = 10 * time.Second

// shutdownGrace is how long the server's shutdown waits, once the handler
// has shut down, for requests still open: those wait only for their
// clients by then (a POST whose body stalls, a connection that has sent
// nothing yet), whose connections are then closed.
const shutdownGrace = time.Second

// Limit of the simulated scanner's size flags (wiascan's too).
const maxSimBytes = 1 << 40

// options are the parsed command line.
type options struct {
	addr         string
	vid, pid     uint16
	real         bool // --usb given
	bandwidth    int64
	hangAfter    int64
	queueDepth   int
	abortTimeout time.Duration
	jobTimeout   time.Duration
	name         string
	saneConfig   string // directory for a SANE configuration naming scand, or ""
}

// parseArgs parses args; errors are usage errors.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("scand", flag.ContinueOnError)
	// The flag package's own report of a bad flag goes nowhere: run says
	// it once, with the program's prefix; -h prints the help below.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	help := func() {
		fmt.Fprintln(stderr, "usage: scand [--addr HOST:PORT] [--usb VID:PID] [flags]")
		fmt.Fprintln(stderr, "Sizes (--bandwidth, --hang-after) take k, M or G (powers of 1024; KiB, MiB,\nGiB also accepted).")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8090", "listen on `HOST:PORT` (port 0: any free port)")
	usbID := fs.String("usb", "", "serve the real scanner `VID:PID` (hex) through usbfs instead of the simulated one, following its unplugging and plugging back in")
	// Sizes default to "" (no fault), which -h does not print as a default.
	bandwidth := fs.String("bandwidth", "", "simulated scanner: cap its data rate at `BYTES` per second, e.g. 1M (unset or 0: no cap)")
	hangAfter := fs.String("hang-after", "", "simulated scanner: hang after sending `BYTES` on bulk IN, e.g. 100k: its answers while it is opened, then the image data (1 hangs it at open; unset or 0: never)")
	fs.IntVar(&o.queueDepth, "queue-depth", minidrv.DefaultQueueDepth, "bulk-IN transfers kept in flight")
	fs.DurationVar(&o.abortTimeout, "abort-timeout", minidrv.DefaultAbortTimeout, "bound on the device's answer to the probe, and on the abort and flush after a cancel")
	fs.DurationVar(&o.jobTimeout, "job-timeout", escl.DefaultJobTimeout, "how long a scanned page waits to be fetched")
	fs.StringVar(&o.name, "name", "", "the scanner's make and model, as clients show it")
	fs.StringVar(&o.saneConfig, "sane-config", "", "write a SANE configuration to `DIR` that loads only sane-airscan with this server as its one device (then: SANE_CONFIG_DIR=DIR scanimage -d "+saneDevice+" ...)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, sz := range []struct {
		name string
		s    string
		v    *int64
	}{{"--hang-after", *hangAfter, &o.hangAfter}, {"--bandwidth", *bandwidth, &o.bandwidth}} {
		if sz.s == "" {
			continue
		}
		v, err := units.ParseBytes(sz.s, 0, maxSimBytes)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %v", sz.name, sz.s, err)
		}
		*sz.v = v
	}
	if *usbID != "" {
		vid, pid, err := parseUSBID(*usbID)
		if err != nil {
			return nil, err
		}
		o.vid, o.pid, o.real = vid, pid, true
		if o.hangAfter != 0 || o.bandwidth != 0 {
			return nil, errors.New("--hang-after and --bandwidth apply to the simulated scanner only, not with --usb")
		}
	}
	switch {
	case o.queueDepth < 1 || o.queueDepth > minidrv.MaxQueueDepth:
		return nil, fmt.Errorf("--queue-depth %d: want 1..%d", o.queueDepth, minidrv.MaxQueueDepth)
	case o.abortTimeout <= 0:
		return nil, fmt.Errorf("--abort-timeout %v: must be positive", o.abortTimeout)
	case o.jobTimeout <= 0:
		return nil, fmt.Errorf("--job-timeout %v: must be positive", o.jobTimeout)
	}
	return o, nil
}

// parseUSBID parses --usb's "VID:PID" (see usb.ParseID).
func parseUSBID(s string) (vid, pid uint16, err error) {
	if vid, pid, ok := usb.ParseID(s); ok {
		return vid, pid, nil
	}
	return 0, 0, fmt.Errorf("--usb %q: want VID:PID in hex, like 1209:0001", s)
}

// The SANE device name of scand in the configuration --sane-config writes.
const (
	saneName   = "cancelio"
	saneDevice = "airscan:e0:" + saneName
)

// writeSANEConfig writes dll.conf and airscan.conf into dir (made if
// needed): libsane, given SANE_CONFIG_DIR=dir (no trailing colon), then
// loads only the airscan backend, whose one device is the eSCL server at
// url, with discovery off. Nothing under /etc changes.
func writeSANEConfig(dir, url string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := fmt.Sprintf("# Written by scand --sane-config.\n[devices]\n%q = %s\n\n[options]\ndiscovery = disable\nws-discovery = off\n", saneName, url)
	if err := os.WriteFile(filepath.Join(dir, "dll.conf"), []byte("airscan\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "airscan.conf"), []byte(conf), 0o644)
}

// scanner is the device scand serves: how the driver opens it, and how to
// let it go.
type scanner struct {
	name    string
	open    func(context.Context) (*usb.Device, error)
	hotplug func() (minidrv.HotplugWatcher, error) // minidrv.Config.Hotplug, or nil
	calm    func()                                 // before the last Uninitialize (ends a simulated hang)
	close   func()                                 // after it
}

// realScanner opens the USB scanner of o through the usb package's
// default backend (usbfs on Linux), and follows its removal and its
// arrival through the kernel's uevents: unplugged, the scanner is down
// (eSCL's State Down, its job ended with the device's error); plugged back
// in, the driver opens it again by itself, and the server goes on.
func realScanner(ring *ioring.Ring, o *options, log *slog.Logger) *scanner {
	return &scanner{
		name: fmt.Sprintf("USB scanner %04x:%04x", o.vid, o.pid),
		open: func(context.Context) (*usb.Device, error) {
			return usb.Open(ring, o.vid, o.pid, usb.WithZeroPacket())
		},
		hotplug: followUSB(ring, o, log),
		calm:    func() {},
		close:   func() {},
	}
}

// followUSB is the Config.Hotplug of the USB scanner of o: the kernel's
// uevents for its vendor and product. Where they cannot be watched (no
// uevent socket here), scand serves the scanner all the same, without
// following it, and says so.
func followUSB(ring *ioring.Ring, o *options, log *slog.Logger) func() (minidrv.HotplugWatcher, error) {
	watch := minidrv.WatchUSB(ring, usb.HotplugFilter{VendorID: o.vid, ProductID: o.pid})
	return func() (minidrv.HotplugWatcher, error) {
		w, err := watch()
		if err != nil {
			log.Warn("scand: cannot watch USB hotplug events; an unplugged scanner stays down until scand restarts", "err", err)
			return &noEvents{closed: make(chan struct{})}, nil
		}
		return w, nil
	}
}

// noEvents is a minidrv.HotplugWatcher that reports nothing.
type noEvents struct {
	once   sync.Once
	closed chan struct{}
}

func (n *noEvents) Next(ctx context.Context) (usb.HotplugEvent, error) {
	select {
	case <-ctx.Done():
		return usb.HotplugEvent{}, ctx.Err()
	case <-n.closed:
		return usb.HotplugEvent{}, fmt.Errorf("scand: hotplug: %w", usb.ErrClosed)
	}
}

func (n *noEvents) Close() error {
	n.once.Do(func() { close(n.closed) })
	return nil
}

// logPresence logs the scanner's removals and returns, as the driver
// follows them (Config.Hotplug), until stop is closed; it closes done
// when it returns.
func logPresence(d *minidrv.Driver, log *slog.Logger, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	st, changed := d.Watch()
	removed := st == minidrv.Removed
	for {
		select {
		case <-stop:
			return
		case <-changed:
		}
		st, changed = d.Watch()
		switch {
		case st == minidrv.Removed && !removed:
			removed = true
			log.Warn("scand: the scanner was unplugged; waiting for it to be plugged in again")
		case removed && st != minidrv.Removed && st != minidrv.Unloaded:
			removed = false
			log.Info("scand: the scanner is back", "state", st.String())
		}
	}
}

// testRequest, set by tests only (nil otherwise, and not changed while a
// daemon runs), is called with each HTTP request as it reaches the eSCL
// handler: a test knows then that its request is being served (a
// NextDocument waits for the job), not still on its way.
var testRequest func(*http.Request)

// run is the whole command: sigs delivers SIGTERM and SIGINT; ready, if
// not nil, is called with the address served once it listens.
func run(args []string, stderr io.Writer, sigs <-chan os.Signal, ready func(addr string)) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "scand:", err)
		return exitUsage
	}
	if err := serve(o, stderr, sigs, ready); err != nil {
		fmt.Fprintln(stderr, "scand:", err)
		return exitFailed
	}
	return exitOK
}

// serve serves the scanner until a signal, then shuts down.
func serve(o *options, stderr io.Writer, sigs <-chan os.Signal, ready func(string)) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ring, err := ioring.New(ioring.Config{Entries: 1024})
	if err != nil {
		return fmt.Errorf("I/O engine: %w", err)
	}
	defer ring.Close()
	var sc *scanner
	if o.real {
		sc = realScanner(ring, o, log)
	} else if sc, err = simScanner(ring, o); err != nil {
		return err
	}
	defer sc.close()
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: sc.open, Hotplug: sc.hotplug, QueueDepth: o.queueDepth,
		AbortTimeout: o.abortTimeout})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = d.Initialize(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, usb.ErrNoUSB) {
			return fmt.Errorf("open %s: this system has no USB (no /dev/bus/usb); run without --usb for the simulated scanner: %w", sc.name, err)
		}
		return fmt.Errorf("open %s: %w", sc.name, err)
	}
	defer func() {
		sc.calm()
		if err := d.Uninitialize(); err != nil {
			log.Error("scand: uninitialize the driver", "err", err)
		}
	}()
	if sc.hotplug != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		go logPresence(d, log, stop, done)
		defer func() {
			close(stop)
			<-done
		}()
	}
	name := o.name
	if name == "" {
		name = sc.name
	}
	h, err := escl.NewHandler(escl.Config{Driver: d, MakeAndModel: name, JobTimeout: o.jobTimeout, Log: log})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", o.addr, err)
	}
	url := "http://" + ln.Addr().String() + escl.DefaultPrefix
	// The SANE configuration names the address served: written once it
	// is known, before scand says it serves, so that a failure to write
	// it is the only thing said.
	if o.saneConfig != "" {
		if err := writeSANEConfig(o.saneConfig, url); err != nil {
			ln.Close()
			return fmt.Errorf("--sane-config: %w", err)
		}
	}
	var handler http.Handler = h
	if seen := testRequest; seen != nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen(r)
			h.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("scand: serving", "scanner", name, "escl", url)
	if o.saneConfig != "" {
		log.Info("scand: SANE configuration written", "dir", o.saneConfig,
			"try", fmt.Sprintf("SANE_CONFIG_DIR=%s scanimage -d %s --mode Color --resolution 150 --format=png -o page.png", o.saneConfig, saneDevice))
	}
	if ready != nil {
		ready(ln.Addr().String())
	}

	var serveErr error
	select {
	case sig := <-sigs:
		log.Info("scand: shutting down", "signal", sig.String())
	case serveErr = <-served:
	}
	// The running job first: its waiting NextDocument then ends at once,
	// and the server's Shutdown does not wait for it.
	ctx, cancel = context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	t0 := time.Now()
	herr := h.Shutdown(ctx)
	gctx, gcancel := context.WithTimeout(ctx, shutdownGrace)
	serr := srv.Shutdown(gctx)
	gcancel()
	if serr != nil {
		// Not an error of scand's: a client that does not finish its
		// request (or never starts one) is not waited for.
		log.Info("scand: closing connections whose clients did not finish their requests", "after", shutdownGrace.String())
		serr = srv.Close()
	}
	log.Info("scand: stopped", "took", time.Since(t0).Round(time.Microsecond).String())
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	return errors.Join(herr, serr)
}
