package minidrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv/scanproto"
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
	// The driver closes the devices it opened, and uses the first bulk OUT
	// and bulk IN endpoints of the device's interface. For a real device
	// (or the scanner served as a USB gadget) wrap usb.Open, and pass
	// usb.WithZeroPacket; tests open the simulated scanner with
	// minidrvtest.SimOpener.
	Open func(ctx context.Context) (*usb.Device, error)
	// QueueDepth is the number of bulk-IN transfers an acquisition keeps in
	// flight: 1..MaxQueueDepth, and at most half the ring's entries. 0
	// means DefaultQueueDepth (or less on a small ring).
	QueueDepth int
	// AbortTimeout bounds the abort and flush after a cancel, and a probe
	// of the device (Initialize, reconnection, or a resynchronization
	// before a scan). 0 means DefaultAbortTimeout.
	AbortTimeout time.Duration
	// StallTimeout is how long an acquisition waits for its next chunk
	// before it fails with ErrDeviceCommunication. 0 means
	// DefaultStallTimeout; a negative value waits for ever (a cancel still
	// ends the wait).
	StallTimeout time.Duration
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
type Driver struct {
	cfg Config
	m   Machine

	// ioSem (capacity 1) is held by whoever uses the device: an
	// acquisition from before it starts until it has unwound, the first
	// Initialize, a reconnection and the last Uninitialize. Holding it is
	// what allows reading dev, in, out, bufs and dirty without mu, and
	// writing bufs and chunk.
	ioSem chan struct{}

	// Buffers of the acquisitions, reused from one to the next; only the
	// ioSem holder touches them.
	bufs     [][]byte
	chunk    int
	flushBuf []byte

	mu      sync.Mutex
	clients int           // Initialize calls not yet undone; guarded by mu
	dev     *usb.Device   // the open device, or nil; guarded by mu, written with ioSem held
	out, in *usb.Endpoint // bulk OUT and bulk IN of dev; as dev
	dirty   bool          // the device may hold stale data: resynchronize before a scan; guarded by mu
	root    *Item         // the item tree, built by Initialize; guarded by mu
	props   Properties    // the flatbed's properties; guarded by mu
	cur     *acquisition  // the acquisition running or unwinding, or nil; guarded by mu
	scans   uint64        // acquisitions started; guarded by mu
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
	return &Driver{cfg: cfg, ioSem: make(chan struct{}, 1), props: DefaultProperties()}, nil
}

// State returns the driver's current state.
func (d *Driver) State() State { return d.m.State() }

// Watch returns the current state and a channel closed at the next change
// of state (see Machine.Watch).
func (d *Driver) Watch() (State, <-chan struct{}) { return d.m.Watch() }

// QueueDepth returns the number of bulk-IN transfers an acquisition keeps
// in flight.
func (d *Driver) QueueDepth() int { return d.cfg.QueueDepth }

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
// device cannot be opened, ErrDeviceCommunication when it does not answer
// the probe, and ErrBusy when ctx ends while another call uses the device.
func (d *Driver) Initialize(ctx context.Context) error {
	if d.addClient() {
		return nil
	}
	if err := d.lockIO(ctx); err != nil {
		return err
	}
	defer d.unlockIO()
	if d.addClient() { // another first Initialize won
		return nil
	}
	if _, _, err := Transition(d.m.State(), Initialize); err != nil {
		return err
	}
	dev, err := d.openDevice(ctx)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.setDevice(dev)
	d.dirty = false
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
	return nil
}

// addClient counts one more client of an initialized driver and reports
// whether it did; false means the driver is Unloaded (or Removed, which
// refuses Initialize: see the error in Initialize's path).
func (d *Driver) addClient() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.clients == 0 {
		return false
	}
	if d.m.State() == Removed {
		return false
	}
	d.clients++
	return true
}

