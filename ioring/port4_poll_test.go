//go:build linux

package ioring

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fourth round, many polls: ported from liburing's poll-many (a poll on
// each of thousands of pipes, fired at random and armed again),
// multicqes_drain (one-shot and multishot polls mixed, ended at random)
// and poll-mshot-update's re-arming, on every backend.

// TestPort4PollManyPipes checks a poll on each of 1,500 pipes (poll-many):
// round after round a random set of pipes is written, and exactly those
// polls complete, with POLLIN; each is armed again after its byte is
// read, some of the others are canceled and armed again, and in the end
// CancelAll ends every poll left with ErrCanceled, each once.
func TestPort4PollManyPipes(t *testing.T) {
	const pipes = 1500
	forEachBackend(t, 2048, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(4, 5))
		type end struct {
			rd, wr int
			q      Request
		}
		ends := make([]end, pipes)
		owner := map[Request]int{}
		arm := func(i int) {
			q, err := r.Submit(Poll(ends[i].rd, unix.POLLIN).WithUser(i))
			require.NoError(t, err, "poll %d", i)
			ends[i].q = q
			owner[q] = i
		}
		for i := range ends {
			ends[i].rd, ends[i].wr = pipe(t)
			arm(i)
		}
		var cs [256]Completion
		for round := range 20 {
			fired := map[int]bool{}
			for range 1 + rng.IntN(100) {
				i := rng.IntN(pipes)
				if !fired[i] {
					fired[i] = true
					_, err := unix.Write(ends[i].wr, []byte{byte(round)})
					require.NoError(t, err)
				}
			}
			// A few others canceled: they complete with ErrCanceled.
			canceled := map[int]bool{}
			for range rng.IntN(20) {
				i := rng.IntN(pipes)
				if !fired[i] && !canceled[i] {
					canceled[i] = true
					require.NoError(t, ends[i].q.Cancel(), "round %d: cancel of poll %d", round, i)
				}
			}
			for left := len(fired) + len(canceled); left > 0; {
				n, err := r.Reap(cs[:], 10*time.Second)
				require.NoError(t, err)
				require.NotZero(t, n, "round %d: %d polls still to complete after 10s", round, left)
				for _, c := range cs[:n] {
					i, ok := owner[c.Req]
					require.True(t, ok, "round %d: a completion of nobody's (or a second one): %+v", round, c)
					delete(owner, c.Req)
					require.Equal(t, i, c.User, "round %d", round)
					switch {
					case fired[i]:
						require.NoError(t, c.Err, "round %d: poll %d", round, i)
						require.NotZero(t, c.N&unix.POLLIN, "round %d: poll %d's events %#x", round, i, c.N)
						var b [1]byte
						_, err := unix.Read(ends[i].rd, b[:])
						require.NoError(t, err)
						delete(fired, i)
					case canceled[i]:
						require.ErrorIs(t, c.Err, ErrCanceled, "round %d: poll %d", round, i)
						delete(canceled, i)
					default:
						t.Fatalf("round %d: poll %d of a pipe nobody wrote completed: %+v", round, i, c)
					}
					left--
					arm(i)
				}
			}
			require.Empty(t, fired, "round %d", round)
			require.Empty(t, canceled, "round %d", round)
			k, err := r.Reap(cs[:], 0)
			require.NoError(t, err)
			require.Zero(t, k, "round %d: extra completions %v", round, cs[:k])
		}
		require.NoError(t, r.CancelAll())
		for len(owner) > 0 {
			n, err := r.Reap(cs[:], 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, n, "%d polls still pending 10s after CancelAll", len(owner))
			for _, c := range cs[:n] {
				_, ok := owner[c.Req]
				require.True(t, ok, "a completion of nobody's (or a second one): %+v", c)
				delete(owner, c.Req)
				assert.ErrorIs(t, c.Err, ErrCanceled, "%+v", c)
			}
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort4MixedPollsEndAtRandom checks one-shot and multishot polls on
// a set of eventfds, mixed with no-ops, ended at random (multicqes_drain,
// whose drain flag cancelio does not have: here the order that matters
// is each multishot request's own): each eventfd is signalled again and
// again; a multishot poll delivers its results with More set and its
// final completion last, once, whatever ends it (its cancel, its token,
// its deadline); a one-shot poll completes once; a no-op completes at
// once with 0.
func TestPort4MixedPollsEndAtRandom(t *testing.T) {
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(4, 6))
		const fds = 8
		efds := make([]int, fds)
		for i := range efds {
			efds[i] = eventFD(t)
		}
		type state struct {
			multi bool
			shots int
		}
		live := map[Request]*state{}
		tok := r.NewToken()
		submit := func() {
			fd := efds[rng.IntN(fds)]
			var op Op
			st := &state{}
			switch rng.IntN(5) {
			case 0, 1:
				op = PollMultishot(fd, unix.POLLIN)
				st.multi = true
				switch rng.IntN(3) {
				case 0:
					op = op.WithDeadline(time.Duration(1+rng.IntN(5)) * time.Millisecond)
				case 1:
					op = op.WithToken(tok)
				}
			case 2, 3:
				op = Poll(fd, unix.POLLIN)
			case 4:
				op = Nop()
			}
			q, err := r.Submit(op)
			require.NoError(t, err)
			live[q] = st
		}
		var cs [64]Completion
		shots := 0
		take := func(timeout time.Duration) int {
			n, err := r.Reap(cs[:], timeout)
			require.NoError(t, err)
			for _, c := range cs[:n] {
				st, ok := live[c.Req]
				require.True(t, ok, "a completion after the final one, or of nobody's: %+v", c)
				if c.More {
					require.True(t, st.multi, "More on a one-shot request: %+v", c)
					require.NoError(t, c.Err)
					require.NotZero(t, c.N&unix.POLLIN, "%+v", c)
					st.shots++
					shots++
					continue
				}
				delete(live, c.Req)
				if c.Err != nil {
					require.True(t, isCancel(c.Err), "%+v: %v", c, c.Err)
					require.Zero(t, c.N, "%+v", c)
				}
			}
			return n
		}
		// A multishot result needs the poll backend's poller to run
		// between a signal and the reap, which the rounds' non-blocking
		// reaps leave to the scheduler: at GOMAXPROCS 1 it may never run
		// in 200 rounds. The rounds go on, reaping with a short wait,
		// until one has been delivered (checked below), within seconds.
		until := time.Now().Add(10 * time.Second)
		for round := 0; round < 200 || (shots == 0 && time.Now().Before(until)); round++ {
			for range rng.IntN(8) {
				submit()
			}
			for range rng.IntN(4) {
				fd := efds[rng.IntN(fds)]
				drainEventFD(fd)
				signal(t, fd)
			}
			// End a few at random.
			for q := range live {
				if rng.IntN(10) == 0 {
					if err := q.Cancel(); err != nil {
						require.ErrorIs(t, err, ErrNotFound, "round %d", round)
					}
				}
			}
			if round%50 == 49 {
				require.NoError(t, tok.Cancel())
				for tok.Pending() > 0 {
					take(10 * time.Millisecond)
				}
				require.NoError(t, tok.Reset())
			}
			if round < 200 {
				take(0)
			} else {
				take(time.Millisecond)
			}
		}
		require.NoError(t, r.CancelAll())
		deadline := time.Now().Add(10 * time.Second)
		for len(live) > 0 {
			require.True(t, time.Now().Before(deadline), "%d requests without a final completion 10s after CancelAll", len(live))
			take(100 * time.Millisecond)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
		assert.Positive(t, shots, "multishot results delivered")
	})
}

