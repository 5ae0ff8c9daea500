package minidrv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/goid"
	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
)

// Defaults of Config.
const (
	// DefaultQueueDepth is the number of bulk-IN transfers an acquisition
	// keeps in flight when Config.QueueDepth is 0.
	DefaultQueueDepth = 8
	// MaxQueueDepth is the largest Config.QueueDepth.
	MaxQueueDepth = 256
	// DefaultAbortTimeout bounds the abort and flush that follow a cancel,
	// and each probe of the device, when Config.AbortTimeout is 0.
	DefaultAbortTimeout = 500 * time.Millisecond
	// DefaultStallTimeout is how long an acquisition waits for data before
	// it gives up, when Config.StallTimeout is 0.
	DefaultStallTimeout = 30 * time.Second
	// ProgressInterval is the longest time between two progress reports of
	// an acquisition, even when no data arrives.
	ProgressInterval = time.Second
	// MinProgressReports is the number of chunks an image is cut into at
	// least (when it has BufferAlign bytes per chunk or more), so that
	// progress is reported at least that many times.
	MinProgressReports = 10
)

// scannerEndpoints returns the bulk OUT and bulk IN endpoints of dev's
// interface, the first of each: their addresses are the device's choice
// (the simulated scanner has 0x01 and 0x82; the same personality served as
// a USB gadget gets the ones its controller assigns).
func scannerEndpoints(dev *usb.Device) (out, in *usb.Endpoint, err error) {
	for _, ed := range dev.Desc().Endpoints {
		if ed.Type != usb.Bulk || (ed.IsIn() && in != nil) || (!ed.IsIn() && out != nil) {
			continue
		}
		ep, err := dev.Endpoint(ed.Address)
		if err != nil {
			return nil, nil, err
		}
		if ed.IsIn() {
			in = ep
		} else {
			out = ep
		}
	}
	if out == nil || in == nil {
		return nil, nil, fmt.Errorf("%w: no bulk OUT and bulk IN endpoint pair", usb.ErrNotFound)
	}
	return out, in, nil
}

// errInvalidArg is refused input that is not a property (a nil sink, the
// wrong item): E_INVALIDARG. It is wrapped with the details.
var errInvalidArg = &Error{HResult: HResultInvalidArg, Name: "E_INVALIDARG", Msg: "invalid argument"}

// Config configures a Driver. Ring and Open are required; the zero value of
// every other field is a useful default.
type Config struct {
	// Ring runs every transfer. The driver only starts requests and waits
	// for them one by one (Request.Wait); it never reaps the ring's
	// completion queue, so other users may share the ring. The caller owns
	// the ring and closes it after the driver's last Uninitialize.
	Ring *ioring.Ring
	// Open opens the device. The first Initialize calls it, and
	// NotifyPnpEvent(EventDeviceConnected) when the device it had is gone.
	// A nil device without an error counts as a device that did not open
	// (ErrOffline). The driver closes the devices it opened, and uses the
	// first bulk OUT and bulk IN endpoints of the device's interface. For
	// a real device (or the scanner served as a USB gadget) wrap usb.Open,
	// and pass usb.WithZeroPacket; tests open the simulated scanner with
	// minidrvtest.SimOpener.
	Open func(ctx context.Context) (*usb.Device, error)
	// QueueDepth is the number of bulk-IN transfers an acquisition keeps in
	// flight: 1..MaxQueueDepth, and at most half the ring's entries. 0
	// means DefaultQueueDepth (or less on a small ring).
	QueueDepth int
	// AbortTimeout bounds each step of the device's recovery after an
	// acquisition that ended early (the abort and flush; after a reset, the
	// resynchronization), and a probe of the device (Initialize,
	// reconnection, or a resynchronization before a scan or a Lock). The
	// recovery runs off the caller's path: CancelPendingIO never waits for
	// it. 0 means DefaultAbortTimeout.
	AbortTimeout time.Duration
	// StallTimeout is how long an acquisition waits for its next chunk
	// before it fails with ErrDeviceCommunication. 0 means
	// DefaultStallTimeout; a negative value waits for ever (a cancel still
	// ends the wait).
	StallTimeout time.Duration
	// Hotplug, if not nil, makes the driver follow its device's removals
	// and arrivals by itself, as WIA's PnP manager does for a minidriver:
	// the first Initialize calls it (before it opens the device, so that
	// no later event is missed; an error, or a nil watcher, fails the
	// Initialize with ErrGeneral) and reads the watcher it returns in a
	// goroutine of its own, until the last Uninitialize, which ends that
	// goroutine and closes the watcher. A removal of the device is
	// delivered as NotifyPnpEvent(EventDeviceDisconnected): the driver
	// goes to Removed, stopping an acquisition (whose transfers get up to
	// AbortTimeout to fail with the USB stack's usb.ErrNoDevice first). An
	// arrival of the same device (see HotplugMatch) is
	// NotifyPnpEvent(EventDeviceConnected): the driver
	// opens it again with Open, probes it and is Idle, with no call from
	// the application; if the device does not open or answer yet, the
	// driver tries again after pauses of up to a second while it stays
	// plugged in. Without Hotplug the application delivers those events.
	// WatchUSB watches the kernel's uevents; the simulated scanner has
	// minidrvtest.SimHotplug.
	Hotplug func() (HotplugWatcher, error)
	// HotplugMatch selects the events of the driver's device among those
	// the watcher reports, by vendor ID, product ID and serial number. A
	// zero field takes the value of the device the first Initialize
	// opened, so the zero value follows that device: a device plugged
	// back in is the same one when its serial number is (any device of
	// the vendor and product, where the device has no serial number).
	HotplugMatch usb.HotplugFilter
}

