// Package minidrv is a WIA-style scanner minidriver whose CancelPendingIO
// cancels every current I/O operation at once and returns the driver to idle.
//
// It mirrors IWiaMiniDrv: Initialize, Lock, WriteItemProperties,
// AcquireItemData, Unlock and NotifyPnpEvent. Underneath are a state machine
// with every transition in one table (State, Input, Event, Transition,
// Machine), the item tree and the flatbed's properties (Item, Properties),
// and errors that carry their WIA HRESULT (Error, HResult):
//
//	Unloaded -> Idle <-> Locked <-> Transferring -> Canceling -> Locked
//	any loaded state -> Removed -> Idle;  awake states -> Suspended -> Idle
//
// NotifyPnpEvent(EventCancelIO) may run concurrently with a transfer: it fires
// the transfer's cancel token and returns at once; the transfer unwinds once
// every completion has arrived, aborts the job and flushes the IN pipe.
// CancelPendingIO sends that event and waits for the unwind or its context.
// A canceled acquisition returns ErrCanceled, an outcome that HResult maps to
// S_FALSE. Machine is safe for concurrent use; Properties and Item are plain
// values the driver guards.
package minidrv