// TestPort4PollOwnEventsOnly checks that requests waiting on one socket
// for different things are woken only by what they wait for (poll-many
// and poll-v-poll, with one file shared by every kind of waiter): with
// the send buffer full, a poll for output, a poll for urgent data only
// (which a unix socket never has: it waits for the errors and hang-ups
// that poll(2) reports unasked), a poll for input and a receive wait
// together. Data from the peer completes the receive and the input poll
// only; room made by the peer's reads completes the output poll only; the
// peer's close completes the urgent-data poll, with POLLHUP and nothing
// it did not ask for. (A poll for no events at all is refused.)
func TestPort4PollOwnEventsOnly(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		fillSocket(t, a)
		qout := submitPending(t, r, Poll(a, unix.POLLOUT).WithUser("out"))
		_, err := r.Submit(Poll(a, 0))
		require.ErrorIs(t, err, ErrInvalid, "a poll for no events")
		qnone := submitPending(t, r, Poll(a, unix.POLLPRI).WithUser("pri"))
		qin := submitPending(t, r, Poll(a, unix.POLLIN).WithUser("in"))
		buf := make([]byte, 8)
		qrecv := submitPending(t, r, Recv(a, buf, 0).WithUser("recv"))

		_, err = unix.Write(b, []byte("data"))
		require.NoError(t, err)
		got := map[Request]Completion{}
		for len(got) < 2 {
			c := reapOne(t, r)
			require.NotContains(t, got, c.Req)
			got[c.Req] = c
		}
		require.Contains(t, got, qin, "the input poll: %v", got)
		require.Contains(t, got, qrecv, "the receive: %v", got)
		assert.NotZero(t, got[qin].N&unix.POLLIN, "%+v", got[qin])
		assert.Equal(t, "data", string(buf[:got[qrecv].N]))
		port3Pending(t, r, "data in: the output and urgent-data polls")

		// The peer reads everything: room to send again.
		drain := make([]byte, 1<<16)
		for readable(t, b) {
			_, err := unix.Read(b, drain)
			require.NoError(t, err)
		}
		c := reapOne(t, r)
		require.Equal(t, qout, c.Req, "%+v", c)
		assert.NotZero(t, c.N&unix.POLLOUT, "%+v", c)
		port3Pending(t, r, "room made: the urgent-data poll")

		require.NoError(t, unix.Close(b))
		c = reapOne(t, r)
		require.Equal(t, qnone, c.Req, "%+v", c)
		require.NoError(t, c.Err)
		assert.NotZero(t, c.N&unix.POLLHUP, "events %#x", c.N)
		assert.Zero(t, c.N&(unix.POLLIN|unix.POLLOUT), "events %#x: not asked for", c.N)
		assertNoMore(t, r)
	})
}