// Progress is one progress report of an acquisition.
type Progress struct {
	// Percent is the share of the image delivered to the sink so far,
	// 0..100, rounded down; it never decreases and is 100 only when the
	// whole image was delivered.
	Percent int
	// Bytes is the number of image bytes delivered to the sink so far
	// (without the PNM header).
	Bytes int64
	// Total is the size of the image in bytes (Properties.ImageSize).
	Total int64
}

// Driver is a WIA-style minidriver for the scanner behind one usb.Device:
// its methods mirror IWiaMiniDrv. Its state follows the table of State;
// every method is safe for concurrent use, and a method the current state
// does not allow returns a typed error (see Error) and changes nothing.
//
// A WIA client calls, in order, Initialize, Lock, WriteItemProperties,
// AcquireItemData, Unlock, and eventually Uninitialize. CancelPendingIO and
// NotifyPnpEvent may come at any time from any goroutine.
//
// Make a Driver with New. Every method refuses a Driver that New did not
// make (a nil *Driver, a zero Driver) with an error whose HRESULT is
// E_INVALIDARG and for which errors.Is(err, ioring.ErrInvalid) holds,
// rather than panic or wait for ever; State, Watch, QueueDepth and
// Properties return zero values (Unloaded, and a Watch channel that is
// never closed).
type Driver struct {
	cfg Config
	m   Machine

	// ioSem (capacity 1) is held by whoever uses the device: an
	// acquisition from before it starts until it returns (then the
	// device's recovery, if the acquisition hands it over, until that
	// ends), Lock while it checks the device, the first Initialize, a
	// reconnection and the last Uninitialize. Holding it is what allows
	// reading dev, in, out, bufs and dirty without mu, and writing bufs,
	// chunk, flushBuf, cmd and marker.
	ioSem chan struct{}
	// opener is the id (goid.ID) of the goroutine running Config.Open
	// with ioSem held (openDevice), or 0: an Initialize or Uninitialize
	// called from Config.Open cannot wait for ioSem, which its own caller
	// holds.
	opener atomic.Int64

	// Buffers of the acquisitions and of the device's recovery, reused from
	// one to the next; only the ioSem holder touches them.
	bufs     [][]byte
	chunk    int
	flushBuf []byte
	cmd      []byte // a command sent on bulk OUT
	marker   []byte // resync's marker

	// recoverFn is d.recoverDevice as a func value made once, so that
	// starting a recovery (go d.recoverFn()) does not allocate.
	recoverFn func()

	mu      sync.Mutex
	clients int           // Initialize calls not yet undone; guarded by mu
	dev     *usb.Device   // the open device, or nil; guarded by mu, written with ioSem held
	out, in *usb.Endpoint // bulk OUT and bulk IN of dev; as dev
	dirty   bool          // the device may hold stale data: resynchronize before a scan; guarded by mu
	// recovering: recoverDevice runs (it holds ioSem); guarded by mu.
	recovering bool
	// recoverErr: why the last recovery failed, nil once the device was
	// resynchronized; guarded by mu.
	recoverErr error
	root       *Item        // the item tree, built by Initialize; guarded by mu
	props      Properties   // the flatbed's properties; guarded by mu
	cur        *acquisition // the acquisition running or unwinding, or nil; guarded by mu
	scans      uint64       // acquisitions started; guarded by mu
	hot        *hotplug     // the watch of Config.Hotplug while initialized, or nil; guarded by mu
}

