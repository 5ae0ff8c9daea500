// Package minidrv is a WIA-style scanner minidriver whose CancelPendingIO
// cancels every current I/O operation at once and returns as soon as each
// has completed, with the driver Locked again (the WIA lock is the
// application's; Unlock takes it to Idle).
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
//	                       ^             |              |
//	                       |   ended early [recover]    | [recover]
//	                       +-------------+--------------+
//	                       recovery runs in Locked (and Idle after Unlock);
//	                       the next Lock or Acquire waits for it
//	any loaded state -> Removed -> Idle;  awake states -> Suspended -> Idle
//	   (unplug: event or hotplug)  (replug: event or hotplug, see Hotplug)
//
// Initialize opens and probes the device (Unloaded to Idle); Lock takes it
// for one client (Idle to Locked; a second locker waits, and gets ErrBusy
// when its context ends); AcquireItemData runs in Transferring and returns
// to Locked; Unlock goes back to Idle. A call the current state does not
// allow returns a typed error (ErrNotLocked, ErrBusy, ErrOffline, ...) and
// changes nothing. Unplugging the device (EventDeviceDisconnected, or a
// transfer finding it gone) leads to Removed; a suspend to Suspended; both
// end the lock, and their way back leads to Idle. A transfer that ends
// without its whole image leaves the device to be recovered: the rows that
// end it carry ActionRecover (see State).
//
// # Hotplug
//
// WIA tells a minidriver of its device's arrival and removal through
// drvNotifyPnpEvent. A Driver whose Config.Hotplug is set does the same for
// itself: from the first Initialize to the last Uninitialize a goroutine
// reads a HotplugWatcher (the kernel's uevents through the ring, WatchUSB;
// or the simulated scanner's, minidrvtest.SimHotplug) and hands the events
// of its device (Config.HotplugMatch: vendor, product and serial number,
// by default those of the device it opened) to NotifyPnpEvent:
//
//	device unplugged --> EventDeviceDisconnected --> Removed   (a running acquisition's transfers
//	                                                            end with usb.ErrNoDevice: ErrOffline)
//	same serial back --> EventDeviceConnected ----> Config.Open, probe --> Idle
//	                     (not answering yet: tried again, up to once a second, while it stays)
//
// The application does nothing; it finds the driver Idle and Locks again.
// Without Config.Hotplug it sends those events itself, as before.
//
// # Cancellation
//
// AcquireItemData keeps several overlapped bulk-IN transfers in flight,
// all covered by one cancel token, and counts every I/O it starts.
// NotifyPnpEvent(EventCancelIO) may run concurrently with it: it fires the
// token (Transferring to Canceling) and returns at once. Whichever goroutine
// then sees the last completion arrive (its buffers live until then) ends
// the transfer: Canceling to Locked. CancelPendingIO sends the event and
// waits for that, and nothing more, so control comes back in the time the
// engine takes to cancel, also when called from the progress callback or
// the sink, and also when the device hangs; it may be called at any time,
// from any goroutine, any number of times, and with nothing pending it is
// a no-op. The progress callback returning false, or the acquisition's
// context ending, cancel the same way.
//
//	CancelPendingIO ---> token fired ---> every completion in ---> Locked: CancelPendingIO returns
//	                                                  |
//	                               acquisition returns ErrCanceled, hands the device to
//	                               recovery (goroutine): abort, flush IN up to an echoed marker;
//	                               no answer within AbortTimeout: reset (clear halts) and
//	                               resynchronize; still none: ErrNotRecovered
//	                                                  |
//	             next Lock / AcquireItemData waits for it under its own context
//
// A canceled acquisition returns an error for which errors.Is(err,
// ErrCanceled) holds: WIA's S_FALSE, an outcome rather than a failure. The
// cancel is sticky for the rest of that transfer, and the sink holds whole
// chunks (ChunkSize) only. The device's recovery runs after, off the
// caller's path, bounded by Config.AbortTimeout per step, so that the next
// scan starts clean: a device that did not recover makes the next Lock or
// acquisition (which try a resynchronization again first) fail with
// ErrNotRecovered, never hang.
//
// # Example
//
//	d, _ := minidrv.New(minidrv.Config{Ring: ring, Open: open}) // open wraps usb.Open
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
