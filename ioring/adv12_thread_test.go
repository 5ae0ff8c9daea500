//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv12ThreadExitStorm submits, from goroutines locked to threads that
// then exit, ordered reads on pipes, polls and multishot polls on
// eventfds, receives and multishot receives on sockets and timeouts, while
// a canceler cancels some of them at random moments (some while their
// thread is still exiting). A request nobody canceled completes with its
// real result once its data comes, whichever threads it outlived; a
// canceled one with ErrCanceled or its real result; the bytes of each
// stream are accounted; a multishot request keeps delivering until its
// own cancel.
func TestAdv12ThreadExitStorm(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			seed := adv12Seed(t)
			for round := range 3 {
				adv12ThreadRound(t, b, seed+uint64(round))
				if t.Failed() {
					return
				}
			}
		})
	}
}

// adv12TReq is one request of the storm.
type adv12TReq struct {
	id       int
	code     Opcode
	fd       int // the fd it waits on (the group's)
	group    int
	buf      []byte
	deadline bool
}

func adv12ThreadRound(t *testing.T, b Backend, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 41))
	r := adv12Ring(t, b, 256)
	l := newAdv12Ledger(t)
	br, err := r.NewBufRing(64, 16)
	if errors.Is(err, ErrNotSupported) {
		t.Skip(err)
	}
	require.NoError(t, err)

	const groups = 24
	type group struct {
		kind   int // 0: pipe, 1: eventfd, 2: socket
		rd, wr int
		reqs   []*adv12TReq
	}
	gs := make([]*group, groups)
	for i := range gs {
		g := &group{kind: rng.IntN(3)}
		switch g.kind {
		case 0:
			g.rd, g.wr = adv12Pipe(t, 0)
		case 1:
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			require.NoError(t, err)
			g.rd, g.wr = fd, fd
		case 2:
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			g.rd, g.wr = sp[0], sp[1]
		}
		gs[i] = g
	}
	defer func() {
		for _, g := range gs {
			unix.Close(g.rd)
			if g.wr != g.rd {
				unix.Close(g.wr)
			}
		}
	}()

	// Build the requests of each group (in its submission order).
	var all []*adv12TReq
	for gi, g := range gs {
		n := 1 + rng.IntN(3)
		for range n {
			q := &adv12TReq{id: len(all), group: gi, fd: g.rd, deadline: rng.IntN(8) == 0}
			switch g.kind {
			case 0:
				q.code, q.buf = OpRead, make([]byte, 1+rng.IntN(2))
			case 1:
				if rng.IntN(2) == 0 {
					q.code = OpPoll
				} else {
					q.code = OpPollMultishot
				}
			case 2:
				switch rng.IntN(3) {
				case 0:
					q.code, q.buf = OpRecv, make([]byte, 1+rng.IntN(2))
				case 1:
					q.code, q.buf = OpRead, make([]byte, 1+rng.IntN(2))
				default:
					q.code = OpRecvMultishot
				}
			}
			if rng.IntN(10) == 0 {
				q.code, q.fd = OpTimeout, -1
			}
			g.reqs = append(g.reqs, q)
			all = append(all, q)
		}
	}
	op := func(q *adv12TReq) Op {
		var o Op
		switch q.code {
		case OpRead:
			o = Read(q.fd, q.buf, -1)
		case OpRecv:
			o = Recv(q.fd, q.buf, 0)
		case OpPoll:
			o = Poll(q.fd, unix.POLLIN)
		case OpPollMultishot:
			o = PollMultishot(q.fd, unix.POLLIN)
		case OpRecvMultishot:
			o = RecvMultishot(q.fd, br, 0)
		case OpTimeout:
			o = Timeout(time.Duration(5+rng.IntN(30)) * time.Millisecond)
		}
		if q.deadline {
			o = o.WithDeadline(time.Duration(1+rng.IntN(40)) * time.Millisecond)
		}
		return o.WithUser(q.id)
	}
	ops := make([]Op, len(all))
	for i, q := range all {
		ops[i] = op(q)
	}

	// Each group is submitted by a goroutine locked to its thread, which
	// then exits; a canceler cancels at random meanwhile.
	var mu sync.Mutex
	canceled := map[int]bool{} // requests whose cancel we asked for (and that said so)
	reqs := make([]Request, len(all))
	var swg sync.WaitGroup
	for _, g := range gs {
		swg.Add(1)
		go func() {
			defer swg.Done()
			runtime.LockOSThread() // never unlocked: the thread exits
			for _, q := range g.reqs {
				rq, err := r.Submit(ops[q.id])
				if err != nil {
					t.Errorf("Submit: %v", err)
					continue
				}
				l.accept(q.id, rq)
				mu.Lock()
				reqs[q.id] = rq
				mu.Unlock()
			}
		}()
	}
	crng := rand.New(rand.NewPCG(seed, 42))
	cdone := make(chan struct{})
	go func() {
		defer close(cdone)
		for range 1 + crng.IntN(len(all)/3+1) {
			time.Sleep(time.Duration(crng.IntN(400)) * time.Microsecond)
			id := crng.IntN(len(all))
			mu.Lock()
			rq := reqs[id]
			mu.Unlock()
			if rq == (Request{}) {
				continue
			}
			if rq.Cancel() == nil {
				mu.Lock()
				canceled[id] = true
				mu.Unlock()
			}
		}
	}()
	swg.Wait()
	<-cdone
	// Let some of the threads be gone before the data comes.
	time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	mustWrite := func(fd int, b []byte) {
		for len(b) > 0 {
			n, err := unix.Write(fd, b)
			if err == unix.EINTR {
				continue
			}
			require.NoError(t, err)
			b = b[n:]
		}
	}
	streams := map[int][]byte{}
	for gi, g := range gs {
		switch g.kind {
		case 0, 2:
			s := []byte{byte('a' + gi), byte('A' + gi), byte('0' + gi%10), '.', '!', '?'}
			streams[gi] = s
			mustWrite(g.wr, s)
		case 1:
			mustWrite(g.wr, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	}

	// Reap; a multishot request that delivered something (or whose data
	// is all there) is canceled by us to end it.
	dst := make([]Completion, 32)
	recvd := map[int]*bytes.Buffer{}
	byGroup := func(gi int) *bytes.Buffer {
		if recvd[gi] == nil {
			recvd[gi] = new(bytes.Buffer)
		}
		return recvd[gi]
	}
	// Bytes of the one-shot reads, by group, in their submission order.
	oneShot := map[int]map[int][]byte{}
	mshotFirst := map[int]bool{}
	deadline := time.Now().Add(adv12Hang)
	for l.done() < len(all) {
		if time.Now().After(deadline) {
			var left []string
			for _, q := range all {
				if _, ok := l.final[q.id]; !ok {
					left = append(left, fmt.Sprintf("%v(group %d of kind %d: %v; canceled %v)", q.code, q.group, gs[q.group].kind, adv12Codes(gs[q.group].reqs), canceled[q.id]))
				}
			}
			t.Fatalf("seed %d: %d of %d requests not done within %v: %v", seed, len(all)-l.done(), len(all), adv12Hang, left)
		}
		n, err := r.Reap(dst, 20*time.Millisecond)
		require.NoError(t, err)
		for _, c := range dst[:n] {
			id := l.got(c, "reap")
			if id < 0 || id >= len(all) {
				continue
			}
			q := all[id]
			if c.Buffer {
				byGroup(q.group).Write(br.Bytes(c))
				assert.NoError(t, br.Release(c.BufID))
			}
			if c.More {
				if !mshotFirst[id] {
					mshotFirst[id] = true
					if rq := reqs[id]; rq.Cancel() == nil {
						mu.Lock()
						canceled[id] = true
						mu.Unlock()
					}
				}
				continue
			}
			if q.buf != nil && c.N > 0 {
				if oneShot[q.group] == nil {
					oneShot[q.group] = map[int][]byte{}
				}
				oneShot[q.group][id] = append([]byte(nil), q.buf[:c.N]...)
			}
			mu.Lock()
			wasCanceled := canceled[id]
			mu.Unlock()
			switch {
			case c.Err == nil:
			case errors.Is(c.Err, ErrTimeout) && q.deadline:
			case errors.Is(c.Err, ErrCanceled) && !errors.Is(c.Err, ErrTimeout) && wasCanceled:
			default:
				t.Errorf("seed %d: %v (group %d, deadline %v, canceled by us %v): final %s", seed, q.code, q.group, q.deadline, wasCanceled, adv12Res(c))
			}
		}
		// A multishot request still armed after the data came and
		// delivered nothing: cancel it (its data may have gone to a
		// one-shot request of its group).
		if l.done() < len(all) && time.Now().After(deadline.Add(-adv12Hang+200*time.Millisecond)) {
			for _, q := range all {
				// A one-shot receive behind a multishot one on a socket may
				// find the data taken: starved, not lost.
				if q.code == OpPollMultishot || q.code == OpRecvMultishot || adv12HasCode(gs[q.group].reqs, OpRecvMultishot) {
					if reqs[q.id].Cancel() == nil {
						mu.Lock()
						canceled[q.id] = true
						mu.Unlock()
					}
				}
			}
		}
	}
	l.check()
	// Streams: the one-shot reads' bytes (in submission order) and the
	// multishot receives' buffers, followed by what is left, are the
	// stream. A group has at most one multishot receive ahead of... any
	// interleaving of both kinds is not ordered, so check the multiset
	// of bytes instead where both took part.
	for gi, g := range gs {
		if g.kind == 1 {
			continue
		}
		var got []byte
		for _, q := range g.reqs {
			got = append(got, oneShot[gi][q.id]...)
		}
		// Reads at -1 are ordered among themselves; a Recv or a multishot
		// receive beside them is not.
		// (Recv is not ordered at all, not even among Recvs.)
		mixed := adv12HasCode(g.reqs, OpRecv) || adv12HasCode(g.reqs, OpRecvMultishot)
		if recvd[gi] != nil {
			got = append(got, recvd[gi].Bytes()...)
		}
		unix.SetNonblock(g.rd, true)
		rest := make([]byte, 64)
		n, _ := unix.Read(g.rd, rest)
		if n > 0 {
			got = append(got, rest[:n]...)
		}
		want := streams[gi]
		if mixed {
			got, want = adv12Sorted(got), adv12Sorted(want)
		}
		assert.Equal(t, string(want), string(got), "seed %d: group %d's stream (kinds %v)", seed, gi, adv12Codes(g.reqs))
	}
	assert.Eventually(t, func() bool { return r.InFlight() == 0 }, adv12Hang, time.Millisecond)
	require.NoError(t, r.Close())
}

func adv12Sorted(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := 1; i < len(c); i++ {
		for j := i; j > 0 && c[j] < c[j-1]; j-- {
			c[j], c[j-1] = c[j-1], c[j]
		}
	}
	return c
}

func adv12Codes(qs []*adv12TReq) []string {
	var s []string
	for _, q := range qs {
		s = append(s, q.code.String())
	}
	return s
}

func adv12HasCode(qs []*adv12TReq, c Opcode) bool {
	for _, q := range qs {
		if q.code == c {
			return true
		}
	}
	return false
}
