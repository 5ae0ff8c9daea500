//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Requests on an fd number whose file changes under them, on duplicates of
// one file, and several requests on one file: each request acts on the file
// its fd named at submission, on both backends.

// advReplace makes fd name the file newFD names (dup3, atomically: the old
// file's number is reused at once, as a close and an open could reuse it)
// and closes newFD.
func advReplace(t *testing.T, newFD, fd int) {
	t.Helper()
	require.NoError(t, unix.Dup3(newFD, fd, unix.O_CLOEXEC))
	require.NoError(t, unix.Close(newFD))
}

// advRawEventfd returns an eventfd (blocking, counter 0) for the caller to
// close.
func advRawEventfd(t *testing.T) int {
	e, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	return e
}

// advPending checks that nothing completes for a moment (the requests
// named are still waiting).
func advPending(t *testing.T, r *Ring, what string, qs ...Request) {
	t.Helper()
	var cs [4]Completion
	n, err := r.Reap(cs[:], 100*time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, n, "%s: unexpected completions %v", what, cs[:n])
	for _, q := range qs {
		assert.True(t, q.Pending(), "%s: %v still pending", what, q)
	}
}

// TestAdvPollReusedNumberPolls: a poll, a stream read and a multishot poll
// wait on a pipe's read end; its number is then given to an eventfd. Events
// of the eventfd reach only the requests submitted on the new file, and the
// pipe's data only the old ones, which still complete with it.
func TestAdvPollReusedNumberPolls(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := advRawPipe(t, 0)
		advCloseLater(t, wr) // rd is closed by advReplace
		oldBuf := make([]byte, 8)
		oldPoll, err := r.Submit(Poll(rd, unix.POLLIN).WithUser("old poll"))
		require.NoError(t, err)
		oldRead, err := r.Submit(Read(rd, oldBuf, -1).WithUser("old read"))
		require.NoError(t, err)
		oldMulti, err := r.Submit(PollMultishot(rd, unix.POLLIN).WithUser("old multi"))
		require.NoError(t, err)
		advPending(t, r, "an empty pipe", oldPoll, oldRead, oldMulti)

		ev := advRawEventfd(t)
		advReplace(t, ev, rd) // rd now names an eventfd; the pipe lives on in the requests
		advCloseLater(t, rd)
		newPoll, err := r.Submit(Poll(rd, unix.POLLIN).WithUser("new poll"))
		require.NoError(t, err)
		newMulti, err := r.Submit(PollMultishot(rd, unix.POLLIN).WithUser("new multi"))
		require.NoError(t, err)
		advPending(t, r, "an eventfd at 0", oldPoll, oldRead, oldMulti, newPoll, newMulti)

		var one [8]byte
		one[0] = 1
		_, err = unix.Write(rd, one[:]) // the eventfd
		require.NoError(t, err)
		got := map[any]Completion{}
		for range 2 {
			c := reapOne(t, r)
			got[c.User] = c
		}
		if assert.Contains(t, got, "new poll") {
			assert.NoError(t, got["new poll"].Err)
			assert.Equal(t, unix.POLLIN, got["new poll"].N&unix.POLLIN)
		}
		if assert.Contains(t, got, "new multi") {
			assert.True(t, got["new multi"].More)
			assert.NoError(t, got["new multi"].Err)
		}
		advPending(t, r, "the eventfd's event taken", oldPoll, oldRead, oldMulti, newMulti)

		_, err = unix.Write(wr, []byte("pipe"))
		require.NoError(t, err)
		got = map[any]Completion{}
		for range 3 {
			c := reapOne(t, r)
			got[c.User] = c
		}
		assert.Contains(t, got, "old poll")
		assert.Contains(t, got, "old multi")
		if assert.Contains(t, got, "old read") {
			c := got["old read"]
			require.NoError(t, c.Err)
			assert.Equal(t, "pipe", string(oldBuf[:c.N]))
		}
		assert.True(t, got["old multi"].More)
		assert.True(t, newMulti.Pending())

		// The eventfd still counts 1: its read is the new file's.
		var cnt [8]byte
		c := reapSubmitted(t, r, Read(rd, cnt[:], -1).Unordered())
		require.NoError(t, c.Err)
		assert.Equal(t, 8, c.N)
		assert.Equal(t, byte(1), cnt[0])

		require.NoError(t, oldMulti.Cancel())
		require.NoError(t, newMulti.Cancel())
		for range 2 {
			c := reapOne(t, r)
			assert.False(t, c.More)
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestAdvPollReusedNumberSocket: a receive waits on one end of a socket
// pair whose number then names a pipe's read end. A read of the pipe
// (unordered: the order follows fd numbers) gets the pipe's data, the
// receive gets what the peer sends, and a cancel of one leaves the other.
func TestAdvPollReusedNumberSocket(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		s, peer := advRawPair(t, unix.SOCK_STREAM)
		advCloseLater(t, peer) // s is closed by advReplace
		rbuf := make([]byte, 16)
		recv, err := r.Submit(Recv(s, rbuf, 0).WithUser("recv"))
		require.NoError(t, err)
		send, err := r.Submit(Send(s, []byte("to peer"), 0).WithUser("send"))
		require.NoError(t, err)
		c := reapOne(t, r)
		assert.Equal(t, send, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 7, c.N)

		prd, pwr := advRawPipe(t, 0)
		advCloseLater(t, pwr)
		advReplace(t, prd, s)
		advCloseLater(t, s)
		pbuf := make([]byte, 16)
		read, err := r.Submit(Read(s, pbuf, -1).Unordered().WithUser("pipe read"))
		require.NoError(t, err)
		advPending(t, r, "nothing sent, nothing written", recv, read)

		_, err = unix.Write(pwr, []byte("into the pipe"))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, read, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, "into the pipe", string(pbuf[:c.N]))
		assert.True(t, recv.Pending())

		// The peer reads what the send sent on the old socket.
		got := make([]byte, 16)
		n, err := unix.Read(peer, got)
		require.NoError(t, err)
		assert.Equal(t, "to peer", string(got[:n]))

		_, err = unix.Write(peer, []byte("from peer"))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, recv, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, "from peer", string(rbuf[:c.N]))

		assert.True(t, pipeEmpty(t, s), "nothing left in the pipe")
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestAdvPollDuplicatesShareData: stream reads wait on a pipe's read end and
// on a dup of it (two fd numbers, one file: not ordered against each
// other). Each write of 4 bytes completes exactly one of them, the other
// keeps waiting and can be canceled, and no byte is lost or delivered
// twice; a poll on each number sees the same readiness.
func TestAdvPollDuplicatesShareData(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := advPipe(t, 0)
		d, err := unix.Dup(rd)
		require.NoError(t, err)
		advCloseLater(t, d)
		bufs := map[Request][]byte{}
		var reqs []Request
		for _, fd := range []int{rd, d, rd, d} {
			b := make([]byte, 4)
			q, err := r.Submit(Read(fd, b, -1))
			require.NoError(t, err)
			bufs[q] = b
			reqs = append(reqs, q)
		}
		advPending(t, r, "an empty pipe", reqs...)
		var all []byte
		for _, chunk := range []string{"abcd", "efgh", "ijkl"} {
			_, err := unix.Write(wr, []byte(chunk))
			require.NoError(t, err)
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			require.Equal(t, 4, c.N)
			all = append(all, bufs[c.Req]...)
			delete(bufs, c.Req)
			advPending(t, r, "one chunk, one read")
		}
		assert.ElementsMatch(t, []byte("abcdefghijkl"), all, "every byte once")
		require.Len(t, bufs, 1)
		for q := range bufs {
			require.NoError(t, q.Cancel())
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.Zero(t, c.N)
		}
		p1, err := r.Submit(Poll(rd, unix.POLLIN))
		require.NoError(t, err)
		p2, err := r.Submit(Poll(d, unix.POLLIN))
		require.NoError(t, err)
		advPending(t, r, "polls of an empty pipe", p1, p2)
		_, err = unix.Write(wr, []byte("z"))
		require.NoError(t, err)
		for range 2 {
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			assert.Equal(t, unix.POLLIN, c.N&unix.POLLIN)
		}
		assert.False(t, pipeEmpty(t, rd), "polls take nothing")
		assertSettled(t, r)
	})
}

