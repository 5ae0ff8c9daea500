// Package minidrv is a WIA-style scanner minidriver whose CancelPendingIO
// cancels every current I/O operation at once and returns the driver to idle.
//
// Driver mirrors IWiaMiniDrv over a usb.Device and an ioring.Ring:
// Initialize, Lock, ReadItemProperties, ValidateItemProperties,
// WriteItemProperties, AcquireItemData, Unlock, NotifyPnpEvent,
// Uninitialize, and the application-facing CancelPendingIO. It speaks the
// scanner's command set, package scanproto, which the device implements
// too; tests use the simulated scanner of package usbsim, opened with
// minidrvtest.SimOpener, and nothing in this package imports either. Underneath are a state machine with
// every transition in one table (State, Input, Event, Transition, Machine),
// the item tree and the flatbed's properties (Item, Properties), and errors
// that carry their WIA HRESULT (Error, HResult).
//
// # States
//
//	Unloaded -> Idle <-> Locked <-> Transferring -> Canceling -> Locked
//	any loaded state -> Removed -> Idle;  awake states -> Suspended -> Idle
//
// Initialize opens and probes the device (Unloaded to Idle); Lock takes it
// for one client (Idle to Locked; a second locker waits, and gets ErrBusy
// when its context ends); AcquireItemData runs in Transferring and returns
// to Locked; Unlock goes back to Idle. A call the current state does not
// allow returns a typed error (ErrNotLocked, ErrBusy, ErrOffline, ...) and
// changes nothing. Unplugging the device (EventDeviceDisconnected, or a
// transfer finding it gone) leads to Removed; a suspend to Suspended; both
// end the lock, and their way back leads to Idle.
//
// # Cancellation
//
// AcquireItemData keeps several overlapped bulk-IN transfers in flight,
// all covered by one cancel token. NotifyPnpEvent(EventCancelIO) may run
// concurrently with it: it fires the token (Transferring to Canceling) and
// returns at once. The transfer then unwinds: it waits for every
// completion (its buffers live until then), sends the device an abort and
// reads its IN pipe up to the flush marker, so the next acquisition starts
// clean, and moves to Locked. CancelPendingIO sends the event and waits for
// that unwinding (or its context); it may be called at any time, from any
// goroutine, any number of times, and with nothing pending it is a no-op.
// The progress callback returning false, or the acquisition's context
// ending, cancel the same way.
//
// A canceled acquisition returns an error for which errors.Is(err,
// ErrCanceled) holds: WIA's S_FALSE, an outcome rather than a failure. The
// cancel is sticky for the rest of that transfer, and the sink holds whole
// chunks (ChunkSize) only. A hung device does not hang the caller: the
// abort and flush are bounded by Config.AbortTimeout, after which the
// device is reset and resynchronized before the next scan.
//
// # Example
//
//	d, _ := minidrv.New(minidrv.Config{Ring: ring, Open: open} // open wraps usb.Open)
//	d.Initialize(ctx)
//	root, _ := d.Items()
//	flatbed := root.Find("Flatbed")
//	d.Lock(ctx)
//	d.WriteItemProperties(flatbed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300})
//	err := d.AcquireItemData(ctx, flatbed, file, func(p minidrv.Progress) bool {
//		fmt.Printf("\r%3d%%", p.Percent)
//		return true // false cancels
//	})
//	// from any goroutine, at any time: d.CancelPendingIO(ctx)
//	d.Unlock()
//	d.Uninitialize()
//
// Machine is safe for concurrent use, and so is Driver; Properties and Item
// are plain values the driver guards.
package minidrv
