//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Terminals opened without O_NONBLOCK ignore io_uring's request not to
// wait. These tests run reads and writes on such a pty on both backends,
// in every form a request at the current position takes (ordered,
// Unordered, on a registered file, with a token, with a deadline), and
// check the contract: a submission returns at once, the ring goes on
// serving other requests (and the process its timers) while the terminal
// blocks, a cancel ends the request, and the bytes a write reports are the
// bytes the other end reads.

// ttyFill makes the pty slave's output full (nobody reads the master), so
// that a write of it blocks, leaves the slave blocking again and returns
// how many bytes (zeros) it wrote.
func ttyFill(t *testing.T, slave int) int {
	t.Helper()
	require.NoError(t, unix.SetNonblock(slave, true))
	fill := make([]byte, 4096)
	total := 0
	for {
		n, err := unix.Write(slave, fill)
		if err == unix.EAGAIN || n == 0 {
			break
		}
		require.NoError(t, err)
		total += n
	}
	require.NoError(t, unix.SetNonblock(slave, false))
	return total
}

// ttyDrain reads the master until stop is closed and returns how many
// bytes it read.
func ttyDrain(master int, stop <-chan struct{}) <-chan int {
	got := make(chan int, 1)
	go func() {
		total := 0
		p := make([]byte, 64<<10)
		_ = unix.SetNonblock(master, true)
		for {
			n, _ := unix.Read(master, p)
			if n > 0 {
				total += n
				continue
			}
			select {
			case <-stop:
				got <- total
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return got
}

// ttyForms are the forms of a request at the current position.
var ttyForms = []string{"ordered", "unordered", "fixed", "token", "deadline"}

// ttyOp makes op in form; fixed registers fd first (index 0).
func ttyOp(t *testing.T, r *Ring, form string, code Opcode, fd int, buf []byte) Op {
	t.Helper()
	var op Op
	target := fd
	if form == "fixed" {
		require.NoError(t, r.RegisterFiles([]int{fd}))
		target = 0
	}
	if code == OpWrite {
		op = Write(target, buf, -1)
	} else {
		op = Read(target, buf, -1)
	}
	switch form {
	case "unordered":
		op = op.Unordered()
	case "fixed":
		op = op.FixedFile()
	case "token":
		op = op.WithToken(r.NewToken())
	case "deadline":
		op = op.WithDeadline(200 * time.Millisecond)
	}
	return op
}

// ttyStart starts op and fails the test when the submission does not
// return within two seconds (it waits for the terminal).
func ttyStart(t *testing.T, r *Ring, op Op) Request {
	t.Helper()
	type res struct {
		q   Request
		err error
	}
	done := make(chan res, 1)
	go func() {
		q, err := r.Start(op)
		done <- res{q, err}
	}()
	select {
	case got := <-done:
		require.NoError(t, got.err)
		return got.q
	case <-time.After(2 * time.Second):
		t.Fatalf("Start of a blocking terminal's request did not return within 2s")
		return Request{}
	}
}

// ttyRingAlive checks that the ring serves another request and the
// process runs its timers while the terminal's request waits.
func ttyRingAlive(t *testing.T, r *Ring) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := r.Do(ctx, Timeout(time.Millisecond))
		if errors.Is(err, ErrTimeout) {
			err = nil // the Timeout op's own end
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err, "a timeout beside the terminal's request")
	case <-time.After(5 * time.Second):
		t.Fatalf("the ring served nothing else while the terminal's request waited")
	}
}

// ttyWaitDone waits (generously) for q's completion.
func ttyWaitDone(t *testing.T, q Request, what string) Completion {
	t.Helper()
	type res struct {
		c   Completion
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, err := q.Wait(context.Background())
		done <- res{c, err}
	}()
	select {
	case got := <-done:
		require.NoError(t, got.err, what)
		return got.c
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no completion within 10s", what)
		return Completion{}
	}
}

// TestBlockingTTYWrite writes more than a full pty has room for, in each
// form, on a blocking slave: the submission returns, the ring serves
// other requests meanwhile, and then either a cancel (or the deadline)
// ends the write, or the master is read until it completes. Every byte the
// master reads is one the write reports, beyond the fill.
func TestBlockingTTYWrite(t *testing.T) {
	for _, b := range backends {
		for _, form := range ttyForms {
			for _, end := range []string{"cancel", "drain"} {
				if form == "deadline" && end == "drain" {
					continue
				}
				t.Run(fmt.Sprintf("backend=%v/%s/%s", b, form, end), func(t *testing.T) {
					r := adv12Ring(t, b, 16)
					master, slave := adv12Pty(t)
					defer unix.Close(master)
					defer unix.Close(slave)
					// Full: the fill's bytes are in the pty, counted.
					before := ttyFill(t, slave)
					op := ttyOp(t, r, form, OpWrite, slave, make([]byte, 256<<10))
					q := ttyStart(t, r, op)
					ttyRingAlive(t, r)
					stop := make(chan struct{})
					var c Completion
					var read int
					switch end {
					case "cancel":
						if form != "deadline" {
							if err := q.Cancel(); err != nil {
								require.ErrorIs(t, err, ErrNotFound)
							}
						}
						c = ttyWaitDone(t, q, "the canceled write")
						close(stop)
						read = <-ttyDrain(master, stop)
						if c.Err != nil {
							require.ErrorIs(t, c.Err, ErrCanceled, "the write's completion")
						}
					case "drain":
						got := ttyDrain(master, stop)
						c = ttyWaitDone(t, q, "the write, its reader draining")
						require.NoError(t, c.Err)
						// The write's bytes reach the master after it
						// completes, at the latest once stop is seen.
						time.Sleep(20 * time.Millisecond)
						close(stop)
						read = <-got
						// Both backends write the whole buffer, as a
						// blocking write(2) would: io_uring's worker, and
						// the poll backend through its non-blocking reopen
						// of the terminal, waiting for room between parts.
						assert.Equal(t, 256<<10, c.N, "a write on a blocking terminal moves its whole buffer")
					}
					// Terminal output processing may add carriage returns:
					// the buffer is zeros, which it passes as they are.
					// Output processing passes the zeros of both as they are.
					assert.Equal(t, before+c.N, read, "bytes read from the master: the fill (%d) and what the write reports (%d)", before, c.N)
					require.NoError(t, r.Close())
				})
			}
		}
	}
}

// TestBlockingTTYReadCancels cancels reads of a blocking pty with nothing
// to read, in each form, at random moments from right after the submission
// to a millisecond later, many times: each read completes canceled, within
// seconds. On io_uring the reads run in the kernel's workers, whose cancel
// can be consumed before the worker waits (then the ring sends it again).
func TestBlockingTTYReadCancels(t *testing.T) {
	for _, b := range backends {
		for _, form := range ttyForms {
			t.Run(fmt.Sprintf("backend=%v/%s", b, form), func(t *testing.T) {
				seed := adv12Seed(t)
				rng := rand.New(rand.NewPCG(seed, 77))
				r := adv12Ring(t, b, 16)
				master, slave := adv12Pty(t)
				defer unix.Close(master)
				defer unix.Close(slave)
				rounds := 40
				if testing.Short() {
					rounds = 20
				}
				buf := make([]byte, 64)
				op := ttyOp(t, r, form, OpRead, slave, buf)
				for round := range rounds {
					if form == "token" {
						op = op.WithToken(r.NewToken())
					}
					q := ttyStart(t, r, op)
					if d := rng.IntN(1200); d > 200 {
						time.Sleep(time.Duration(d-200) * time.Microsecond)
					}
					if form != "deadline" {
						require.NoError(t, q.Cancel(), "round %d", round)
					}
					c := ttyWaitDone(t, q, fmt.Sprintf("round %d: the canceled read", round))
					require.ErrorIs(t, c.Err, ErrCanceled, "round %d: nothing was written, so the read was canceled", round)
					assert.Zero(t, c.N, "round %d", round)
				}
				if ub, ok := r.be.(*uringBackend); ok {
					t.Logf("cancels sent again: %d", ub.blk.resent.Load())
				}
				// The terminal still works: a read gets what the master
				// writes.
				q := ttyStart(t, r, op.WithDeadline(0))
				_, err := unix.Write(master, []byte("ok\n"))
				require.NoError(t, err)
				c := ttyWaitDone(t, q, "a read after the cancels")
				require.NoError(t, c.Err)
				require.Equal(t, "ok\n", string(buf[:c.N]))
				require.NoError(t, r.Close())
			})
		}
	}
}

// TestBlockingTTYClose closes a ring with reads of a blocking pty in
// flight: Close cancels them and returns, each read completing canceled.
func TestBlockingTTYClose(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			for range 10 {
				r := adv12Ring(t, b, 16)
				master, slave := adv12Pty(t)
				qs := make([]Request, 4)
				for i := range qs {
					qs[i] = ttyStart(t, r, Read(slave, make([]byte, 64), -1).Unordered())
				}
				closed := make(chan error, 1)
				go func() { closed <- r.Close() }()
				select {
				case err := <-closed:
					require.NoError(t, err)
				case <-time.After(10 * time.Second):
					t.Fatalf("Close did not return within 10s with blocking terminal reads in flight")
				}
				for _, q := range qs {
					c := ttyWaitDone(t, q, "a read the Close canceled")
					require.ErrorIs(t, c.Err, ErrCanceled)
				}
				unix.Close(master)
				unix.Close(slave)
			}
		})
	}
}

