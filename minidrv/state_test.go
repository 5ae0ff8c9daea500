package minidrv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var allStates = []State{Unloaded, Idle, Locked, Transferring, Canceling, Suspended, Removed}

var allInputs = []Input{
	Initialize, Uninitialize, Lock, Unlock, Acquire,
	TransferDone, TransferFailed, CancelIO, Unwound,
	DeviceDisconnected, DeviceConnected, PowerSuspend, PowerResume,
}

type want struct {
	s    State
	in   Input
	act  Action
	next State
	err  error
}

// expected is the specification of every (state, input) pair, written from
// the rules in the issue, independently of the table in state.go.
var expected = []want{
	// Unloaded: only Initialize; notifications and reports are no-ops.
	{Unloaded, Initialize, ActionNone, Idle, nil},
	{Unloaded, Uninitialize, ActionNone, Unloaded, ErrNotInitialized},
	{Unloaded, Lock, ActionNone, Unloaded, ErrNotInitialized},
	{Unloaded, Unlock, ActionNone, Unloaded, ErrNotInitialized},
	{Unloaded, Acquire, ActionNone, Unloaded, ErrNotInitialized},
	{Unloaded, TransferDone, ActionNone, Unloaded, nil},
	{Unloaded, TransferFailed, ActionNone, Unloaded, nil},
	{Unloaded, CancelIO, ActionNone, Unloaded, nil},
	{Unloaded, Unwound, ActionNone, Unloaded, nil},
	{Unloaded, DeviceDisconnected, ActionNone, Unloaded, nil},
	{Unloaded, DeviceConnected, ActionNone, Unloaded, nil},
	{Unloaded, PowerSuspend, ActionNone, Unloaded, nil},
	{Unloaded, PowerResume, ActionNone, Unloaded, nil},

	// Idle
	{Idle, Initialize, ActionNone, Idle, ErrAlreadyInitialized},
	{Idle, Uninitialize, ActionNone, Unloaded, nil},
	{Idle, Lock, ActionNone, Locked, nil},
	{Idle, Unlock, ActionNone, Idle, ErrNotLocked},
	{Idle, Acquire, ActionNone, Idle, ErrNotLocked},
	{Idle, TransferDone, ActionNone, Idle, nil},
	{Idle, TransferFailed, ActionNone, Idle, nil},
	{Idle, CancelIO, ActionNone, Idle, nil},
	{Idle, Unwound, ActionNone, Idle, nil},
	{Idle, DeviceDisconnected, ActionNone, Removed, nil},
	{Idle, DeviceConnected, ActionNone, Idle, nil},
	{Idle, PowerSuspend, ActionNone, Suspended, nil},
	{Idle, PowerResume, ActionNone, Idle, nil},

	// Locked
	{Locked, Initialize, ActionNone, Locked, ErrAlreadyInitialized},
	{Locked, Uninitialize, ActionNone, Unloaded, nil},
	{Locked, Lock, ActionNone, Locked, ErrDeviceLocked},
	{Locked, Unlock, ActionNone, Idle, nil},
	{Locked, Acquire, ActionNone, Transferring, nil},
	{Locked, TransferDone, ActionNone, Locked, nil},
	{Locked, TransferFailed, ActionNone, Locked, nil},
	{Locked, CancelIO, ActionNone, Locked, nil},
	{Locked, Unwound, ActionNone, Locked, nil},
	{Locked, DeviceDisconnected, ActionNone, Removed, nil},
	{Locked, DeviceConnected, ActionNone, Locked, nil},
	{Locked, PowerSuspend, ActionNone, Suspended, nil},
	{Locked, PowerResume, ActionNone, Locked, nil},

	// Transferring: the cancel token fires on CancelIO, unplug and suspend.
	{Transferring, Initialize, ActionNone, Transferring, ErrAlreadyInitialized},
	{Transferring, Uninitialize, ActionNone, Transferring, ErrBusy},
	{Transferring, Lock, ActionNone, Transferring, ErrDeviceLocked},
	{Transferring, Unlock, ActionNone, Transferring, ErrBusy},
	{Transferring, Acquire, ActionNone, Transferring, ErrBusy},
	{Transferring, TransferDone, ActionNone, Locked, nil},
	{Transferring, TransferFailed, ActionRecover, Locked, nil},
	{Transferring, CancelIO, ActionCancelTransfer, Canceling, nil},
	{Transferring, Unwound, ActionRecover, Locked, nil},
	{Transferring, DeviceDisconnected, ActionCancelTransfer, Removed, nil},
	{Transferring, DeviceConnected, ActionNone, Transferring, nil},
	{Transferring, PowerSuspend, ActionCancelTransfer, Suspended, nil},
	{Transferring, PowerResume, ActionNone, Transferring, nil},

	// Canceling: the token already fired; any end of the transfer -> Locked.
	{Canceling, Initialize, ActionNone, Canceling, ErrAlreadyInitialized},
	{Canceling, Uninitialize, ActionNone, Canceling, ErrBusy},
	{Canceling, Lock, ActionNone, Canceling, ErrDeviceLocked},
	{Canceling, Unlock, ActionNone, Canceling, ErrBusy},
	{Canceling, Acquire, ActionNone, Canceling, ErrBusy},
	{Canceling, TransferDone, ActionNone, Locked, nil},
	{Canceling, TransferFailed, ActionRecover, Locked, nil},
	{Canceling, CancelIO, ActionNone, Canceling, nil},
	{Canceling, Unwound, ActionRecover, Locked, nil},
	{Canceling, DeviceDisconnected, ActionNone, Removed, nil},
	{Canceling, DeviceConnected, ActionNone, Canceling, nil},
	{Canceling, PowerSuspend, ActionNone, Suspended, nil},
	{Canceling, PowerResume, ActionNone, Canceling, nil},

	// Suspended: calls see an offline device; resume goes to Idle.
	{Suspended, Initialize, ActionNone, Suspended, ErrAlreadyInitialized},
	{Suspended, Uninitialize, ActionNone, Unloaded, nil},
	{Suspended, Lock, ActionNone, Suspended, ErrOffline},
	{Suspended, Unlock, ActionNone, Suspended, ErrOffline},
	{Suspended, Acquire, ActionNone, Suspended, ErrOffline},
	{Suspended, TransferDone, ActionNone, Suspended, nil},
	{Suspended, TransferFailed, ActionNone, Suspended, nil},
	{Suspended, CancelIO, ActionNone, Suspended, nil},
	{Suspended, Unwound, ActionNone, Suspended, nil},
	{Suspended, DeviceDisconnected, ActionNone, Removed, nil},
	{Suspended, DeviceConnected, ActionNone, Suspended, nil},
	{Suspended, PowerSuspend, ActionNone, Suspended, nil},
	{Suspended, PowerResume, ActionNone, Idle, nil},

	// Removed: everything is offline until the device comes back.
	{Removed, Initialize, ActionNone, Removed, ErrOffline},
	{Removed, Uninitialize, ActionNone, Unloaded, nil},
	{Removed, Lock, ActionNone, Removed, ErrOffline},
	{Removed, Unlock, ActionNone, Removed, ErrOffline},
	{Removed, Acquire, ActionNone, Removed, ErrOffline},
	{Removed, TransferDone, ActionNone, Removed, nil},
	{Removed, TransferFailed, ActionNone, Removed, nil},
	{Removed, CancelIO, ActionNone, Removed, nil},
	{Removed, Unwound, ActionNone, Removed, nil},
	{Removed, DeviceDisconnected, ActionNone, Removed, nil},
	{Removed, DeviceConnected, ActionNone, Idle, nil},
	{Removed, PowerSuspend, ActionNone, Removed, nil},
	{Removed, PowerResume, ActionNone, Removed, nil},
}