// Uninitialize is drvUnInitializeWia: it undoes one Initialize. The last
// one closes the device and moves the driver to Unloaded (from Idle,
// Locked, Suspended or Removed); it fails with ErrBusy while a transfer
// runs, and ErrNotInitialized in Unloaded.
func (d *Driver) Uninitialize() error {
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

// openDevice opens the device and probes it. ioSem held.
func (d *Driver) openDevice(ctx context.Context) (*usb.Device, error) {
	dev, err := d.cfg.Open(ctx)
	if err != nil {
		return nil, ErrOffline.Wrap(fmt.Errorf("open device: %w", err))
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

// probe resynchronizes the device within AbortTimeout (or until ctx
// ends) and maps failures to typed errors.
func (d *Driver) probe(ctx context.Context, dev *usb.Device, out, in *usb.Endpoint) error {
	tok := d.cfg.Ring.NewToken()
	stop := tok.Bind(ctx)
	defer stop()
	err := d.resync(dev, out, in, tok, time.Now().Add(d.cfg.AbortTimeout))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, usb.ErrNoDevice):
		return ErrOffline.Wrap(err)
	}
	return ErrDeviceCommunication.Wrap(fmt.Errorf("device did not answer within %v: %w", d.cfg.AbortTimeout, err))
}

// syncSeq numbers the markers of resync.
var syncSeq atomic.Uint64

// resync brings the device to a known state whatever it holds: it aborts
// any job, then asks the device to echo a unique marker, and reads bulk IN
// until the marker comes back. The device runs commands in order, so
// everything before the marker is stale (image data, flush markers of
// earlier aborts that were never read), and nothing follows it. A halted
// endpoint is cleared and the sequence started again. ioSem held, nothing
// pending on the endpoints.
func (d *Driver) resync(dev *usb.Device, out, in *usb.Endpoint, tok *ioring.Token, deadline time.Time) error {
	buf := d.flushBuffer(in)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		marker := fmt.Appendf(nil, "cancelio sync %016x", syncSeq.Add(1))
		if err = d.command(dev, out, scanproto.AbortCommand(), tok, deadline); err != nil {
			if errors.Is(err, usb.ErrStall) {
				continue
			}
			return err
		}
		if err = d.command(dev, out, scanproto.EchoCommand(marker), tok, deadline); err != nil {
			if errors.Is(err, usb.ErrStall) {
				continue
			}
			return err
		}
		for {
			var n int
			n, err = d.transfer(in, buf, tok, deadline)
			if errors.Is(err, usb.ErrStall) {
				// Clearing the halt discards what the device had sent,
				// perhaps the marker: start again.
				if err = dev.ClearHalt(in.Desc().Address); err != nil {
					return err
				}
				err = usb.ErrStall
				break
			}
			if err != nil {
				return err
			}
			if bytes.Equal(buf[:n], marker) {
				return nil
			}
		}
	}
	return err
}

// transfer runs one transfer on ep covered by tok and waits for it. A
// non-zero deadline bounds it: when it passes, tok is canceled (a fresh
// token when tok is nil), so every transfer tok covers stops, and the
// result is usb.ErrTimeout. Cancels go through tokens only, never through a
// context given to Request.Wait.
func (d *Driver) transfer(ep *usb.Endpoint, buf []byte, tok *ioring.Token, deadline time.Time) (int, error) {
	var expired atomic.Bool
	if !deadline.IsZero() {
		dl := time.Until(deadline)
		if dl <= 0 {
			return 0, usb.ErrTimeout
		}
		if tok == nil {
			tok = d.cfg.Ring.NewToken()
		}
		t := tok
		timer := time.AfterFunc(dl, func() { expired.Store(true); _ = t.Cancel() })
		defer timer.Stop()
	}
	q, err := ep.Start(buf, usb.Xfer{Token: tok})
	if err != nil {
		return 0, err
	}
	c, err := q.Wait(context.Background())
	if err != nil {
		return 0, err
	}
	if c.Err != nil && expired.Load() && errors.Is(c.Err, usb.ErrCanceled) {
		return c.N, usb.ErrTimeout
	}
	return c.N, c.Err
}

// command sends one command on bulk OUT and waits for the device to accept
// it; a stall is cleared before ErrStall is returned.
func (d *Driver) command(dev *usb.Device, out *usb.Endpoint, cmd []byte, tok *ioring.Token, deadline time.Time) error {
	_, err := d.transfer(out, cmd, tok, deadline)
	if errors.Is(err, usb.ErrStall) {
		if cerr := dev.ClearHalt(out.Desc().Address); cerr != nil {
			return cerr
		}
	}
	return err
}

