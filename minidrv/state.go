package minidrv

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// State is the state of a minidriver. The zero value is Unloaded.
//
// Every transition is one row of one table (see Transition); the main paths:
//
//	           Initialize             Lock                 Acquire
//	Unloaded ------------> Idle <-------------> Locked <-------------> Transferring
//	    ^                   |        Unlock       ^     TransferDone        |
//	    | Uninitialize      |                     |     TransferFailed [r]  | CancelIO
//	    | (Idle, Locked,    |                     |     Unwound [r]         | [cancel]
//	    |  Suspended,       |                     |                         v
//	    |  Removed)         |                     +---- Unwound [r] ------- Canceling
//	                                                  (TransferDone, TransferFailed [r])
//
//	Idle, Locked, Transferring, Canceling, Suspended
//	    --- DeviceDisconnected [cancel if Transferring] ---> Removed   --- DeviceConnected --> Idle
//	        (or hotplug: the device's removal)                             (or hotplug: its arrival)
//	Idle, Locked, Transferring, Canceling
//	    --- PowerSuspend       [cancel if Transferring] ---> Suspended --- PowerResume -----> Idle
//
// DeviceDisconnected and DeviceConnected are the removal and the arrival of
// the device: the application sends them (NotifyPnpEvent), or the driver
// itself when it follows the device's hotplug events (Config.Hotplug: a
// removal reported by the kernel's uevents, or the simulator's, is
// DeviceDisconnected; an arrival of the same device, DeviceConnected).
//
// [cancel] marks rows whose Action is ActionCancelTransfer, [r] rows whose
// Action is ActionRecover: a transfer that ended early leaves the device to be
// recovered (job aborted, IN pipe flushed, reset if it does not answer) off
// the caller's path, while the driver is already Locked again; Lock and
// Acquire wait for that recovery (see Driver).
//
// The inputs fall in three groups, with one rule each:
//
//   - Calls (Initialize, Uninitialize, Lock, Unlock, Acquire) are requests.
//     A state that does not allow one refuses it with a typed error and
//     changes nothing: ErrNotInitialized in Unloaded, ErrOffline in Removed
//     and Suspended, ErrBusy while a transfer runs or unwinds, ErrDeviceLocked
//     for a second Lock, ErrNotLocked for Unlock or Acquire without Lock,
//     ErrAlreadyInitialized for a second Initialize.
//   - Notifications (CancelIO and the PnP events) are never refused: where
//     one means nothing (CancelIO with no transfer, DeviceConnected while
//     connected, PowerResume while awake) it is a no-op that returns nil.
//     Cancel is always allowed.
//   - Reports (TransferDone, TransferFailed, Unwound) end the transfer: from
//     Transferring or Canceling they all lead to Locked (a cancel may lose
//     the race to a transfer's normal end). Elsewhere they are stale, from a
//     transfer that a removal or a suspend overtook, and are no-ops.
//
// A suspend and a removal both end the lock session: the device may have
// been reset or replaced, so PowerResume and DeviceConnected lead to Idle,
// never back to Locked, and the holder must Lock again (its Unlock meanwhile
// gets ErrOffline or ErrNotLocked, which it may ignore). Returning to Locked
// would need a remembered flag outside the table, and a lock whose Unlock was
// refused while the device slept would then be held for ever.
//
// A transfer overtaken by DeviceDisconnected or PowerSuspend is canceled by
// that row's action but is still unwinding when the state is already Removed
// or Suspended; the driver must let it finish (its report is then a no-op)
// before it starts another one.
type State uint8

// The states of a minidriver.
const (
	// Unloaded: before Initialize or after Uninitialize. Only Initialize is
	// accepted.
	Unloaded State = iota
	// Idle: initialized, device present, not locked.
	Idle
	// Locked: a client holds the device lock (drvLockWiaDevice) and may
	// write properties and acquire.
	Locked
	// Transferring: AcquireItemData is streaming data; the device is locked.
	Transferring
	// Canceling: the transfer's cancel token has fired; the transfer is
	// waiting for the completions of its I/O. It is entered only from
	// Transferring, and left (Unwound) once every completion has arrived;
	// the device's recovery runs after that, in Locked (ActionRecover).
	Canceling
	// Suspended: the system is asleep; the device is unusable until
	// PowerResume.
	Suspended
	// Removed: the device was unplugged; calls fail with ErrOffline until
	// DeviceConnected.
	Removed

	numStates // one past the last state
)

