//go:build linux

package ioring

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eleventh round: values from another ring, from a closed ring, and Ops
// mutated after they were built.

// TestAdv11CrossRing: a Token, a BufRing, a Request of ring A handed to
// ring B is refused (Submit: ErrInvalid, nothing accepted) or skipped
// (Cancel: not counted; Complete: ErrNotFound), and neither ring is
// disturbed: A's requests keep running, A's BufRing is not counted busy by
// B's refusal, A's token still covers A's requests only. The same once A
// is closed.
func TestAdv11CrossRing(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, a *Ring) {
		b, err := New(Config{Entries: 8, Backend: backendOf(t)})
		require.NoError(t, err)
		defer b.Close()
		rd, wr := pipe(t)
		sa, _ := socketpair(t, unix.SOCK_STREAM)

		tokA := a.NewToken()
		brA, err := a.NewBufRing(2, 8)
		require.NoError(t, err)
		qA, err := a.Submit(Read(rd, make([]byte, 1), -1).WithToken(tokA).WithUser("a-read"))
		require.NoError(t, err)
		fA, err := a.Submit(Foreign(func() {}).WithUser("a-foreign"))
		require.NoError(t, err)

		before := b.Stats().Submitted
		_, err = b.Submit(Nop().WithToken(tokA))
		assert.ErrorIs(t, err, ErrInvalid, "a token of another ring")
		_, err = b.Start(Nop().WithToken(tokA))
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = b.Do(context.Background(), Nop().WithToken(tokA))
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = b.Submit(RecvMultishot(sa, brA, 0))
		assert.ErrorIs(t, err, ErrInvalid, "a BufRing of another ring")
		reqs := make([]Request, 3)
		n, err := b.SubmitBatch([]Op{Nop(), Nop().WithToken(tokA), Nop()}, reqs)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, n)
		assert.Equal(t, make([]Request, 3), reqs, "no Request handed out")
		assert.Equal(t, before, b.Stats().Submitted, "nothing accepted on B")
		assert.Zero(t, b.InFlight())

		// A's requests, given to B.
		got, err := b.Cancel(qA, fA, qA)
		assert.NoError(t, err)
		assert.Zero(t, got, "B cancels none of A's requests")
		assert.NoError(t, b.CancelAll())
		assert.ErrorIs(t, b.Complete(fA, 7, nil), ErrNotFound, "B completes none of A's requests")
		assert.True(t, qA.Pending(), "A's read untouched")
		assert.True(t, fA.Pending(), "A's foreign request untouched")
		assert.Same(t, a, qA.Ring())

		// B's own token does not reach A; A's token does not reach B.
		tokB := b.NewToken()
		qB, err := b.Submit(Read(rd, make([]byte, 1), -1).Unordered().WithToken(tokB))
		require.NoError(t, err)
		require.NoError(t, tokA.Cancel())
		assert.True(t, qB.Pending(), "A's token leaves B's read")
		c := reapOne(t, a)
		assert.Equal(t, qA, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)

		// A's BufRing is not busy: B's refusal counted nothing in.
		require.NoError(t, brA.Close(), "A's BufRing, which B refused")

		// A closed: its values are still another ring's on B.
		require.NoError(t, a.Complete(fA, 3, nil))
		assert.Equal(t, fA, reapOne(t, a).Req)
		brA2, err := a.NewBufRing(2, 8)
		require.NoError(t, err)
		require.NoError(t, a.Close())
		_, err = b.Submit(Nop().WithToken(tokA))
		assert.ErrorIs(t, err, ErrInvalid, "a token of a closed ring, on another ring")
		_, err = b.Submit(RecvMultishot(sa, brA2, 0))
		assert.ErrorIs(t, err, ErrInvalid, "a BufRing of a closed ring, on another ring")
		assert.ErrorIs(t, tokA.Reset(), nil, "a token of a closed ring may be reset: nothing is pending")
		_, err = a.Submit(Nop().WithToken(tokA))
		assert.ErrorIs(t, err, ErrClosed)
		got, err = b.Cancel(qA, fA)
		assert.NoError(t, err)
		assert.Zero(t, got)
		assert.ErrorIs(t, qA.Cancel(), ErrNotFound)
		_, err = qA.Wait(context.Background())
		assert.ErrorIs(t, err, ErrNotFound)

		// B still works, and its read ends with its own cancel.
		require.NoError(t, qB.Cancel())
		c = reapOne(t, b)
		assert.Equal(t, qB, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		unix.Write(wr, []byte("x"))
		c = doOp(t, b, Read(rd, make([]byte, 1), -1))
		assert.NoError(t, c.Err)
		assert.Equal(t, 1, c.N)
		assertSettled(t, b)
	})
}