// Items returns a copy of the item tree: the root and the flatbed. It fails
// with ErrNotInitialized before Initialize.
func (d *Driver) Items() (*Item, error) {
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
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.props
}

// ValidateItemProperties is drvValidateItemProperties: it reports whether
// changes would be accepted by WriteItemProperties now, without applying
// them: nil, or the *PropertyError (naming the property, the value and the
// allowed range) of the first refused one.
func (d *Driver) ValidateItemProperties(item *Item, changes ...PropValue) error {
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
// waits; when ctx ends first it returns ErrBusy (wrapping ctx's error).
// In Unloaded, Suspended and Removed it fails at once (ErrNotInitialized,
// ErrOffline). The lock is not tied to a goroutine.
func (d *Driver) Lock(ctx context.Context) error {
	for {
		s, changed := d.m.Watch()
		switch s {
		case Idle:
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
	_, err := d.m.Fire(Unlock)
	return err
}

// cause is what stopped an acquisition first.
type cause uint8

const (
	causeNone     cause = iota
	causeCanceled       // EventCancelIO, CancelPendingIO, the progress callback, ctx
	causeOffline        // removal or suspend
	causeFailed         // a transfer, the sink or the device failed
)

// acquisition is one AcquireItemData call, from BeginTransfer until it has
// unwound.
type acquisition struct {
	tok     *ioring.Token
	stopped chan struct{} // closed at the first stop
	once    sync.Once
	why     cause // written once before stopped is closed
	err     error // the error of causeOffline and causeFailed; as why
	done    chan struct{}
	goid    uint64      // the acquiring goroutine
	inUser  atomic.Bool // the acquiring goroutine runs user code (progress, sink)
}

// stop ends the acquisition's I/O: the first call records why, fires the
// token (every transfer in flight is canceled, later ones never start) and
// closes stopped. Any goroutine, any number of times; it never blocks.
func (a *acquisition) stop(why cause, err error) {
	a.once.Do(func() {
		a.why, a.err = why, err
		_ = a.tok.Cancel()
		close(a.stopped)
	})
}

// isStopped reports whether stop was called.
func (a *acquisition) isStopped() bool {
	select {
	case <-a.stopped:
		return true
	default:
		return false
	}
}

// NotifyPnpEvent is drvNotifyPnpEvent. It may run concurrently with a
// transfer, from any goroutine:
//
//   - EventCancelIO fires the running transfer's cancel token and returns
//     at once; the transfer unwinds in its own goroutine (CancelPendingIO
//     also waits for that). With no transfer, or one already canceling, it
//     is a no-op that returns nil.
//   - EventDeviceDisconnected moves the driver to Removed (canceling a
//     transfer); calls then fail with ErrOffline.
//   - EventDeviceConnected, in Removed, checks the device (reopening it if
//     the old one is gone) and moves to Idle; clients must Lock again. It
//     fails with ErrOffline, staying Removed, if the device cannot be
//     opened or does not answer.
//   - EventPowerSuspend cancels a transfer, waits for it to unwind (within
//     about 2×AbortTimeout) and moves to Suspended; EventPowerResume moves
//     back to Idle, and the next scan first resynchronizes the device.
//
// An unknown event returns ErrInvalidEvent and changes nothing.
func (d *Driver) NotifyPnpEvent(ev Event) error {
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
			d.dirty = false
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
		return ErrOffline.Wrap(err)
	}
	d.mu.Lock()
	d.setDevice(dev)
	d.dirty = false
	d.mu.Unlock()
	_, err = d.m.Fire(DeviceConnected)
	return err
}

// CancelPendingIO is IWiaItemExtras::CancelPendingIO: it sends
// EventCancelIO and returns when the canceled transfer has unwound (every
// completion arrived, the job aborted on the device and its IN pipe
// flushed), or when ctx ends first (ErrBusy wrapping ctx's error; the
// unwinding goes on). Any goroutine may call it at any time, any number of
// times; with nothing pending it is a no-op that returns nil. Called from
// the acquisition's own progress callback or sink, it cannot wait for an
// unwinding that starts only when they return: it fires the cancel and
// returns nil.
func (d *Driver) CancelPendingIO(ctx context.Context) error {
	if _, err := d.m.Notify(EventCancelIO); err != nil {
		return err
	}
	return d.waitUnwound(ctx)
}

// waitUnwound waits until the current acquisition, if it was stopped, has
// unwound. One that was not stopped (it started after the cancel) is not
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
	if a.inUser.Load() && goid() == a.goid {
		return nil // called from the progress callback or the sink
	}
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ErrBusy.Wrap(ctx.Err())
	}
}