// TestBlockingTTYQuietUntilCanceled: a blocking terminal's read that
// nobody cancels costs the io_uring backend no wake-ups (no sweep runs),
// and the sweep a cancel starts ends once the read completed.
func TestBlockingTTYQuietUntilCanceled(t *testing.T) {
	r := adv12Ring(t, BackendURing, 16)
	ub, ok := r.be.(*uringBackend)
	require.True(t, ok)
	master, slave := adv12Pty(t)
	defer unix.Close(master)
	defer unix.Close(slave)
	running := func() bool {
		ub.blk.mu.Lock()
		defer ub.blk.mu.Unlock()
		return ub.blk.running
	}
	q := ttyStart(t, r, Read(slave, make([]byte, 64), -1))
	time.Sleep(50 * time.Millisecond)
	assert.False(t, running(), "a sweep runs while nobody canceled anything")
	assert.EqualValues(t, 1, ub.blk.n.Load(), "the read is tracked")
	require.NoError(t, q.Cancel())
	c := ttyWaitDone(t, q, "the canceled read")
	require.ErrorIs(t, c.Err, ErrCanceled)
	assert.Eventually(t, func() bool { return !running() }, 5*time.Second, time.Millisecond, "the sweep goes on after the read completed")
	require.NoError(t, r.Close())
}