// adv11Huge returns n bytes of address space that nothing may touch (a
// PROT_NONE mapping, unmapped with the test), for checks that must refuse
// a buffer by its length alone.
func adv11Huge(t *testing.T, n int) []byte {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}

// TestAdv11BatchBadInMiddle: SubmitBatch "checks every op first: on bad
// input nothing is submitted". For each kind of bad op, placed between
// good ones (the first plain, on io_uring's fast path, or not), the batch
// is refused whole, with the same error on both backends; nothing is
// accepted, no Request handed out, no completion comes, and the ring
// works afterwards. SubmitAndReap refuses it the same way.
func TestAdv11BatchBadInMiddle(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		rd, _ := pipe(t)
		sa, _ := socketpair(t, unix.SOCK_DGRAM)
		other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
		require.NoError(t, err)
		defer other.Close()
		brOther, err := other.NewBufRing(1, 8)
		require.NoError(t, err)
		brClosed, err := r.NewBufRing(1, 8)
		require.NoError(t, err)
		require.NoError(t, brClosed.Close())
		off := Read(rd, make([]byte, 1), 0)
		off.SetOffset(-7)
		mChanged := &Msg{Buffers: [][]byte{make([]byte, 4)}}
		changed := RecvMsg(sa, mChanged, 0)
		mChanged.Buffers = append(mChanged.Buffers, make([]byte, 4))
		// Two buffers of 1 GiB, unreadable, whose sum overflows a 32-bit
		// int (once: a 32-bit process has room for few such mappings).
		gib2 := [][]byte{adv11Huge(t, 1<<30), adv11Huge(t, 1<<30)}
		bad := []struct {
			name string
			op   Op
		}{
			{"zero Op", Op{}},
			{"zero Op with deadline", Op{}.WithDeadline(time.Second)},
			{"nil buffer", Read(rd, nil, 0)},
			{"empty buffer", Write(rd, []byte{}, 0)},
			{"fd -1", Read(-1, make([]byte, 1), 0)},
			{"offset -2", Read(rd, make([]byte, 1), -2)},
			{"SetOffset -7", off},
			{"poll no events", Poll(rd, 0)},
			{"negative timeout", Timeout(-1)},
			{"negative deadline", Nop().WithDeadline(-time.Nanosecond)},
			{"zero token", Nop().WithToken(&Token{})},
			{"token of another ring", Nop().WithToken(other.NewToken())},
			{"readv nil inside", Readv(rd, [][]byte{make([]byte, 1), nil}, 0)},
			{"readv none", Readv(rd, nil, 0)},
			{"writev 1025", Writev(rd, make([][]byte, 1025), 0)},
			{"readv over 2GiB", Readv(rd, gib2, 0)},
			{"sendmsg over 2GiB", SendMsg(sa, &Msg{Buffers: gib2}, 0)},
			{"recvmsg nil Msg", RecvMsg(sa, nil, 0)},
			{"recvmsg empty Msg", RecvMsg(sa, &Msg{}, 0)},
			{"recvmsg Msg changed", changed},
			{"sendmsg bad addr", SendMsg(sa, &Msg{Buffers: [][]byte{{1}}, Addr: &unix.SockaddrUnix{Name: strings.Repeat("x", 200)}}, 0)},
			{"connect nil", Connect(sa, nil)},
			{"shutdown 9", Shutdown(sa, 9)},
			{"accept flags", Accept(sa, unix.O_APPEND)},
			{"recv negative flags", Recv(sa, make([]byte, 1), -1)},
			{"recv-multishot nil BufRing", RecvMultishot(sa, nil, 0)},
			{"recv-multishot other BufRing", RecvMultishot(sa, brOther, 0)},
			{"recv-multishot closed BufRing", RecvMultishot(sa, brClosed, 0)},
			{"recv-multishot waitall", RecvMultishot(sa, brOther, unix.MSG_WAITALL)},
			{"fixed file none registered", Read(0, make([]byte, 1), 0).FixedFile()},
			{"fixed file on nop", Nop().FixedFile()},
			{"fixed file on close", Close(0).FixedFile()},
			{"fixed file on foreign", Foreign(nil).FixedFile()},
			{"openat NUL", OpenAt(unix.AT_FDCWD, "a\x00b", unix.O_RDONLY, 0)},
			{"statx nil", Statx(unix.AT_FDCWD, "/", 0, unix.STATX_TYPE, nil)},
		}
		if big := int64(math.MaxInt32) + 1; int64(math.MaxInt) >= big { // 64-bit ints only
			bad = append(bad, []struct {
				name string
				op   Op
			}{
				{"huge buffer", Read(rd, adv11Huge(t, int(big)), 0)},
				{"fd above MaxInt32", Write(int(big), make([]byte, 1), 0)},
			}...)
		}
		firsts := []struct {
			name string
			op   func() Op
		}{
			{"plain", func() Op { return Nop() }},
			{"read", func() Op { return Read(rd, make([]byte, 1), 0) }},
			{"timeout", func() Op { return Timeout(time.Hour) }},
		}
		before := r.Stats().Submitted
		for _, f := range firsts {
			for _, b := range bad {
				ops := []Op{f.op(), b.op, Nop()}
				reqs := make([]Request, len(ops))
				n, err := r.SubmitBatch(ops, reqs)
				o.add("%s/%s: n=%d invalid=%v err=%v", f.name, b.name, n, errors.Is(err, ErrInvalid), err)
				assert.ErrorIs(t, err, ErrInvalid, "%s/%s", f.name, b.name)
				assert.Zero(t, n, "%s/%s", f.name, b.name)
				assert.Equal(t, make([]Request, len(ops)), reqs, "%s/%s: no Request handed out", f.name, b.name)
				var cs [2]Completion
				n, m, err := r.SubmitAndReap(ops, reqs, cs[:], time.Millisecond)
				assert.ErrorIs(t, err, ErrInvalid, "SubmitAndReap %s/%s", f.name, b.name)
				assert.Zero(t, n+m, "SubmitAndReap %s/%s", f.name, b.name)
				_, err = r.Submit(b.op)
				assert.ErrorIs(t, err, ErrInvalid, "Submit %s", b.name)
			}
		}
		assert.Equal(t, before, r.Stats().Submitted, "nothing accepted")
		assert.Zero(t, r.InFlight())
		assertNoMore(t, r)
		// The ring still works.
		c := doOp(t, r, Nop().WithUser("after"))
		assert.NoError(t, c.Err)
		assert.Equal(t, "after", c.User)
	})
}