// goid returns the current goroutine's id, parsed from its stack header
// ("goroutine 18 [running]:"). It is used only to tell whether
// CancelPendingIO runs inside the acquisition's own callbacks, where
// waiting for the unwinding would deadlock.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	var id uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

// ScanParams returns the scan the device is asked for to deliver p's image.
// seed is the job's value in the start command (scanproto.ScanParams.Seed):
// the driver sends the number of acquisitions it started before, 0, 1, ...
func ScanParams(p Properties, seed uint64) scanproto.ScanParams {
	f := scanproto.FormatGray8
	switch p.DataType {
	case DataBW:
		f = scanproto.FormatBW1
	case DataColor:
		f = scanproto.FormatRGB24
	}
	return scanproto.ScanParams{
		DPI:    uint16(p.XResolution),
		Width:  uint32(p.XExtent),
		Height: uint32(p.YExtent),
		Format: f,
		Seed:   seed,
	}
}

// ChunkSize returns the size of one transfer of an acquisition with
// properties p: p.BufferSize, or less for a small image, so that the image
// takes at least MinProgressReports chunks, but never below BufferAlign.
// Each chunk is written to the sink with one Write; only the image's last
// chunk may be shorter.
func ChunkSize(p Properties) int {
	per := (p.ImageSize() + MinProgressReports - 1) / MinProgressReports
	per = (per + BufferAlign - 1) / BufferAlign * BufferAlign
	return int(max(min(int64(p.BufferSize), per), BufferAlign))
}

// AcquireItemData is drvAcquireItemData: it scans the flatbed item with the
// properties in force when it starts and streams the image to sink, after
// the PNM header if Format is FormatPNM. The driver must be Locked (it is
// Transferring meanwhile and Locked again after).
//
// The image moves in chunks of ChunkSize bytes through QueueDepth
// overlapped bulk-IN transfers kept in flight; each chunk is written to
// sink with one Write, in order. progress, if not nil, is called from the
// calling goroutine before the first transfer, after every chunk and at
// least once per ProgressInterval; Percent never decreases and reaches 100
// only on success. progress returning false cancels, as S_FALSE does in WIA.
//
// A cancel (progress, CancelPendingIO, EventCancelIO, or ctx ending) stops
// every transfer at once; the acquisition then waits for their
// completions, aborts the job on the device and flushes its IN pipe (within
// AbortTimeout), so the next acquisition gets no stale data, and returns an
// error for which errors.Is(err, ErrCanceled) holds (HResult: S_FALSE).
// The sink then holds whole chunks only, and no chunk arrives after the
// cancel. A cancel that comes after the last chunk was written loses the
// race: the acquisition succeeds. If the device does not answer the abort
// it is reset (its halt cleared) and resynchronized before the next scan.
//
// Other errors: the state's refusals (ErrNotLocked, ErrBusy, ErrOffline,
// ErrNotInitialized), ErrOffline when the device is removed or suspended
// meanwhile, ErrDeviceCommunication when a transfer fails or no data comes
// for StallTimeout, and the sink's own error. In each case the driver ends
// Locked, or Removed or Suspended after such an event.
func (d *Driver) AcquireItemData(ctx context.Context, item *Item, sink io.Writer, progress func(Progress) bool) error {
	if err := checkItem(item); err != nil {
		return err
	}
	if sink == nil {
		return errInvalidArg.Wrap(errors.New("nil sink"))
	}
	if _, _, err := Transition(d.m.State(), Acquire); err != nil {
		return err
	}
	// A transfer overtaken by a removal or suspend may still be unwinding.
	if err := d.lockIO(ctx); err != nil {
		return err
	}
	defer d.unlockIO()

	a := &acquisition{
		tok:     d.cfg.Ring.NewToken(),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
		goid:    goid(),
	}

	d.mu.Lock()
	p := d.props
	dev, out, in, dirty := d.dev, d.out, d.in, d.dirty
	d.cur = a
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		close(a.done)
	}()

	// The cancel runs in whoever fires the transition (Machine runs it
	// outside its lock, right after); the state then tells a cancel from a
	// removal or suspend.
	err := d.m.BeginTransfer(func() {
		why, err := causeCanceled, error(nil)
		if s := d.m.State(); s == Removed || s == Suspended {
			why, err = causeOffline, ErrOffline.Wrap(fmt.Errorf("device %v during the transfer", s))
		}
		a.stop(why, err)
	})
	if err != nil {
		return err
	}
	if in == nil || out == nil { // cannot happen in Locked; be safe
		a.stop(causeFailed, ErrOffline)
	}
	stopCtx := context.AfterFunc(ctx, func() { a.stop(causeCanceled, nil) })
	defer stopCtx()

	d.mu.Lock()
	params := ScanParams(p, d.scans)
	d.scans++
	d.mu.Unlock()

	complete, started := d.stream(a, p, params, dev, out, in, dirty, sink, progress)
	return d.finish(a, complete, started, dev, out, in)
}