var stateNames = [numStates]string{
	Unloaded:     "Unloaded",
	Idle:         "Idle",
	Locked:       "Locked",
	Transferring: "Transferring",
	Canceling:    "Canceling",
	Suspended:    "Suspended",
	Removed:      "Removed",
}

// String returns the state's name, or "State(n)" for a value outside the
// defined set.
func (s State) String() string {
	if s.Valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s < numStates }

// Busy reports whether a transfer is running or unwinding in s
// (Transferring or Canceling).
func (s State) Busy() bool { return s == Transferring || s == Canceling }

// Input is what drives the state machine: the driver's calls, the reports of
// its transfer, and the PnP events (see Event). The zero value is not a valid
// input.
type Input uint8

// The inputs of the state machine.
const (
	// Initialize: drvInitializeWia; the device was opened.
	Initialize Input = iota + 1
	// Uninitialize: drvUnInitializeWia; the driver lets go of the device.
	Uninitialize
	// Lock: drvLockWiaDevice.
	Lock
	// Unlock: drvUnLockWiaDevice.
	Unlock
	// Acquire: the start of drvAcquireItemData.
	Acquire
	// TransferDone: every completion of the transfer has arrived and it
	// succeeded.
	TransferDone
	// TransferFailed: every completion has arrived and the transfer failed.
	TransferFailed
	// CancelIO: EventCancelIO, sent by CancelPendingIO or by the progress
	// callback asking to stop.
	CancelIO
	// Unwound: a canceled transfer has received every completion (its
	// buffers are free); the device's recovery is still to come.
	Unwound
	// DeviceDisconnected: EventDeviceDisconnected, the device went away
	// (from the application, or from the hotplug watch: Config.Hotplug).
	DeviceDisconnected
	// DeviceConnected: EventDeviceConnected, the device came back (from
	// the application, or from the hotplug watch once the device reopened).
	DeviceConnected
	// PowerSuspend: EventPowerSuspend, the system is going to sleep.
	PowerSuspend
	// PowerResume: EventPowerResume, the system woke up.
	PowerResume

	numInputs // one past the last input
)

var inputNames = [numInputs]string{
	Initialize:         "Initialize",
	Uninitialize:       "Uninitialize",
	Lock:               "Lock",
	Unlock:             "Unlock",
	Acquire:            "Acquire",
	TransferDone:       "TransferDone",
	TransferFailed:     "TransferFailed",
	CancelIO:           "CancelIO",
	Unwound:            "Unwound",
	DeviceDisconnected: "DeviceDisconnected",
	DeviceConnected:    "DeviceConnected",
	PowerSuspend:       "PowerSuspend",
	PowerResume:        "PowerResume",
}

// String returns the input's name, or "Input(n)" for a value outside the
// defined set.
func (in Input) String() string {
	if in.Valid() {
		return inputNames[in]
	}
	return fmt.Sprintf("Input(%d)", uint8(in))
}

// Valid reports whether in is one of the defined inputs.
func (in Input) Valid() bool { return in >= Initialize && in < numInputs }

// Event is a PnP event delivered to the driver (drvNotifyPnpEvent). The zero
// value is not a valid event.
type Event uint8