// TestAdv11OpMutations: an Op changed after it was built, or submitted
// and changed, behaves as its last form says, and a submitted request is
// not changed by later changes of its Op.
func TestAdv11OpMutations(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("0123456789"))
		buf := make([]byte, 2)
		op := Read(fd, buf, 5)
		q, err := r.Submit(op)
		require.NoError(t, err)
		op.SetOffset(0) // after submission: only later ones
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.Equal(t, "56", string(buf[:c.N]), "the request read at its submitted offset")
		c = doOp(t, r, op)
		assert.Equal(t, "01", string(buf[:c.N]))

		op.SetOffset(-2)
		_, err = r.Submit(op)
		assert.ErrorIs(t, err, ErrInvalid, "SetOffset below -1")
		op.SetOffset(8)
		c = doOp(t, r, op)
		assert.Equal(t, "89", string(buf[:c.N]), "valid again")

		// SetOffset on operations without an offset changes nothing.
		nop := Nop()
		nop.SetOffset(-5)
		assert.NoError(t, doOp(t, r, nop).Err)
		tm := Timeout(time.Millisecond)
		tm.SetOffset(-5)
		assert.NoError(t, doOp(t, r, tm).Err)
		var zero Op
		zero.SetOffset(3)
		_, err = r.Submit(zero)
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = r.Submit(zero.Unordered().WithUser(1).WithDeadline(time.Second))
		assert.ErrorIs(t, err, ErrInvalid)

		// A token replaced by nil: the request has none.
		rd, wr := pipe(t)
		tok := r.NewToken()
		q, err = r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok).WithToken(nil))
		require.NoError(t, err)
		require.NoError(t, tok.Cancel())
		assert.True(t, q.Pending(), "not covered by the token it no longer has")
		assert.Zero(t, tok.Pending())
		// A token replaced by another: only the last one covers it.
		tok2 := r.NewToken()
		q2, err := r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok).WithToken(tok2).WithUser("two"))
		require.NoError(t, err)
		assert.True(t, q2.Pending(), "the canceled token was replaced")
		assert.Equal(t, 1, tok2.Pending())
		unix.Write(wr, []byte("ab"))
		seen := map[Request]Completion{}
		for range 2 {
			c := reapOne(t, r)
			seen[c.Req] = c
		}
		assert.NoError(t, seen[q].Err)
		assert.NoError(t, seen[q2].Err)
		assert.Equal(t, "two", seen[q2].User)

		// A user value replaced by nil: the completion carries nil.
		c = doOp(t, r, Nop().WithUser("x").WithUser(nil))
		assert.Nil(t, c.User)

		// Deadlines: the last one counts; huge ones never fire; 0 is none.
		q, err = r.Submit(Read(rd, make([]byte, 1), -1).WithDeadline(time.Nanosecond).WithDeadline(time.Duration(math.MaxInt64)))
		require.NoError(t, err)
		q3, err := r.Submit(Timeout(time.Hour).WithDeadline(time.Millisecond).WithDeadline(0).WithDeadline(2 * time.Millisecond))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, q3, c.Req)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.True(t, q.Pending(), "a deadline of MaxInt64 does not fire")
		require.NoError(t, q.Cancel())
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout)
		c = doOp(t, r, Timeout(time.Millisecond).WithDeadline(time.Hour))
		assert.NoError(t, c.Err, "a timeout that ends before its deadline")
		assertSettled(t, r)
	})
}