// stream runs the acquisition until the image is complete or it stops; it
// returns whether the whole image went to the sink, and whether a job may
// have started on the device.
func (d *Driver) stream(a *acquisition, p Properties, params scanproto.ScanParams, dev *usb.Device, out, in *usb.Endpoint,
	dirty bool, sink io.Writer, progress func(Progress) bool) (complete, started bool) {
	total := p.ImageSize()
	var done int64 // bytes written to sink
	lastReport := time.Now()
	report := func() {
		if progress == nil || a.isStopped() {
			return
		}
		a.inUser.Store(true)
		ok := progress(Progress{Percent: int(done * 100 / total), Bytes: done, Total: total})
		a.inUser.Store(false)
		lastReport = time.Now()
		if !ok {
			a.stop(causeCanceled, nil)
		}
	}
	write := func(b []byte) bool {
		a.inUser.Store(true)
		n, err := sink.Write(b)
		a.inUser.Store(false)
		if err == nil && n != len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			a.stop(causeFailed, fmt.Errorf("minidrv: write to sink: %w", err))
			return false
		}
		return true
	}

	report() // 0%: may cancel before anything reaches the device
	if a.isStopped() {
		return false, false
	}
	if hdr := p.Header(); hdr != nil && !write(hdr) {
		return false, false
	}
	if dirty {
		if err := d.resync(dev, out, in, a.tok, time.Now().Add(d.cfg.AbortTimeout)); err != nil {
			d.ioFailed(a, "resynchronize the device", err)
			return false, false
		}
		d.mu.Lock()
		d.dirty = false
		d.mu.Unlock()
	}
	started = true
	var deadline time.Time // a device that does not take the command counts as stalled
	if d.cfg.StallTimeout > 0 {
		deadline = time.Now().Add(d.cfg.StallTimeout)
	}
	if err := d.command(dev, out, scanproto.StartScanCommand(params), a.tok, deadline); err != nil {
		d.ioFailed(a, "start the scan", err)
		return false, started
	}

	// Transfers in flight: bufs[head..head+inflight) in ring order. One
	// goroutine waits for them oldest first (they complete in order on one
	// endpoint) and hands the results over, so this one stays free to
	// report progress and watch for a stall.
	chunk := ChunkSize(p)
	bufs := d.buffers(chunk)
	qd := len(bufs)
	type result struct {
		n   int
		err error
	}
	reqs := make(chan ioring.Request, qd)
	results := make(chan result, qd)
	waiterDone := make(chan struct{})
	go func() {
		defer close(waiterDone)
		for q := range reqs {
			c, err := q.Wait(context.Background())
			if err == nil {
				err = c.Err
			}
			results <- result{c.N, err}
		}
	}()
	defer func() {
		close(reqs)
		<-waiterDone
	}()

	var requested int64      // bytes asked for: done plus the sizes in flight
	sizes := make([]int, qd) // the size of each slot's transfer in flight
	head, inflight := 0, 0
	var carry []byte // received, not yet a whole chunk
	stall := d.cfg.StallTimeout
	lastData := time.Now()
	period := ProgressInterval
	if stall > 0 {
		period = min(period, stall)
	}
	tick := time.NewTimer(period)
	defer tick.Stop()
	stopped := a.stopped
	for {
		for !a.isStopped() && inflight < qd && requested < total {
			i := (head + inflight) % qd
			buf := bufs[i][:min(int64(chunk), total-requested)]
			q, err := in.Start(buf, usb.Xfer{Token: a.tok})
			if err != nil {
				if errors.Is(err, ioring.ErrFull) && inflight > 0 {
					break // the shared ring is full: submit when one completes
				}
				d.ioFailed(a, "submit a transfer", err)
				break
			}
			reqs <- q
			sizes[i] = len(buf)
			inflight++
			requested += int64(len(buf))
		}
		if inflight == 0 {
			return done == total, started
		}
		select {
		case r := <-results:
			i := head
			head = (head + 1) % qd
			inflight--
			requested -= int64(sizes[i] - r.n) // a short transfer asks for the rest again
			if a.isStopped() {
				continue // drain: the data of a stopped acquisition is dropped
			}
			if r.err != nil {
				d.ioFailed(a, "read image data", r.err)
				continue
			}
			received := done + int64(len(carry))
			if r.n == 0 && received == 0 {
				// On USB a device ends a transfer of whole packets shorter
				// than it meant to send with a zero-length packet; one the
				// previous transfer did not need to read (the last of an
				// image, or of the stale data an abort flushed) comes
				// first. It carries nothing: ask again.
				continue
			}
			lastData = time.Now()
			if r.n == 0 || received+int64(r.n) > total {
				// Only a flush marker (or an echo) is empty: stale data.
				d.ioFailed(a, "read image data", fmt.Errorf("%w: %d bytes at offset %d of %d", errUnexpectedData, r.n, received, total))
				continue
			}
			// The sink gets whole chunks only: a short transfer (the
			// device cut a message) is carried over until the chunk is
			// complete. Aligned transfers go straight through.
			data := bufs[i][:r.n]
			if len(carry) == 0 && (r.n == chunk || done+int64(r.n) == total) {
				if !write(data) {
					continue
				}
				done += int64(r.n)
				report()
				continue
			}
			carry = append(carry, data...)
			for len(carry) >= chunk || (len(carry) > 0 && done+int64(len(carry)) == total) {
				k := min(len(carry), chunk)
				if !write(carry[:k]) {
					break
				}
				done += int64(k)
				carry = carry[:copy(carry, carry[k:])]
				report()
			}
		case <-stopped:
			stopped = nil // the drain goes on in the results case
		case <-tick.C:
			if time.Since(lastReport) >= ProgressInterval {
				report()
			}
			if stall > 0 && time.Since(lastData) >= stall {
				a.stop(causeFailed, ErrDeviceCommunication.Wrap(fmt.Errorf("no data from the device for %v", stall)))
			}
			tick.Reset(period)
		}
	}
}