func TestTableTotal(t *testing.T) {
	for _, s := range allStates {
		for _, in := range allInputs {
			r := table[s][in]
			assert.True(t, r.set, "table[%v][%v] is not written", s, in)
			if r.err != nil {
				assert.True(t, r.stay, "table[%v][%v] refuses but moves", s, in)
				assert.Equal(t, ActionNone, r.act, "table[%v][%v] refuses with an action", s, in)
			}
			if !r.stay {
				assert.True(t, r.next.Valid(), "table[%v][%v] leads to %v", s, in, r.next)
			}
		}
	}
	// Nothing outside the defined inputs is written (index 0 is unused).
	for _, s := range allStates {
		assert.False(t, table[s][0].set, "table[%v][0] is written", s)
	}
	assert.Len(t, allStates, int(numStates), "allStates lists every state")
	assert.Len(t, allInputs, int(numInputs)-1, "allInputs lists every input")
}

func TestTransitionEveryPair(t *testing.T) {
	seen := make(map[[2]int]bool)
	for _, w := range expected {
		key := [2]int{int(w.s), int(w.in)}
		require.False(t, seen[key], "expected lists %v/%v twice", w.s, w.in)
		seen[key] = true

		act, next, err := Transition(w.s, w.in)
		assert.Equal(t, w.act, act, "%v + %v: action", w.s, w.in)
		assert.Equal(t, w.next, next, "%v + %v: next state", w.s, w.in)
		if w.err == nil {
			assert.NoError(t, err, "%v + %v", w.s, w.in)
		} else {
			assert.ErrorIs(t, err, w.err, "%v + %v", w.s, w.in)
		}
	}
	assert.Len(t, seen, len(allStates)*len(allInputs), "expected covers every (state, input) pair")
}