// TestAdv11MsgTwoRequestsAtOnce: a Msg serves one request at a time. A
// caller that breaks the rule (a second RecvMsg on the same Msg while the
// first is in flight, with other buffers; or one Msg twice in one batch;
// or on another ring) is refused up front with ErrInvalid, on both
// backends alike, and nothing of the refused submission goes in: where it
// was not, the poll backend's first request received into the second
// one's buffers (it reads the msghdr at each try, which the second
// submission rebuilt), and on io_uring both requests' results (sender,
// flags, control length) landed in the one msghdr. Once the first
// request's completion is delivered the Msg serves again, and a refused
// batch or a failed submission leaves it free.
func TestAdv11MsgTwoRequestsAtOnce(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		a, b := socketpair(t, unix.SOCK_DGRAM)
		m := &Msg{}
		b1, b2 := make([]byte, 4), make([]byte, 4)
		m.Buffers = [][]byte{b1}
		q1, err := r.Submit(RecvMsg(a, m, 0))
		require.NoError(t, err)
		m.Buffers = [][]byte{b2}
		_, err = r.Submit(RecvMsg(a, m, 0))
		o.add("second Submit: %v", err)
		require.ErrorIs(t, err, ErrInvalid)
		reqs := make([]Request, 2)
		n, err := r.SubmitBatch([]Op{Nop(), RecvMsg(a, m, 0)}, reqs)
		o.add("batch naming it: %d, %v", n, err)
		require.ErrorIs(t, err, ErrInvalid)
		require.Zero(t, n)
		other, err := New(Config{Entries: 4, Backend: r.Backend().Backend})
		require.NoError(t, err)
		_, err = other.Submit(RecvMsg(a, m, 0))
		o.add("another ring's Submit: %v", err)
		require.ErrorIs(t, err, ErrInvalid)
		require.NoError(t, other.Close())

		_, err = unix.Write(b, []byte("one"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q1, c.Req)
		o.add("first: %s %q", adv9Res(c), b1[:c.N])
		require.Equal(t, "one", string(b1[:c.N]))

		// Delivered: the Msg serves again, once per batch.
		m2 := &Msg{Buffers: [][]byte{make([]byte, 4)}}
		n, err = r.SubmitBatch([]Op{RecvMsg(a, m2, 0), RecvMsg(a, m, 0), RecvMsg(a, m, 0)}, make([]Request, 3))
		o.add("one Msg twice in a batch: %d, %v", n, err)
		require.ErrorIs(t, err, ErrInvalid)
		require.Zero(t, n)
		m.Buffers = [][]byte{b2}
		q2, err := r.Submit(RecvMsg(a, m, 0))
		require.NoError(t, err, "the Msg after its request's completion")
		q3, err := r.Submit(RecvMsg(a, m2, 0))
		require.NoError(t, err, "a Msg of a refused batch")
		_, err = unix.Write(b, []byte("two"))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("six"))
		require.NoError(t, err)
		got := adv9WaitBy(t, r, q2, q3)
		in := []string{string(b2[:got[q2].N]), string(m2.Buffers[0][:got[q3].N])}
		o.add("each request's own buffer holds a datagram: %v", (in[0] == "two" && in[1] == "six") || (in[0] == "six" && in[1] == "two"))
	})
}