// errUnexpectedData is the cause of a device that sent what was not asked
// for.
var errUnexpectedData = errors.New("unexpected data from the device")

// buffers returns QueueDepth buffers of chunk bytes, reused between
// acquisitions. ioSem held; every transfer on them has completed.
func (d *Driver) buffers(chunk int) [][]byte {
	if d.chunk < chunk || len(d.bufs) != d.cfg.QueueDepth {
		d.bufs = make([][]byte, d.cfg.QueueDepth)
		for i := range d.bufs {
			d.bufs[i] = make([]byte, chunk)
		}
		d.chunk = chunk
	}
	return d.bufs
}

// flushBuffer returns a buffer for reads that drop their data: one
// endpoint transfer, so that no read needs a bounce copy. ioSem held.
func (d *Driver) flushBuffer(in *usb.Endpoint) []byte {
	n := max(in.Desc().MaxTransfer, BufferAlign)
	if len(d.flushBuf) < n {
		d.flushBuf = make([]byte, n)
	}
	return d.flushBuf[:n]
}

// ioFailed stops the acquisition after a failed transfer or command. A
// device that went away moves the driver to Removed.
func (d *Driver) ioFailed(a *acquisition, what string, err error) {
	switch {
	case errors.Is(err, usb.ErrNoDevice):
		a.stop(causeOffline, ErrOffline.Wrap(fmt.Errorf("%s: %w", what, err)))
		_, _ = d.m.Fire(DeviceDisconnected)
	case errors.Is(err, ioring.ErrCanceled) && a.isStopped():
		// The acquisition's own cancel: its cause is recorded already.
	default:
		a.stop(causeFailed, ErrDeviceCommunication.Wrap(fmt.Errorf("%s: %w", what, err)))
	}
}