func TestTransitionInvalid(t *testing.T) {
	act, next, err := Transition(Idle, Input(0))
	assert.ErrorIs(t, err, ErrInvalidEvent)
	assert.Equal(t, ActionNone, act)
	assert.Equal(t, Idle, next)

	_, next, err = Transition(Locked, numInputs)
	assert.ErrorIs(t, err, ErrInvalidEvent)
	assert.Equal(t, Locked, next)

	act, next, err = Transition(State(99), Lock)
	assert.ErrorIs(t, err, ErrInvalidState)
	assert.Equal(t, ActionNone, act)
	assert.Equal(t, State(99), next)
}

func TestTransitionNoAllocs(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		for _, w := range expected {
			_, _, _ = Transition(w.s, w.in)
		}
	})
	assert.Zero(t, allocs)
}

func TestStrings(t *testing.T) {
	assert.Equal(t, []string{"Unloaded", "Idle", "Locked", "Transferring", "Canceling", "Suspended", "Removed"},
		stringsOf(allStates))
	assert.Equal(t, "State(7)", State(7).String())

	assert.Equal(t, []string{
		"Initialize", "Uninitialize", "Lock", "Unlock", "Acquire",
		"TransferDone", "TransferFailed", "CancelIO", "Unwound",
		"DeviceDisconnected", "DeviceConnected", "PowerSuspend", "PowerResume",
	}, stringsOf(allInputs))
	assert.Equal(t, "Input(0)", Input(0).String())
	assert.Equal(t, "Input(14)", Input(14).String())

	assert.Equal(t, "ActionNone", ActionNone.String())
	assert.Equal(t, "ActionCancelTransfer", ActionCancelTransfer.String())
	assert.Equal(t, "ActionRecover", ActionRecover.String())
	assert.Equal(t, "Action(3)", Action(3).String())
}

func stringsOf[T interface{ String() string }](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.String()
	}
	return out
}

func TestEvent(t *testing.T) {
	cases := []struct {
		e    Event
		name string
		in   Input
	}{
		{EventCancelIO, "EventCancelIO", CancelIO},
		{EventDeviceDisconnected, "EventDeviceDisconnected", DeviceDisconnected},
		{EventDeviceConnected, "EventDeviceConnected", DeviceConnected},
		{EventPowerSuspend, "EventPowerSuspend", PowerSuspend},
		{EventPowerResume, "EventPowerResume", PowerResume},
	}
	for _, c := range cases {
		assert.Equal(t, c.name, c.e.String())
		assert.NoError(t, c.e.Validate(), "%v", c.e)
		in, err := c.e.Input()
		require.NoError(t, err)
		assert.Equal(t, c.in, in, "%v.Input()", c.e)
	}
	for _, bad := range []Event{0, 6, 200, 255} {
		assert.ErrorIs(t, bad.Validate(), ErrInvalidEvent, "%d", bad)
		_, err := bad.Input()
		assert.ErrorIs(t, err, ErrInvalidEvent, "%d", bad)
		assert.Equal(t, fmt.Sprintf("Event(%d)", uint8(bad)), bad.String())
		assert.Equal(t, HResultInvalidArg, HResult(bad.Validate()))
	}
}