// New returns a Driver in state Unloaded. It checks cfg; nothing touches
// the device before Initialize.
func New(cfg Config) (*Driver, error) {
	if cfg.Ring == nil || cfg.Open == nil {
		return nil, errInvalidArg.Wrap(errors.New("config needs a Ring and an Open function"))
	}
	maxQD := min(MaxQueueDepth, cfg.Ring.Entries()/2)
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = min(DefaultQueueDepth, maxQD)
	}
	if cfg.QueueDepth < 1 || cfg.QueueDepth > maxQD {
		return nil, errInvalidArg.Wrap(fmt.Errorf("queue depth %d outside 1..%d (the ring has %d entries)",
			cfg.QueueDepth, maxQD, cfg.Ring.Entries()))
	}
	if cfg.AbortTimeout < 0 {
		return nil, errInvalidArg.Wrap(fmt.Errorf("negative abort timeout %v", cfg.AbortTimeout))
	}
	if cfg.AbortTimeout == 0 {
		cfg.AbortTimeout = DefaultAbortTimeout
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	d := &Driver{cfg: cfg, ioSem: make(chan struct{}, 1), props: DefaultProperties()}
	d.recoverFn = d.recoverDevice
	return d, nil
}

// made reports whether New made d: ioSem is what a zero Driver would wait
// on for ever.
func (d *Driver) made() bool { return d != nil && d.ioSem != nil }

// The refusals of a Driver that New did not make (see Driver).
var (
	errNilDriver  = errInvalidArg.Wrap(fmt.Errorf("nil *Driver (make drivers with New): %w", ioring.ErrInvalid))
	errZeroDriver = errInvalidArg.Wrap(fmt.Errorf("zero Driver (make drivers with New): %w", ioring.ErrInvalid))
)

// errNotMade is the refusal of a call on d, which New did not make.
func (d *Driver) errNotMade() error {
	if d == nil {
		return errNilDriver
	}
	return errZeroDriver
}

// State returns the driver's current state.
func (d *Driver) State() State {
	if d == nil {
		return Unloaded
	}
	return d.m.State()
}

// Watch returns the current state and a channel closed at the next change
// of state (see Machine.Watch).
func (d *Driver) Watch() (State, <-chan struct{}) {
	if d == nil {
		return Unloaded, nil
	}
	return d.m.Watch()
}

// QueueDepth returns the number of bulk-IN transfers an acquisition keeps
// in flight.
func (d *Driver) QueueDepth() int {
	if d == nil {
		return 0
	}
	return d.cfg.QueueDepth
}

// lockIO takes ioSem, or fails when ctx ends first.
func (d *Driver) lockIO(ctx context.Context) error {
	select {
	case d.ioSem <- struct{}{}:
		return nil
	default:
	}
	select {
	case d.ioSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ErrBusy.Wrap(ctx.Err())
	}
}

func (d *Driver) unlockIO() { <-d.ioSem }

// unwindWait bounds the waits for an acquisition overtaken by a removal or
// a suspend to finish unwinding, in calls that have no context.
func (d *Driver) unwindWait() time.Duration { return 2*d.cfg.AbortTimeout + time.Second }