// TestAdv11MsgFreeAfterFull: a RecvMsg refused because the ring is full
// (ErrFull) leaves its Msg free: once there is room it is submitted, in a
// batch as alone.
func TestAdv11MsgFreeAfterFull(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_DGRAM)
		rd, _ := pipe(t)
		var polls []Request
		for {
			q, err := r.Submit(Poll(rd, unix.POLLIN))
			if err != nil {
				require.ErrorIs(t, err, ErrFull)
				break
			}
			polls = append(polls, q)
		}
		m := &Msg{Buffers: [][]byte{make([]byte, 4)}}
		_, err := r.Submit(RecvMsg(a, m, 0))
		require.ErrorIs(t, err, ErrFull)
		n, err := r.SubmitBatch([]Op{RecvMsg(a, m, 0)}, make([]Request, 1))
		require.ErrorIs(t, err, ErrFull)
		require.Zero(t, n)
		n, err = r.Cancel(polls...)
		require.NoError(t, err)
		require.Equal(t, len(polls), n)
		adv9Wait(t, r, polls...)
		q, err := r.Submit(RecvMsg(a, m, 0))
		require.NoError(t, err, "the Msg of submissions refused for want of room")
		_, err = unix.Write(b, []byte("abc"))
		require.NoError(t, err)
		c := adv9Wait(t, r, q)[0]
		require.NoError(t, c.Err)
		require.Equal(t, "abc", string(m.Buffers[0][:c.N]))
	})
}