// The PnP events a minidriver is notified of.
const (
	// EventCancelIO (WIA_EVENT_CANCEL_IO): cancel every current I/O and
	// return to idle. It may arrive concurrently with a transfer.
	EventCancelIO Event = iota + 1
	// EventDeviceDisconnected (WIA_EVENT_DEVICE_DISCONNECTED): the device
	// was removed. A driver with Config.Hotplug sends it to itself when
	// its device's removal is reported.
	EventDeviceDisconnected
	// EventDeviceConnected (WIA_EVENT_DEVICE_CONNECTED): the device
	// arrived. A driver with Config.Hotplug sends it to itself when its
	// device (the same serial number) arrives again.
	EventDeviceConnected
	// EventPowerSuspend (WIA_EVENT_POWER_SUSPEND).
	EventPowerSuspend
	// EventPowerResume (WIA_EVENT_POWER_RESUME).
	EventPowerResume

	numEvents // one past the last event
)

var eventNames = [numEvents]string{
	EventCancelIO:           "EventCancelIO",
	EventDeviceDisconnected: "EventDeviceDisconnected",
	EventDeviceConnected:    "EventDeviceConnected",
	EventPowerSuspend:       "EventPowerSuspend",
	EventPowerResume:        "EventPowerResume",
}

var eventInputs = [numEvents]Input{
	EventCancelIO:           CancelIO,
	EventDeviceDisconnected: DeviceDisconnected,
	EventDeviceConnected:    DeviceConnected,
	EventPowerSuspend:       PowerSuspend,
	EventPowerResume:        PowerResume,
}