func TestMachineZeroValue(t *testing.T) {
	var m Machine
	assert.Equal(t, Unloaded, m.State())
	_, err := m.Fire(Lock)
	assert.ErrorIs(t, err, ErrNotInitialized)
	assert.Equal(t, Unloaded, m.State())
}

func TestMachineAcquireCycle(t *testing.T) {
	var m Machine
	for _, in := range []Input{Initialize, Lock} {
		act, err := m.Fire(in)
		require.NoError(t, err, "%v", in)
		require.Equal(t, ActionNone, act)
	}
	var canceled atomic.Int32
	require.NoError(t, m.BeginTransfer(func() { canceled.Add(1) }))
	assert.Equal(t, Transferring, m.State())

	assert.ErrorIs(t, m.BeginTransfer(func() { t.Error("second transfer's cancel ran") }), ErrBusy)
	_, err := m.Fire(Unlock)
	assert.ErrorIs(t, err, ErrBusy)

	act, err := m.Fire(CancelIO)
	require.NoError(t, err)
	assert.Equal(t, ActionCancelTransfer, act)
	assert.Equal(t, int32(1), canceled.Load(), "registered cancel ran once")
	assert.Equal(t, Canceling, m.State())

	act, err = m.Fire(CancelIO) // sticky: a second cancel is a no-op
	require.NoError(t, err)
	assert.Equal(t, ActionNone, act)
	assert.Equal(t, int32(1), canceled.Load(), "second CancelIO does not cancel again")

	_, err = m.Fire(Unwound)
	require.NoError(t, err)
	assert.Equal(t, Locked, m.State())

	// A transfer that ends normally never sees its cancel.
	require.NoError(t, m.BeginTransfer(func() { canceled.Add(100) }))
	_, err = m.Fire(TransferDone)
	require.NoError(t, err)
	_, err = m.Fire(DeviceDisconnected)
	require.NoError(t, err)
	assert.Equal(t, int32(1), canceled.Load(), "cancel of a finished transfer is dropped")
	assert.Equal(t, Removed, m.State())
}

func TestMachineDisconnectCancels(t *testing.T) {
	for _, in := range []Input{DeviceDisconnected, PowerSuspend} {
		var m Machine
		fireAll(t, &m, Initialize, Lock)
		var canceled atomic.Int32
		require.NoError(t, m.BeginTransfer(func() { canceled.Add(1) }))
		act, err := m.Fire(in)
		require.NoError(t, err)
		assert.Equal(t, ActionCancelTransfer, act, "%v while transferring", in)
		assert.Equal(t, int32(1), canceled.Load(), "%v fires the transfer's cancel", in)
		// The overtaken transfer's report is a stale no-op.
		before := m.State()
		_, err = m.Fire(Unwound)
		require.NoError(t, err)
		assert.Equal(t, before, m.State())
	}
}

func TestMachineNotify(t *testing.T) {
	var m Machine
	fireAll(t, &m, Initialize, Lock)
	_, ch := m.Watch()
	act, err := m.Notify(Event(42))
	assert.ErrorIs(t, err, ErrInvalidEvent)
	assert.Equal(t, ActionNone, act)
	assert.Equal(t, Locked, m.State(), "invalid event changes nothing")
	select {
	case <-ch:
		t.Fatal("invalid event signaled a change")
	default:
	}

	_, err = m.Notify(EventPowerSuspend)
	require.NoError(t, err)
	assert.Equal(t, Suspended, m.State())
	_, err = m.Notify(EventPowerResume)
	require.NoError(t, err)
	assert.Equal(t, Idle, m.State(), "resume goes to Idle: the lock does not survive a suspend")
}

