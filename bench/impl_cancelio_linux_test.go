package bench

import (
	"errors"
	"testing"

	"github.com/cancelio/cancelio/ioring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// cancelioImpls returns the registered cancelio impls that run here.
func cancelioImpls(t *testing.T) []*cancelioImpl {
	return implsOf[*cancelioImpl](t, "cancelio-uring", "cancelio-poll")
}

func TestCancelioSupports(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend ioring.Backend
	}{{"cancelio-uring", ioring.BackendURing}, {"cancelio-poll", ioring.BackendPoll}} {
		impl, ok := Lookup(tc.name)
		require.True(t, ok, "%s registered", tc.name)
		r, err := ioring.New(ioring.Config{Entries: 2, Backend: tc.backend})
		if err != nil {
			assert.False(t, impl.Supports(WorkloadNop), "%s: New failed (%v), so no column", tc.name, err)
			assert.True(t, errors.Is(err, ioring.ErrNotSupported) || errors.Is(err, unix.EPERM) ||
				errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EOPNOTSUPP),
				"%s: New's error says the backend is unavailable, got %v", tc.name, err)
			continue
		}
		require.NoError(t, r.Close())
		for _, w := range []Workload{WorkloadNop, WorkloadRead, WorkloadPingPong, WorkloadCancel, WorkloadCancelUnderLoad, WorkloadCancelEach,
			WorkloadReadFixed, WorkloadSockPingPong} {
			assert.True(t, impl.Supports(w), "%s supports %v", tc.name, w)
		}
	}
}

// TestCancelioZeroAllocs checks the hot loops allocate nothing per op once
// warm (AllocsPerRun warms up with one call first).
func TestCancelioZeroAllocs(t *testing.T) {
	const ops = 2000
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, batch := range []int{1, 32} {
				r, err := impl.NewNop(NopConfig{Batch: batch})
				require.NoError(t, err)
				allocs := testing.AllocsPerRun(5, func() { require.NoError(t, r.Run(ops)) })
				assert.Less(t, allocs/ops, 0.01, "nop batch %d: allocations per op", batch)
				require.NoError(t, r.Close())
			}
			for _, fixed := range []bool{false, true} {
				for _, qd := range []int{1, 32} {
					cfg := readConfig(t, qd)
					cfg.Fixed = fixed
					rd, err := impl.NewRead(cfg)
					require.NoError(t, err)
					allocs := testing.AllocsPerRun(5, func() { require.NoError(t, rd.Run(ops)) })
					assert.Less(t, allocs/ops, 0.01, "read qd %d (fixed %v): allocations per op", qd, fixed)
					require.NoError(t, rd.Close())
				}
			}

			for _, tr := range transports {
				e, cfg := startTransportEcho(t, tr.name)
				pp, err := impl.NewPingPong(cfg)
				require.NoError(t, err)
				allocs := testing.AllocsPerRun(5, func() { require.NoError(t, pp.Run(200)) })
				assert.Less(t, allocs/200, 0.01, "ping-pong over %s: allocations per round trip", tr.name)
				require.NoError(t, pp.Close())
				require.NoError(t, e.Close())
			}
		})
	}
}

// TestCancelioCancelOneToken checks the cancel workload's shape: one Token
// covers every pending read, and after CancelAndWait nothing is in flight.
func TestCancelioCancelOneToken(t *testing.T) {
	const pending = 16
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			p, err := NewPipes(pending)
			require.NoError(t, err)
			defer p.Close()
			cr, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf})
			require.NoError(t, err)
			c := cr.(*ciCancel)
			require.NoError(t, c.Arm())
			assert.Equal(t, pending, c.tok.Pending(), "every read is a member of the token")
			assert.Equal(t, pending, c.r.InFlight(), "every read in flight")
			tok := c.tok
			_, err = c.CancelAndWait()
			require.NoError(t, err)
			assert.True(t, tok.Canceled())
			assert.Zero(t, tok.Pending(), "token members left")
			assert.Zero(t, c.r.InFlight(), "requests left in flight")

			// Measured once every slot of the ring has served (first-use
			// costs out): the same warm-up the benchmark does.
			warmUpCancel(t, c, pending)
			allocs := testing.AllocsPerRun(20, func() {
				require.NoError(t, c.Arm())
				_, err := c.CancelAndWait()
				require.NoError(t, err)
			})
			assert.Zero(t, allocs, "allocations per arm+cancel cycle of %d reads (Token.Reset, no new Token)", pending)
			assert.Same(t, tok, c.tok, "one Token for the runner's life")
			require.NoError(t, c.Close())
		})
	}
}

