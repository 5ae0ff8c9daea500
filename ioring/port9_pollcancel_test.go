//go:build linux

package ioring

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A port of liburing's poll-cancel-all.c (IORING_ASYNC_CANCEL_ALL and
// CANCEL_FD): eight polls on one pipe, by fd and by registered file, all
// canceled at once by one cancel that reports how many it found (8), each
// poll completing with -ECANCELED; then a second cancel that finds none
// (0); then polls of which some fired before the cancel: the cancel
// counts only those still waiting, and the fired ones keep their POLLIN.
//
// cancelio has no cancel by fd; its cancels of several are Ring.Cancel
// (which counts), a Token and CancelAll. Through those, on both backends:
// the count is the number still in flight, every request completes once
// (canceled or with its events), and the fd's shared wait (the poll
// backend's one epoll registration for all the polls on an fd) still
// works after part of its waiters were canceled: the survivors fire on the
// next write.

func TestPort9PollCancelAll(t *testing.T) {
	got := adv13Both(t, 32, func(t *testing.T, r *Ring) []string {
		var out []string
		rd, wr := pipe(t)
		rd2, wr2 := pipe(t)
		require.NoError(t, r.RegisterFiles([]int{rd2}))
		for _, fixed := range []bool{false, true} {
			fd, w := rd, wr
			if fixed {
				fd, w = 0, wr2
			}
			op := Poll(fd, unix.POLLIN)
			if fixed {
				op = op.FixedFile()
			}
			// test1: eight polls, one cancel of all.
			qs := make([]Request, 8)
			for i := range qs {
				var err error
				qs[i], err = r.Submit(op.WithUser(i))
				require.NoError(t, err)
			}
			time.Sleep(10 * time.Millisecond)
			n, err := r.Cancel(qs...)
			require.NoError(t, err)
			res := map[string]int{}
			for _, c := range adv9Wait(t, r, qs...) {
				res[adv13Out(c)]++
			}
			n2, err := r.Cancel(qs...)
			require.NoError(t, err)
			out = append(out, fmt.Sprintf("fixed=%v cancel all 8: count %d, results %v, again %d", fixed, n, res, n2))

			// Half canceled one by one, the others fire on a write: the
			// shared wait outlives the canceled half.
			for i := range qs {
				qs[i], err = r.Submit(op.WithUser(i))
				require.NoError(t, err)
			}
			time.Sleep(10 * time.Millisecond)
			nf := 0
			for i := 0; i < 8; i += 2 {
				if qs[i].Cancel() == nil {
					nf++
				}
			}
			time.Sleep(10 * time.Millisecond)
			_, err = unix.Write(w, []byte{1})
			require.NoError(t, err)
			res = map[string]int{}
			for _, c := range adv9Wait(t, r, qs...) {
				res[fmt.Sprintf("%d:%s", c.User.(int)%2, adv13Out(c))]++
			}
			out = append(out, fmt.Sprintf("fixed=%v half canceled (%d), then a write: %v", fixed, nf, res))

			// The pipe holds one byte: new polls fire at once; polls
			// submitted with a token fire too; a cancel of them finds none.
			tok := r.NewToken()
			for i := range qs {
				qs[i], err = r.Submit(op.WithToken(tok))
				require.NoError(t, err)
			}
			res = map[string]int{}
			for _, c := range adv9Wait(t, r, qs...) {
				res[adv13Out(c)]++
			}
			n, err = r.Cancel(qs...)
			require.NoError(t, err)
			require.NoError(t, tok.Cancel())
			out = append(out, fmt.Sprintf("fixed=%v ready fd: %v, cancel after: %d, token pending %d", fixed, res, n, tok.Pending()))
			adv13Drain(t, map[bool]int{false: rd, true: rd2}[fixed])

			// A token over eight waiting polls, then the fd written after
			// the cancel: none fires, all are canceled.
			tok2 := r.NewToken()
			for i := range qs {
				qs[i], err = r.Submit(op.WithToken(tok2))
				require.NoError(t, err)
			}
			time.Sleep(10 * time.Millisecond)
			require.NoError(t, tok2.Cancel())
			_, err = unix.Write(w, []byte{1})
			require.NoError(t, err)
			res = map[string]int{}
			for _, c := range adv9Wait(t, r, qs...) {
				res[adv13Out(c)]++
			}
			out = append(out, fmt.Sprintf("fixed=%v token cancel: %v", fixed, res))
			adv13Drain(t, map[bool]int{false: rd, true: rd2}[fixed])
		}
		return out
	})
	want := []string{}
	for _, fixed := range []bool{false, true} {
		want = append(want,
			fmt.Sprintf("fixed=%v cancel all 8: count 8, results map[canceled:8], again 0", fixed),
			fmt.Sprintf("fixed=%v half canceled (4), then a write: map[0:canceled:4 1:n=1:4]", fixed),
			fmt.Sprintf("fixed=%v ready fd: map[n=1:8], cancel after: 0, token pending 0", fixed),
			fmt.Sprintf("fixed=%v token cancel: map[canceled:8]", fixed))
	}
	for b, g := range got {
		require.Equal(t, want, g, "backend %v", b)
	}
	adv13Agree(t, got)
}