// finish unwinds a stopped acquisition and ends the transfer in the state
// machine: the data transfers have all completed when it runs. It returns
// the acquisition's result.
func (d *Driver) finish(a *acquisition, complete, started bool, dev *usb.Device, out, in *usb.Endpoint) error {
	if complete {
		_, _ = d.m.Fire(TransferDone)
		return nil
	}
	a.stop(causeFailed, nil) // no-op unless the stream ended without a cause
	// A user's cancel moves Transferring to Canceling; removals, suspends
	// and failures have moved or will move on by themselves.
	if a.why == causeCanceled {
		_, _ = d.m.Fire(CancelIO)
	}
	var unwindErr error
	if started && d.m.State() != Removed {
		unwindErr = d.abort(dev, out, in)
	}
	var err error
	switch a.why {
	case causeCanceled:
		err = ErrCanceled.Wrap(ioring.ErrCanceled)
		if unwindErr != nil {
			err = ErrCanceled.Wrap(unwindErr)
		}
		_, _ = d.m.Fire(Unwound)
	case causeOffline:
		err = a.err
		_, _ = d.m.Fire(TransferFailed)
	default:
		err = a.err
		if err == nil {
			err = ErrDeviceCommunication.Wrap(errors.New("transfer ended early"))
		}
		if unwindErr != nil {
			err = fmt.Errorf("%w (then %v)", err, unwindErr)
		}
		_, _ = d.m.Fire(TransferFailed)
	}
	return err
}

// abort stops the job on the device and flushes bulk IN: it sends the abort
// command and reads until the device's flush marker, a zero-length packet;
// everything before it is stale. It takes at most AbortTimeout. A device
// that does not answer in time is reset: the halts of both bulk endpoints
// are cleared (which also discards what the device has sent), and the
// device is resynchronized before the next scan. A device found gone moves
// the driver to Removed. No transfer is pending on the endpoints.
func (d *Driver) abort(dev *usb.Device, out, in *usb.Endpoint) error {
	deadline := time.Now().Add(d.cfg.AbortTimeout)
	err := d.command(dev, out, scanproto.AbortCommand(), nil, deadline)
	if err == nil {
		buf := d.flushBuffer(in)
		for {
			var n int
			n, err = d.transfer(in, buf, nil, deadline)
			if err != nil || n == 0 {
				break
			}
		}
	}
	if err == nil {
		return nil
	}
	if errors.Is(err, usb.ErrNoDevice) {
		_, _ = d.m.Fire(DeviceDisconnected)
		return fmt.Errorf("abort the job: %w", err)
	}
	d.mu.Lock()
	d.dirty = true
	d.mu.Unlock()
	cerr := errors.Join(dev.ClearHalt(in.Desc().Address), dev.ClearHalt(out.Desc().Address))
	if errors.Is(cerr, usb.ErrNoDevice) {
		_, _ = d.m.Fire(DeviceDisconnected)
	}
	return fmt.Errorf("the device did not answer the abort within %v (%w); it was reset and will be resynchronized before the next scan", d.cfg.AbortTimeout, err)
}