// TestCancelioCancelEach checks the request-by-request cancel workload: no
// token, every read in flight after Arm and none after CancelAndWait, and
// no allocation per cycle once warm (Ring.Cancel takes the Requests' slice
// as it is).
func TestCancelioCancelEach(t *testing.T) {
	const pending = 16
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			p, err := NewPipes(pending)
			require.NoError(t, err)
			defer p.Close()
			cr, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf, Each: true})
			require.NoError(t, err)
			c := cr.(*ciCancel)
			assert.Nil(t, c.tok, "no token: the reads are canceled by their Requests")
			require.NoError(t, c.Arm())
			assert.Equal(t, pending, c.r.InFlight(), "every read in flight")
			_, err = c.CancelAndWait()
			require.NoError(t, err)
			assert.Zero(t, c.r.InFlight(), "requests left in flight")
			warmUpCancel(t, c, pending)
			allocs := testing.AllocsPerRun(20, func() {
				require.NoError(t, c.Arm())
				_, err := c.CancelAndWait()
				require.NoError(t, err)
			})
			assert.Zero(t, allocs, "allocations per arm+cancel cycle of %d reads", pending)
			require.NoError(t, c.Close())
		})
	}
}

// TestCancelioScaleLayout checks that layout=shared gives every worker the
// same Ring and layout=each a Ring of its own.
func TestCancelioScaleLayout(t *testing.T) {
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, shared := range []bool{true, false} {
				grp, err := impl.NewScale(ScaleConfig{Op: WorkloadNop, Shared: shared, Goroutines: 3, Procs: 1})
				require.NoError(t, err)
				var rings []*ioring.Ring
				for i := range 3 {
					w, err := grp.Worker(i)
					require.NoError(t, err)
					require.NoError(t, w.Run(10))
					rings = append(rings, w.(*ciScaleWorker).r)
					defer func() { require.NoError(t, w.Close()) }()
				}
				if shared {
					assert.True(t, rings[0] == rings[1] && rings[1] == rings[2], "layout=shared: one ring")
				} else {
					assert.True(t, rings[0] != rings[1] && rings[1] != rings[2] && rings[0] != rings[2], "layout=each: a ring each")
				}
				defer func() { require.NoError(t, grp.Close()) }()
			}
		})
	}
}

// TestCancelioCloseArmed closes a runner with reads pending: Close cancels
// and drains them (no leaked fds or goroutines, see checkFDs and TestMain).
func TestCancelioCloseArmed(t *testing.T) {
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			p, err := NewPipes(4)
			require.NoError(t, err)
			defer p.Close()
			cr, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: 64})
			require.NoError(t, err)
			require.NoError(t, cr.Arm())
			assert.Error(t, cr.Arm(), "Arm twice")
			require.NoError(t, cr.Close())
		})
	}
}

// TestCancelioReadFixed checks that the fixed rows read into registered
// buffers: the runner's ring has its buffers registered (a second
// RegisterBuffers is refused with EBUSY), its reads are ReadFixed, and the
// plain rows' ring has none.
func TestCancelioReadFixed(t *testing.T) {
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, fixed := range []bool{false, true} {
				r := runFixedRead(t, impl, fixed)
				rd := r.(*ciRead)
				want := ioring.OpRead
				if fixed {
					want = ioring.OpReadFixed
				}
				assert.Equal(t, want, rd.ops[0].Code(), "fixed %v", fixed)
				err := rd.r.RegisterBuffers(rd.bufs)
				if fixed {
					assert.ErrorIs(t, err, unix.EBUSY, "buffers registered already")
				} else {
					assert.NoError(t, err, "no buffers registered by a plain runner")
				}
				require.NoError(t, r.Close())
			}
		})
	}
}

// TestCancelioSockPingPong checks that the socket rows use Send and Recv,
// and the pipe rows Write and Read.
func TestCancelioSockPingPong(t *testing.T) {
	for _, impl := range cancelioImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, tr := range transports {
				e, cfg := startTransportEcho(t, tr.name)
				cfg.Verify = true
				r, err := impl.NewPingPong(cfg)
				require.NoError(t, err)
				require.NoError(t, r.Run(5))
				p := r.(*ciPingPong)
				send, recv := ioring.OpWrite, ioring.OpRead
				if cfg.Socket {
					send, recv = ioring.OpSend, ioring.OpRecv
				}
				assert.Equal(t, send, p.ops[0].Code(), tr.name)
				assert.Equal(t, recv, p.ops[1].Code(), tr.name)
				require.NoError(t, r.Close())
				require.NoError(t, e.Close())
			}
		})
	}
}