// Initialize is drvInitializeWia: the first call opens the device, probes
// it (aborting any job it runs and flushing stale data), builds the item
// tree and resets the flatbed's properties, and moves Unloaded to Idle;
// later calls only count one more client. It fails with ErrOffline when the
// device cannot be opened, or at once while the driver is Removed (it
// waits for no acquisition or reconnection then), ErrBusy at once when
// called from Config.Open, ErrDeviceCommunication when it does not answer
// the probe, and ErrBusy when ctx has ended before the call (it then starts
// nothing, counts no client) or ends while another call uses the device.
// A nil ctx fails with E_INVALIDARG.
func (d *Driver) Initialize(ctx context.Context) error {
	if !d.made() {
		return d.errNotMade()
	}
	if ctx == nil {
		return errInvalidArg.Wrap(errors.New("nil context"))
	}
	if err := ctx.Err(); err != nil {
		// A context that has already ended starts nothing: no open, no
		// probe, no hotplug watch, and no client counted.
		return ErrBusy.Wrap(err)
	}
	if ok, err := d.addClient(); ok || err != nil {
		return err
	}
	if d.inOpen() {
		return errInOpen
	}
	if err := d.lockIO(ctx); err != nil {
		return err
	}
	defer d.unlockIO()
	if ok, err := d.addClient(); ok || err != nil { // another first Initialize won
		return err
	}
	if _, _, err := Transition(d.m.State(), Initialize); err != nil {
		return err
	}
	hot, err := d.startHotplug()
	if err != nil {
		return err
	}
	// A failed Initialize keeps no watch; deferred, so that a panic in
	// Config.Open does not leak the watcher either.
	started := false
	defer func() {
		if !started {
			hot.stop()
		}
	}()
	dev, err := d.openDevice(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.setDevice(dev)
	d.dirty, d.recoverErr = false, nil
	d.root = NewItemTree()
	d.props = DefaultProperties()
	d.clients = 1
	d.mu.Unlock()
	if _, err := d.m.Fire(Initialize); err != nil {
		d.mu.Lock()
		d.clients = 0
		d.closeDeviceLocked()
		d.mu.Unlock()
		return err
	}
	started = true
	if hot != nil {
		d.mu.Lock()
		d.hot = hot
		d.mu.Unlock()
		hot.run(d, dev.Desc())
	}
	return nil
}

// addClient counts one more client of an initialized driver and reports
// whether it did. Removed refuses Initialize at once (the table's error,
// ErrOffline), without waiting for the device, which an acquisition
// overtaken by the removal or a reconnection may hold. False with no
// error means the driver is Unloaded: the caller goes on as the first
// Initialize. A first Initialize counts its client before it moves the
// driver out of Unloaded: a call in between is not counted, and waits for
// that Initialize (lockIO) before it looks again, rather than return with
// the driver still Unloaded (and uncounted, if that Initialize fails).
func (d *Driver) addClient() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.clients == 0 {
		return false, nil
	}
	switch st := d.m.State(); st {
	case Removed:
		_, _, err := Transition(st, Initialize)
		return false, err
	case Unloaded:
		return false, nil
	}
	d.clients++
	return true, nil
}

