//go:build linux

package ioring

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Registered files (files.go) in the conformance suite, as op=read-fixed-file
// and op=write-fixed-file on each backend (run by
// TestConformanceSocketAndFileOps), and the rule the poll backend
// shares with io_uring: a request acts on the file its fd named when it
// was submitted, even when the caller closes that fd and the number names
// another file by the time the I/O happens.

// withFiles registers fds on r for the test.
func withFiles(t *testing.T, r *Ring, fds ...int) {
	t.Helper()
	require.NoError(t, r.RegisterFiles(fds))
	t.Cleanup(func() {
		if err := r.UnregisterFiles(); !errors.Is(err, ErrClosed) {
			assert.NoError(t, err)
		}
	})
}

// fileCases are the registered-file operations' part of the suite
// (TestConformanceSocketAndFileOps runs them with the others): every op
// names registered file 0 or an index beside it, registered on the ring
// that on names last (the suite's ring, or the one without the opcode).
func fileCases() []opCase {
	var cur *Ring
	on := func(r *Ring) { cur = r }
	invalid := func(t *testing.T) []Op {
		rd, _ := pipe(t)
		buf := make([]byte, 8)
		withFiles(t, cur, rd)
		return []Op{
			Read(1, buf, 0).FixedFile(), // beyond the table
			Read(-1, buf, 0).FixedFile(),
			Read(0, nil, 0).FixedFile(),
			Write(hugeFD, buf, 0).FixedFile(),
			Close(0).FixedFile(),
			OpenAt(unix.AT_FDCWD, "x", 0, 0).FixedFile(),
			Timeout(time.Second).FixedFile(),
			Nop().FixedFile(), // no fd, whatever the fast path admits
			Foreign(nil).FixedFile(),
		}
	}
	return []opCase{
		{
			name: "read-fixed-file", code: OpRead, on: on, invalid: invalid,
			success: func(t *testing.T, r *Ring) {
				fd := tempFile(t, []byte("registered"))
				rd, wr := pipe(t)
				// The registered pipe outlives the caller's fd.
				dup, err := unix.Dup(rd)
				require.NoError(t, err)
				withFiles(t, r, fd, -1, dup)
				require.NoError(t, unix.Close(dup))
				buf := make([]byte, 16)
				c := doOp(t, r, Read(0, buf, 0).FixedFile())
				require.NoError(t, c.Err)
				assert.Equal(t, "registered", string(buf[:c.N]))
				unix.Write(wr, []byte("pipe"))
				c = doOp(t, r, Read(2, buf, -1).FixedFile())
				require.NoError(t, c.Err)
				assert.Equal(t, "pipe", string(buf[:c.N]))
				c = doOp(t, r, Readv(0, [][]byte{buf[:3], buf[3:]}, 0).FixedFile())
				require.NoError(t, c.Err)
				assert.Equal(t, "registered", string(buf[:c.N]))
				c = doOp(t, r, Read(1, buf, 0).FixedFile())
				assert.ErrorIs(t, c.Err, unix.EBADF, "an empty entry")
				var ioe *IOError
				if assert.ErrorAs(t, c.Err, &ioe) {
					assert.Equal(t, 1, ioe.FD, "the error names the index")
				}
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				rd, _ := pipe(t)
				withFiles(t, cur, rd)
				return Read(0, make([]byte, 8), -1).FixedFile(), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				rd, wr := pipe(t)
				unix.Write(wr, []byte("x"))
				withFiles(t, cur, rd)
				return Read(0, make([]byte, 8), -1).FixedFile(), func(t *testing.T) { assert.True(t, readable(t, rd), "nothing consumed") }
			},
		},
		{
			name: "write-fixed-file", code: OpWrite, on: on, invalid: invalid,
			success: func(t *testing.T, r *Ring) {
				fd := tempFile(t, nil)
				a, b := socketpair(t, unix.SOCK_STREAM)
				withFiles(t, r, fd, a)
				c := doOp(t, r, Write(0, []byte("written"), 0).FixedFile())
				require.NoError(t, c.Err)
				assert.Equal(t, 7, c.N)
				got := make([]byte, 16)
				n, _ := unix.Pread(fd, got, 0)
				assert.Equal(t, "written", string(got[:n]))
				c = doOp(t, r, Write(1, []byte("sock"), -1).FixedFile())
				require.NoError(t, c.Err)
				n, _ = unix.Read(b, got)
				assert.Equal(t, "sock", string(got[:n]))
				c = doOp(t, r, Send(1, []byte("send"), 0).FixedFile())
				require.NoError(t, c.Err)
				n, _ = unix.Read(b, got)
				assert.Equal(t, "send", string(got[:n]), "socket operations take registered files too")
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				fillSocket(t, a)
				withFiles(t, cur, a)
				return Write(0, make([]byte, 1<<20), -1).FixedFile(), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				withFiles(t, cur, a)
				return Write(0, []byte("x"), -1).FixedFile(), func(t *testing.T) { assert.False(t, readable(t, b), "nothing written") }
			},
		},
	}
}