func fireAll(t *testing.T, m *Machine, ins ...Input) {
	t.Helper()
	for _, in := range ins {
		_, err := m.Fire(in)
		require.NoError(t, err, "Fire(%v) in %v", in, m.State())
	}
}

func TestMachineWatch(t *testing.T) {
	var m Machine
	s, ch := m.Watch()
	require.Equal(t, Unloaded, s)

	_, err := m.Fire(CancelIO) // no-op: no change
	require.NoError(t, err)
	select {
	case <-ch:
		t.Fatal("no-op closed the change channel")
	default:
	}

	fireAll(t, &m, Initialize)
	select {
	case <-ch:
	default:
		t.Fatal("change did not close the channel")
	}
	s, ch2 := m.Watch()
	assert.Equal(t, Idle, s)
	assert.NotEqual(t, ch, ch2, "a fresh channel after a change")
}

func TestMachineWait(t *testing.T) {
	var m Machine
	fireAll(t, &m, Initialize, Lock)
	require.NoError(t, m.BeginTransfer(nil))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The transfer: it ends when its cancel fires.
	tokenFired := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-tokenFired
		_, err := m.Fire(Unwound)
		assert.NoError(t, err)
	}()

	// CancelPendingIO: fire the event, then wait for the unwind. This
	// Machine has no registered cancel, so the caller acts on the Action.
	act, err := m.Notify(EventCancelIO)
	require.NoError(t, err)
	require.Equal(t, ActionCancelTransfer, act)
	close(tokenFired)
	s, err := m.Wait(ctx, func(s State) bool { return !s.Busy() })
	require.NoError(t, err)
	assert.Equal(t, Locked, s)
	wg.Wait()

	// A condition that never holds ends with the context.
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	s, err = m.Wait(short, func(s State) bool { return s == Removed })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, Locked, s)
}