// TestAdvPollBothDirectionsOneSocket: a receive and a send wait on one
// socket (the send because the socket's buffer is full). Canceling one
// leaves the other waiting for its own readiness; the canceled send moved
// no byte, and what the peer finally reads is exactly what the completed
// sends report.
func TestAdvPollBothDirectionsOneSocket(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		s, peer := advPair(t, unix.SOCK_STREAM)
		require.NoError(t, unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
		filled := 0
		chunk := bytes.Repeat([]byte{'f'}, 1024)
		for {
			n, err := unix.SendmsgN(s, chunk, nil, nil, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			require.NoError(t, err)
			filled += n
		}
		rbuf := make([]byte, 8)
		recv, err := r.Submit(Recv(s, rbuf, 0).WithUser("recv"))
		require.NoError(t, err)
		send1, err := r.Submit(Send(s, bytes.Repeat([]byte{'1'}, 512), 0).WithUser("send1"))
		require.NoError(t, err)
		send2, err := r.Submit(Send(s, bytes.Repeat([]byte{'2'}, 512), 0).WithUser("send2"))
		require.NoError(t, err)
		advPending(t, r, "nothing to receive, no room to send", recv, send1, send2)

		require.NoError(t, send1.Cancel())
		c := reapOne(t, r)
		assert.Equal(t, send1, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Zero(t, c.N)
		advPending(t, r, "after the first send's cancel", recv, send2)

		_, err = unix.Write(peer, []byte("hello"))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, recv, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, "hello", string(rbuf[:c.N]))
		advPending(t, r, "still no room", send2)

		// The peer drains: the second send goes, the first never did.
		var got []byte
		buf := make([]byte, 64<<10)
		readUpTo := func(n int) {
			for len(got) < n {
				k, err := unix.Read(peer, buf[:min(len(buf), n-len(got))])
				require.NoError(t, err)
				got = append(got, buf[:k]...)
			}
		}
		readUpTo(filled)
		c = reapOne(t, r)
		assert.Equal(t, send2, c.Req)
		require.NoError(t, c.Err)
		sent := c.N
		require.Positive(t, sent)
		readUpTo(filled + sent)
		assert.True(t, pipeEmpty(t, peer), "no byte beyond what the sends report")
		assert.Equal(t, string(bytes.Repeat([]byte{'f'}, filled)), string(got[:filled]))
		assert.Equal(t, string(bytes.Repeat([]byte{'2'}, sent)), string(got[filled:]), "only the second send's bytes")
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}