// RegisterFiles refuses bad input and says what is wrong.
func TestRegisterFilesErrors(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		assert.ErrorIs(t, r.RegisterFiles(nil), ErrInvalid)
		assert.ErrorIs(t, r.RegisterFiles([]int{-2}), ErrInvalid)
		assert.ErrorIs(t, r.UnregisterFiles(), unix.ENXIO, "nothing registered")
		rd, _ := pipe(t)
		const closed = 1<<20 - 3 // above any fd the test process opens
		assert.ErrorIs(t, r.RegisterFiles([]int{rd, closed}), unix.EBADF)
		require.NoError(t, r.RegisterFiles([]int{rd}))
		assert.ErrorIs(t, r.RegisterFiles([]int{rd}), unix.EBUSY)
		require.NoError(t, r.UnregisterFiles())
		require.NoError(t, r.RegisterFiles([]int{rd, -1}), "again, after unregister")
		// Left registered: Close releases them (forEachBackend counts fds).
	})
}

// submitPending submits op and checks that it stays pending.
func submitPending(t *testing.T, r *Ring, op Op) Request {
	t.Helper()
	q, err := r.Submit(op)
	require.NoError(t, err)
	var c [1]Completion
	n, _ := r.Reap(c[:], 20*time.Millisecond)
	require.Zero(t, n, "pending op completed: %+v", c[0])
	return q
}

// renumber makes fd name what from names: the caller closed fd and got
// its number back for another file.
func renumber(t *testing.T, from, fd int) {
	t.Helper()
	require.NoError(t, unix.Dup3(from, fd, unix.O_CLOEXEC))
}

// A socket operation acts on the socket its fd named at submission: on the
// poll backend too, where it waits on a duplicate, so that a caller who
// closes the fd and gets the number back for another socket does not see
// the old request's I/O land on the new one.
func TestConformanceSocketOpsHoldTheirFile(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		t.Run("recv", func(t *testing.T) {
			a, b := socketpair(t, unix.SOCK_STREAM)
			buf := make([]byte, 16)
			q := submitPending(t, r, Recv(a, buf, 0))
			c2, d2 := socketpair(t, unix.SOCK_STREAM)
			renumber(t, c2, a)
			unix.Write(d2, []byte("new"))
			unix.Write(b, []byte("old"))
			got := reapOne(t, r)
			require.Equal(t, q, got.Req)
			require.NoError(t, got.Err)
			assert.Equal(t, "old", string(buf[:got.N]), "the submitted socket's data")
			assert.True(t, readable(t, a), "the new socket's data is untouched")
		})
		t.Run("send", func(t *testing.T) {
			a, b := socketpair(t, unix.SOCK_STREAM)
			fillSocket(t, a)
			q := submitPending(t, r, Send(a, []byte("late"), 0))
			c2, d2 := socketpair(t, unix.SOCK_STREAM)
			renumber(t, c2, a)
			big := make([]byte, 1<<20)
			var got Completion
			deadline := time.Now().Add(10 * time.Second)
			for { // make room on the old socket until the send is done
				unix.Recvfrom(b, big, unix.MSG_DONTWAIT)
				var c [1]Completion
				if n, _ := r.Reap(c[:], 10*time.Millisecond); n == 1 {
					got = c[0]
					break
				}
				require.True(t, time.Now().Before(deadline), "the send completes")
			}
			require.Equal(t, q, got.Req)
			require.NoError(t, got.Err)
			assert.False(t, readable(t, d2), "nothing sent on the new socket")
		})
		t.Run("accept", func(t *testing.T) {
			for _, flags := range []int{0, unix.SOCK_NONBLOCK} {
				l, sa := tcpListener(t, 8, flags)
				q := submitPending(t, r, Accept(l, 0))
				l2, sa2 := tcpListener(t, 8, flags)
				renumber(t, l2, l)
				dialTCP(t, sa2)
				dialTCP(t, sa)
				got := reapOne(t, r)
				require.Equal(t, q, got.Req)
				require.NoError(t, got.Err)
				name, err := unix.Getsockname(got.N)
				require.NoError(t, err)
				assert.Equal(t, sa.Port, name.(*unix.SockaddrInet4).Port, "accepted on the submitted listener")
				unix.Close(got.N)
				assert.True(t, readable(t, l), "the new listener's connection still waits")
			}
		})
	})
}