// String returns the event's name, or "Event(n)" for a value outside the
// defined set.
func (e Event) String() string {
	if e.Validate() == nil {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", uint8(e))
}

// Validate returns nil for a defined event and ErrInvalidEvent otherwise.
func (e Event) Validate() error {
	if e >= EventCancelIO && e < numEvents {
		return nil
	}
	return ErrInvalidEvent
}

// Input returns the state machine input for e, or ErrInvalidEvent.
func (e Event) Input() (Input, error) {
	if err := e.Validate(); err != nil {
		return 0, err
	}
	return eventInputs[e], nil
}

// Action is what the caller of a transition must do, besides recording the
// new state.
type Action uint8

// The actions of the state machine.
const (
	// ActionNone: nothing to do.
	ActionNone Action = iota
	// ActionCancelTransfer: fire the running transfer's cancel token. It is
	// returned only by transitions out of Transferring.
	ActionCancelTransfer
	// ActionRecover: the transfer ended without its whole image, so the
	// device may still run its job: recover it (abort the job, flush the
	// IN pipe, reset and resynchronize a device that does not answer) off
	// the caller's path. The next Lock or Acquire waits for that recovery.
	// It is returned only by transitions from Transferring or Canceling to
	// Locked that end a transfer early (TransferFailed, Unwound).
	ActionRecover

	numActions // one past the last action
)

var actionNames = [numActions]string{
	ActionNone:           "ActionNone",
	ActionCancelTransfer: "ActionCancelTransfer",
	ActionRecover:        "ActionRecover",
}

// String returns the action's name, or "Action(n)" for a value outside the
// defined set.
func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// row is one transition of the table.
type row struct {
	act  Action
	next State
	err  error
	stay bool // the next state is the current one
	set  bool // the row was written; TestTableTotal checks every row is
}

func to(s State) row        { return row{next: s, set: true} }
func cancelTo(s State) row  { return row{act: ActionCancelTransfer, next: s, set: true} }
func recoverTo(s State) row { return row{act: ActionRecover, next: s, set: true} }
func refuse(err error) row  { return row{err: err, stay: true, set: true} }

// noop is a notification or report that means nothing in its state.
var noop = row{stay: true, set: true}

// table is the state machine: table[state][input]. Every pair is written out;
// read the State doc comment for the rules behind the rows.
var table = [numStates][numInputs]row{
	Unloaded: {
		Initialize:         to(Idle),
		Uninitialize:       refuse(ErrNotInitialized),
		Lock:               refuse(ErrNotInitialized),
		Unlock:             refuse(ErrNotInitialized),
		Acquire:            refuse(ErrNotInitialized),
		TransferDone:       noop,
		TransferFailed:     noop,
		CancelIO:           noop,
		Unwound:            noop,
		DeviceDisconnected: noop,
		DeviceConnected:    noop,
		PowerSuspend:       noop,
		PowerResume:        noop,
	},
	Idle: {
		Initialize:         refuse(ErrAlreadyInitialized),
		Uninitialize:       to(Unloaded),
		Lock:               to(Locked),
		Unlock:             refuse(ErrNotLocked),
		Acquire:            refuse(ErrNotLocked),
		TransferDone:       noop,
		TransferFailed:     noop,
		CancelIO:           noop,
		Unwound:            noop,
		DeviceDisconnected: to(Removed),
		DeviceConnected:    noop,
		PowerSuspend:       to(Suspended),
		PowerResume:        noop,
	},
	Locked: {
		Initialize:         refuse(ErrAlreadyInitialized),
		Uninitialize:       to(Unloaded),
		Lock:               refuse(ErrDeviceLocked),
		Unlock:             to(Idle),
		Acquire:            to(Transferring),
		TransferDone:       noop,
		TransferFailed:     noop,
		CancelIO:           noop,
		Unwound:            noop,
		DeviceDisconnected: to(Removed),
		DeviceConnected:    noop,
		PowerSuspend:       to(Suspended),
		PowerResume:        noop,
	},
	Transferring: {
		Initialize:         refuse(ErrAlreadyInitialized),
		Uninitialize:       refuse(ErrBusy),
		Lock:               refuse(ErrDeviceLocked),
		Unlock:             refuse(ErrBusy),
		Acquire:            refuse(ErrBusy),
		TransferDone:       to(Locked),
		TransferFailed:     recoverTo(Locked),
		CancelIO:           cancelTo(Canceling),
		Unwound:            recoverTo(Locked),
		DeviceDisconnected: cancelTo(Removed),
		DeviceConnected:    noop,
		PowerSuspend:       cancelTo(Suspended),
		PowerResume:        noop,
	},
	Canceling: {
		Initialize:         refuse(ErrAlreadyInitialized),
		Uninitialize:       refuse(ErrBusy),
		Lock:               refuse(ErrDeviceLocked),
		Unlock:             refuse(ErrBusy),
		Acquire:            refuse(ErrBusy),
		TransferDone:       to(Locked),
		TransferFailed:     recoverTo(Locked),
		CancelIO:           noop,
		Unwound:            recoverTo(Locked),
		DeviceDisconnected: to(Removed),
		DeviceConnected:    noop,
		PowerSuspend:       to(Suspended),
		PowerResume:        noop,
	},
	Suspended: {
		Initialize:         refuse(ErrAlreadyInitialized),
		Uninitialize:       to(Unloaded),
		Lock:               refuse(ErrOffline),
		Unlock:             refuse(ErrOffline),
		Acquire:            refuse(ErrOffline),
		TransferDone:       noop,
		TransferFailed:     noop,
		CancelIO:           noop,
		Unwound:            noop,
		DeviceDisconnected: to(Removed),
		DeviceConnected:    noop,
		PowerSuspend:       noop,
		PowerResume:        to(Idle),
	},
	Removed: {
		Initialize:         refuse(ErrOffline),
		Uninitialize:       to(Unloaded),
		Lock:               refuse(ErrOffline),
		Unlock:             refuse(ErrOffline),
		Acquire:            refuse(ErrOffline),
		TransferDone:       noop,
		TransferFailed:     noop,
		CancelIO:           noop,
		Unwound:            noop,
		DeviceDisconnected: noop,
		DeviceConnected:    to(Idle),
		PowerSuspend:       noop,
		PowerResume:        noop,
	},
}

// Transition returns what input in does in state s: the action the caller
// must take, the next state and an error. A refused input returns
// ActionNone, s itself and a typed error (see State for the rules); an
// unknown input returns ErrInvalidEvent and an unknown state ErrInvalidState.
// Transition is a pure function of the transition table; it does not
// allocate.
func Transition(s State, in Input) (Action, State, error) {
	if !s.Valid() {
		return ActionNone, s, ErrInvalidState
	}
	if !in.Valid() {
		return ActionNone, s, ErrInvalidEvent
	}
	r := table[s][in]
	if !r.set { // a hole in the table; TestTableTotal rules it out
		return ActionNone, s, ErrInvalidState
	}
	if r.stay {
		return r.act, s, r.err
	}
	return r.act, r.next, r.err
}

// Machine is a thread-safe minidriver state machine: Transition applied
// under one mutex. Its zero value is ready to use, in state Unloaded. A
// Machine must not be copied after first use.
//
// A transfer registers its cancel function with BeginTransfer; whenever a
// transition's action is ActionCancelTransfer, Machine calls that function
// itself (outside its lock), so a cancel can never slip between the start of
// a transfer and the moment its token becomes known. State changes are
// observable through Watch and Wait.
type Machine struct {
	mu      sync.Mutex
	state   State         // guarded by mu
	changed chan struct{} // guarded by mu; closed at the next change of state; nil until Watch asks for it
	cancel  func()        // guarded by mu; the running transfer's cancel, set by BeginTransfer, nil outside Transferring
}

// State returns the current state.
func (m *Machine) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// Fire applies input in. On success it returns the row's action, after
// having run the cancel function registered by BeginTransfer when the action
// is ActionCancelTransfer (a caller that registered one has nothing left to
// do; one that did not must fire its own token). A refused input returns
// ActionNone and the row's error and changes nothing. Fire may be called
// from any goroutine.
func (m *Machine) Fire(in Input) (Action, error) {
	return m.fire(in, nil)
}

// Notify applies the input of PnP event e, as Fire does. An unknown event
// returns ErrInvalidEvent and changes nothing.
func (m *Machine) Notify(e Event) (Action, error) {
	in, err := e.Input()
	if err != nil {
		return ActionNone, err
	}
	return m.fire(in, nil)
}

// BeginTransfer applies Acquire and, if it is accepted, registers cancel as
// the running transfer's cancel function until the state leaves
// Transferring. cancel must not block, and may be called at most once per
// transfer, from any goroutine; it may be nil. A refused Acquire returns its
// error (ErrBusy, ErrNotLocked, ...) and cancel is not kept.
func (m *Machine) BeginTransfer(cancel func()) error {
	_, err := m.fire(Acquire, cancel)
	return err
}

func (m *Machine) fire(in Input, cancel func()) (Action, error) {
	m.mu.Lock()
	act, next, err := Transition(m.state, in)
	if err != nil {
		m.mu.Unlock()
		return ActionNone, err
	}
	var run func()
	if act == ActionCancelTransfer {
		run = m.cancel
	}
	switch {
	case next == Transferring && m.state != Transferring:
		m.cancel = cancel
	case next != Transferring:
		m.cancel = nil
	}
	if next != m.state {
		m.state = next
		if m.changed != nil {
			close(m.changed)
			m.changed = nil
		}
	}
	m.mu.Unlock()
	if run != nil {
		run()
	}
	return act, nil
}

// Watch returns the current state and a channel that is closed at the next
// change of state. Taken together they let a caller wait for a condition
// without missing a change.
func (m *Machine) Watch() (State, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.state, m.changed
}

// Wait blocks until cond reports true for the current state, and returns
// that state. cond runs without the Machine's lock held, once at first and
// once per change of state. If ctx ends first, Wait returns the current state
// and ctx.Err(). A nil ctx or cond returns the current state and an error
// with HResult E_INVALIDARG.
//
// For example, CancelPendingIO fires CancelIO and then waits for the
// transfer to unwind:
//
//	m.Fire(CancelIO)
//	m.Wait(ctx, func(s State) bool { return !s.Busy() })
func (m *Machine) Wait(ctx context.Context, cond func(State) bool) (State, error) {
	switch {
	case ctx == nil:
		return m.State(), errInvalidArg.Wrap(errors.New("nil context"))
	case cond == nil:
		return m.State(), errInvalidArg.Wrap(errors.New("nil condition"))
	}
	for {
		s, ch := m.Watch()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return m.State(), ctx.Err()
		}
	}
}