// TestMachineConcurrent fires random inputs from several goroutines while
// others wait on state changes; run it under -race.
func TestMachineConcurrent(t *testing.T) {
	var m Machine
	fireAll(t, &m, Initialize)
	n := 5000
	if testing.Short() {
		n = 500
	}
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg        sync.WaitGroup
		cancels   atomic.Int64
		begun     atomic.Int64
		waiterErr atomic.Value
	)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				s, err := m.Wait(ctx, func(s State) bool { return s == Canceling || s == Removed })
				if err != nil {
					return
				}
				if !s.Valid() {
					waiterErr.Store(s)
				}
			}
		}()
	}
	var firers sync.WaitGroup
	for g := 0; g < 4; g++ {
		firers.Add(1)
		go func(seed uint64) {
			defer firers.Done()
			r := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < n; i++ {
				if r.IntN(4) == 0 {
					if m.BeginTransfer(func() { cancels.Add(1) }) == nil {
						begun.Add(1)
					}
					continue
				}
				in := allInputs[r.IntN(len(allInputs))]
				if in == Uninitialize || in == Initialize {
					continue // keep the machine loaded so transfers happen
				}
				_, err := m.Fire(in)
				if err != nil {
					var e *Error
					assert.True(t, errors.As(err, &e), "refusal %v is an *Error", err)
				}
			}
		}(uint64(g))
	}
	firers.Wait()
	cancel()
	wg.Wait()
	assert.Nil(t, waiterErr.Load(), "waiter saw an invalid state")
	assert.True(t, m.State().Valid())
	assert.LessOrEqual(t, cancels.Load(), begun.Load(), "each transfer canceled at most once")
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// FuzzMachine drives random scripts through a Machine and checks its
// invariants after every step. Each byte b of the script is one step:
//
//	b%16 == 0        Fire(Input(b)): an undefined input
//	b%16 in 1..13    Fire(Input(b%16))
//	b%16 == 14       BeginTransfer with a counting cancel function
//	b%16 == 15       Notify(Event(b>>4)): events 1..5 are defined
func FuzzMachine(f *testing.F) {
	f.Add([]byte{1, 3, 14, 6, 4, 2})                        // acquire and finish, unlock, unload
	f.Add([]byte{1, 3, 14, 8, 8, 14, 9, 4})                 // cancel, cancel again, busy, unwind
	f.Add([]byte{1, 3, 14, 10, 9, 11, 3, 14, 12, 9, 13, 3}) // unplug and suspend mid-transfer
	f.Add([]byte{0, 1, 0xF0, 3, 14, 0x1F, 0x6F, 7, 2})      // undefined inputs and events
	f.Fuzz(func(t *testing.T, script []byte) {
		var m Machine
		var calls []int // calls[i]: how often transfer i's cancel ran
		cur := -1       // the transfer whose cancel m holds, or -1
		for step, b := range script {
			prev, changed := m.Watch()
			before := sum(calls)

			var (
				in    Input
				act   Action
				err   error
				begin bool
			)
			switch op := b % 16; {
			case op == 14:
				in, begin = Acquire, true
				i := len(calls)
				calls = append(calls, 0)
				err = m.BeginTransfer(func() { calls[i]++ })
			case op == 15:
				ev := Event(b >> 4)
				in, _ = ev.Input()
				act, err = m.Notify(ev)
			default:
				in = Input(b)
				if op != 0 {
					in = Input(op)
				}
				act, err = m.Fire(in)
			}
			now := m.State()
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("step %d: %v + %v -> %v, %v, %v: %s", step, prev, in, now, act, err, fmt.Sprintf(format, args...))
			}

			// The Machine does what the table says.
			wantAct, wantNext, wantErr := Transition(prev, in)
			if b%16 == 15 && Event(b>>4).Validate() != nil {
				wantAct, wantNext, wantErr = ActionNone, prev, ErrInvalidEvent
			}
			if now != wantNext || act != wantAct || !errors.Is(err, wantErr) || (wantErr == nil) != (err == nil) {
				fail("table says %v, %v, %v", wantAct, wantNext, wantErr)
			}
			if !now.Valid() {
				fail("invalid state")
			}
			if closed(changed) != (now != prev) {
				fail("change channel closed = %v", closed(changed))
			}

			if err != nil {
				if now != prev || act != ActionNone || sum(calls) != before {
					fail("a refused input changed something")
				}
				if hr := HResult(err); hr == HResultOK || hr == HResultFail {
					fail("refusal without its own HRESULT: %#x", hr)
				}
				if begin {
					calls = calls[:len(calls)-1] // never registered
				}
				continue
			}

			// Structure of the graph.
			if now == Canceling && prev != Canceling && prev != Transferring {
				fail("Canceling entered from outside Transferring")
			}
			if act == ActionCancelTransfer && prev != Transferring {
				fail("cancel action outside Transferring")
			}
			if now == Transferring && prev != Transferring && (prev != Locked || in != Acquire) {
				fail("a transfer starts only with Acquire in Locked")
			}
			if prev == Unloaded && now != Unloaded && in != Initialize {
				fail("Unloaded left without Initialize")
			}
			if now == Unloaded && prev != Unloaded && (in != Uninitialize || prev.Busy()) {
				fail("unloaded other than by Uninitialize outside a transfer")
			}
			if prev == Removed && now != Removed && in != DeviceConnected && in != Uninitialize {
				fail("Removed left without DeviceConnected or Uninitialize")
			}
			if prev == Suspended && now != Suspended && in != PowerResume && in != DeviceDisconnected && in != Uninitialize {
				fail("Suspended left without PowerResume, DeviceDisconnected or Uninitialize")
			}

			// The registered cancel runs exactly when the action says so,
			// once per transfer.
			ran := sum(calls) - before
			switch {
			case act == ActionCancelTransfer && cur >= 0:
				if ran != 1 || calls[cur] != 1 {
					fail("registered cancel ran %d times (transfer total %d), want once", ran, calls[cur])
				}
			case ran != 0:
				fail("%d cancels ran without a cancel action", ran)
			}
			switch {
			case begin:
				cur = len(calls) - 1
			case in == Acquire:
				cur = -1 // plain Fire(Acquire) registers nothing
			case now != Transferring:
				cur = -1
			}
		}
		for i, c := range calls {
			if c > 1 {
				t.Fatalf("transfer %d canceled %d times", i, c)
			}
		}
	})
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// closed reports whether ch is closed, without blocking.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