// Uninitialize is drvUnInitializeWia: it undoes one Initialize. The last
// one closes the device and moves the driver to Unloaded (from Idle,
// Locked, Suspended or Removed), and ends the hotplug watch
// (Config.Hotplug): its goroutine has returned and its watcher is closed
// when Uninitialize returns. The last one fails with ErrBusy while a
// transfer runs; one of several only counts its client out, whatever
// runs. Any fails with ErrNotInitialized in Unloaded. A last Uninitialize
// called from the watcher's Next, on the watch's own goroutine, cannot
// wait for that goroutine: it returns with the watch ended, and the
// goroutine returns as soon as the call that made it does. One called
// from Config.Open (as an arrival reopens the device) fails with ErrBusy
// at once: the reopen holds the device; so does an Initialize from there
// that would have to wait for it.
func (d *Driver) Uninitialize() error {
	if !d.made() {
		return d.errNotMade()
	}
	d.mu.Lock()
	switch {
	case d.clients == 0:
		d.mu.Unlock()
		_, err := d.m.Fire(Uninitialize) // refused: ErrNotInitialized
		if err == nil {
			err = ErrNotInitialized
		}
		return err
	case d.clients > 1:
		d.clients--
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	if d.m.State().Busy() {
		return ErrBusy
	}
	if d.inOpen() {
		return errInOpen
	}
	// The hotplug watch ends last, once ioSem is free again: its
	// goroutine may be delivering an event that waits for ioSem.
	var hot *hotplug
	defer func() { hot.stop() }()
	// An acquisition overtaken by a removal or suspend may still unwind.
	ctx, cancel := context.WithTimeout(context.Background(), d.unwindWait())
	defer cancel()
	if err := d.lockIO(ctx); err != nil {
		return err
	}
	defer d.unlockIO()
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.clients {
	case 0:
		return ErrNotInitialized
	case 1:
	default:
		d.clients--
		return nil
	}
	if _, err := d.m.Fire(Uninitialize); err != nil {
		return err
	}
	d.clients = 0
	d.closeDeviceLocked()
	hot, d.hot = d.hot, nil
	return nil
}

// setDevice makes dev the driver's device; openDevice checked it. d.mu
// and ioSem held.
func (d *Driver) setDevice(dev *usb.Device) {
	d.dev = dev
	d.out, d.in, _ = scannerEndpoints(dev)
}

// closeDeviceLocked closes the device, if any. d.mu and ioSem held; no
// transfer is pending (ioSem).
func (d *Driver) closeDeviceLocked() {
	if d.dev != nil {
		_ = d.dev.Close()
	}
	d.dev, d.out, d.in = nil, nil, nil
}

// inOpen reports whether the caller runs inside Config.Open, called by
// openDevice on this goroutine with ioSem held.
func (d *Driver) inOpen() bool {
	g := d.opener.Load()
	return g != 0 && g == goid.ID()
}

// errInOpen is the error of an Initialize or Uninitialize called from
// Config.Open.
var errInOpen = ErrBusy.Wrap(errors.New("called from Config.Open, while the driver opens the device"))

// openDevice opens the device and probes it. ioSem held.
func (d *Driver) openDevice(ctx context.Context) (*usb.Device, error) {
	d.opener.Store(goid.ID())
	dev, err := func() (*usb.Device, error) {
		defer d.opener.Store(0) // after a panic too
		return d.cfg.Open(ctx)
	}()
	if err != nil {
		return nil, ErrOffline.Wrap(fmt.Errorf("open device: %w", err))
	}
	if dev == nil {
		return nil, ErrOffline.Wrap(errors.New("open device: Config.Open returned no device and no error"))
	}
	out, in, err := scannerEndpoints(dev)
	if err != nil {
		_ = dev.Close()
		return nil, ErrDeviceCommunication.Wrap(fmt.Errorf("device %v is not a scanner: %w", dev.Desc(), err))
	}
	if err := d.probe(ctx, dev, out, in); err != nil {
		_ = dev.Close()
		return nil, err
	}
	return dev, nil
}

// Items returns a copy of the item tree: the root and the flatbed. It fails
// with ErrNotInitialized before Initialize.
func (d *Driver) Items() (*Item, error) {
	if !d.made() {
		return nil, d.errNotMade()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.root == nil || d.clients == 0 {
		return nil, ErrNotInitialized
	}
	return d.root.clone(), nil
}

func (it *Item) clone() *Item {
	c := &Item{Name: it.Name, Kind: it.Kind}
	for _, ch := range it.Children {
		c.Children = append(c.Children, ch.clone())
	}
	return c
}

// checkItem refuses an item that has no image data.
func checkItem(item *Item) error {
	if item == nil || item.Kind != ItemFlatbed {
		name := "<nil>"
		if item != nil {
			name = fmt.Sprintf("%q (%v)", item.Name, item.Kind)
		}
		return errInvalidArg.Wrap(fmt.Errorf("item %s has no image properties; use the flatbed", name))
	}
	return nil
}

// loaded returns ErrNotInitialized in Unloaded, nil otherwise.
func (d *Driver) loaded() error {
	if d.m.State() == Unloaded {
		return ErrNotInitialized
	}
	return nil
}

// ReadItemProperties is drvReadItemProperties: the values of the flatbed's
// properties ids, in order. It works in every state but Unloaded. An
// unknown id fails with a *PropertyError.
func (d *Driver) ReadItemProperties(item *Item, ids ...PropID) ([]PropValue, error) {
	if !d.made() {
		return nil, d.errNotMade()
	}
	if err := d.loaded(); err != nil {
		return nil, err
	}
	if err := checkItem(item); err != nil {
		return nil, err
	}
	d.mu.Lock()
	p := d.props
	d.mu.Unlock()
	return p.Read(ids...)
}

// Properties returns a copy of the flatbed's properties.
func (d *Driver) Properties() Properties {
	if d == nil {
		return Properties{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.props
}

// ValidateItemProperties is drvValidateItemProperties: it reports whether
// changes would be accepted by WriteItemProperties now, without applying
// them: nil, or the *PropertyError (naming the property, the value and the
// allowed range) of the first refused one.
func (d *Driver) ValidateItemProperties(item *Item, changes ...PropValue) error {
	if !d.made() {
		return d.errNotMade()
	}
	if err := d.loaded(); err != nil {
		return err
	}
	if err := checkItem(item); err != nil {
		return err
	}
	d.mu.Lock()
	p := d.props
	d.mu.Unlock()
	return p.Write(changes...)
}

// WriteItemProperties is drvWriteItemProperties: it applies changes
// atomically (see Properties.Write): all or none. As in WIA it needs the
// lock: it fails with ErrNotLocked in Idle, ErrBusy during a transfer (which
// uses the values it started with), and ErrOffline or ErrNotInitialized
// where nothing is allowed. A refused value fails with a *PropertyError
// naming the property and the allowed range.
func (d *Driver) WriteItemProperties(item *Item, changes ...PropValue) error {
	if !d.made() {
		return d.errNotMade()
	}
	if err := checkItem(item); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s := d.m.State(); s {
	case Locked:
	case Idle:
		return ErrNotLocked
	default:
		if _, _, err := Transition(s, Acquire); err != nil {
			return err
		}
		return ErrBusy
	}
	return d.props.Write(changes...)
}

// Lock is drvLockWiaDevice: it takes the device for the caller until
// Unlock. While another client holds it (Locked, or a transfer runs) Lock
// waits; when ctx ends first it returns ErrBusy (wrapping ctx's error),
// and so it does, taking nothing, when ctx has ended before the call.
// It also waits for the device to recover from the last acquisition (see
// CancelPendingIO) and, if that recovery failed, resynchronizes the device
// first: a device that does not answer fails the Lock with
// ErrNotRecovered, as does ctx ending while the device still recovers.
// In Unloaded, Suspended and Removed it fails at once (ErrNotInitialized,
// ErrOffline), and with a nil ctx it fails with E_INVALIDARG. The lock is
// not tied to a goroutine.
func (d *Driver) Lock(ctx context.Context) error {
	if !d.made() {
		return d.errNotMade()
	}
	if ctx == nil {
		return errInvalidArg.Wrap(errors.New("nil context"))
	}
	if err := ctx.Err(); err != nil {
		// A context that has already ended starts nothing: not even the
		// lock of an idle device (and its resynchronization, checkDevice).
		return ErrBusy.Wrap(err)
	}
	for {
		s, changed := d.m.Watch()
		switch s {
		case Idle:
			if err := d.checkDevice(ctx); err != nil {
				return err
			}
			_, err := d.m.Fire(Lock)
			if err == nil {
				return nil
			}
			continue // lost the race: look again
		case Locked, Transferring, Canceling:
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return ErrBusy.Wrap(ctx.Err())
			}
		}
		_, _, err := Transition(s, Lock)
		return err
	}
}

// Unlock is drvUnLockWiaDevice: it releases the lock (Locked to Idle). It
// fails with ErrBusy during a transfer, ErrNotLocked in Idle, and
// ErrOffline in Suspended and Removed (a suspend or a removal ended the
// lock already).
func (d *Driver) Unlock() error {
	if !d.made() {
		return d.errNotMade()
	}
	_, err := d.m.Fire(Unlock)
	return err
}

// NotifyPnpEvent is drvNotifyPnpEvent. It may run concurrently with a
// transfer, from any goroutine:
//
//   - EventCancelIO fires the running transfer's cancel token and returns
//     at once; the transfer unwinds as its completions arrive
//     (CancelPendingIO also waits for that, not for the device's recovery
//     after it). With no transfer, or one already canceling, it is a no-op
//     that returns nil.
//   - EventDeviceDisconnected moves the driver to Removed (canceling a
//     transfer); calls then fail with ErrOffline.
//   - EventDeviceConnected, in Removed, checks the device (reopening it if
//     the old one is gone) and moves to Idle; clients must Lock again. It
//     fails with ErrOffline, staying Removed, if the device cannot be
//     opened or does not answer.
//
// With Config.Hotplug the driver delivers the removal and the arrival of
// its device itself, through this same method, when the watcher reports
// them; an application may still send them too (a second one is a no-op).
//   - EventPowerSuspend cancels a transfer, waits for its I/O to complete
//     (within about 2×AbortTimeout) and moves to Suspended; EventPowerResume moves
//     back to Idle, and the next scan first resynchronizes the device.
//
// An unknown event returns ErrInvalidEvent and changes nothing.
func (d *Driver) NotifyPnpEvent(ev Event) error {
	if !d.made() {
		return d.errNotMade()
	}
	if err := ev.Validate(); err != nil {
		return err
	}
	switch ev {
	case EventDeviceConnected:
		return d.reconnect()
	case EventPowerSuspend, EventDeviceDisconnected:
		d.mu.Lock()
		if s := d.m.State(); s != Unloaded && s != Removed {
			d.dirty = true
		}
		d.mu.Unlock()
	}
	if _, err := d.m.Notify(ev); err != nil {
		return err
	}
	if ev == EventPowerSuspend {
		ctx, cancel := context.WithTimeout(context.Background(), d.unwindWait())
		defer cancel()
		_ = d.waitUnwound(ctx)
	}
	return nil
}

// reconnect handles EventDeviceConnected. ioSem serializes it with the
// acquisition it may have to wait for.
func (d *Driver) reconnect() error {
	if d.m.State() != Removed {
		return nil // a no-op: see the table
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.unwindWait())
	defer cancel()
	if err := d.lockIO(ctx); err != nil {
		return err
	}
	defer d.unlockIO()
	if d.m.State() != Removed {
		return nil
	}
	// The old device may still be there (an event without an unplug):
	// keep it if it answers.
	d.mu.Lock()
	old, out, in := d.dev, d.out, d.in
	d.mu.Unlock()
	if old != nil {
		if err := d.probe(ctx, old, out, in); err == nil {
			d.mu.Lock()
			d.dirty, d.recoverErr = false, nil
			d.mu.Unlock()
			_, err := d.m.Fire(DeviceConnected)
			return err
		}
		d.mu.Lock()
		d.closeDeviceLocked()
		d.mu.Unlock()
	}
	dev, err := d.openDevice(ctx)
	if err != nil {
		if !errors.Is(err, ErrOffline) { // opened, but no scanner or no answer
			err = ErrOffline.Wrap(err)
		}
		return err
	}
	d.mu.Lock()
	d.setDevice(dev)
	d.dirty, d.recoverErr = false, nil
	d.mu.Unlock()
	_, err = d.m.Fire(DeviceConnected)
	return err
}

// CancelPendingIO is IWiaItemExtras::CancelPendingIO: it sends
// EventCancelIO and returns as soon as every I/O of the canceled
// acquisition has delivered its completion: its buffers are free, the
// driver is Locked again, and the acquisition returns ErrCanceled (at once,
// or when its progress callback or sink write in progress returns; a
// cancel that comes after the last chunk was written, from the last
// progress report say, loses the race, and the acquisition succeeds). It does
// not wait for the device: the device's recovery (abort of the job, flush
// of its IN pipe, reset and resynchronization if it does not answer within
// AbortTimeout) runs after, in the background, and the next Lock or
// AcquireItemData waits for it under its own context. So control comes back
// in the time the engine takes to cancel, even when the device hangs.
//
// Any goroutine may call it at any time, any number of times, including
// from the acquisition's own progress callback or sink (it does not wait
// for the acquiring goroutine); with nothing pending it is a no-op that
// returns nil. When ctx ends first it returns ErrBusy wrapping ctx's error
// (the unwinding goes on); a nil ctx never ends. It does not allocate.
func (d *Driver) CancelPendingIO(ctx context.Context) error {
	if !d.made() {
		return d.errNotMade()
	}
	// Not refused: a cancel must always go through.
	if ctx == nil {
		ctx = context.Background()
	}
	if _, err := d.m.Notify(EventCancelIO); err != nil {
		return err
	}
	return d.waitUnwound(ctx)
}

// waitUnwound waits until the current acquisition, if it was stopped, has
// unwound (every I/O's completion delivered, the transfer ended in the
// machine). One that was not stopped (it started after the cancel) is not
// waited for.
func (d *Driver) waitUnwound(ctx context.Context) error {
	d.mu.Lock()
	a := d.cur
	d.mu.Unlock()
	// Canceling without a stopped acquisition: the cancel that moved the
	// machine there is running its cancel function in another goroutine.
	if a == nil || (!a.isStopped() && d.m.State() != Canceling) {
		return nil
	}
	select {
	case <-a.unwound:
		return nil
	case <-ctx.Done():
		return ErrBusy.Wrap(ctx.Err())
	}
}
