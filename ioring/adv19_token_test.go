//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv19Cause names a completion's error with every identity the contract
// gives it, for a comparison across backends.
func adv19Cause(c Completion) string {
	s := adv13Out(c)
	if errors.Is(c.Err, context.Canceled) {
		s += "+ctx.Canceled"
	}
	if errors.Is(c.Err, context.DeadlineExceeded) {
		s += "+ctx.DeadlineExceeded"
	}
	return s
}

// TestAdv19TokenResetLifecycleAgree walks one token through its life on
// a stream where its members are held behind each other, on both
// backends, and compares every outcome: Reset refused while a member is in
// the kernel or held, a Cancel that ends the held member at once and the
// head through the kernel and leaves the next read (another token's) to
// take the stream's bytes, a Reset that makes the token usable again (a
// member then reads for real), a second Cancel covering the future again,
// and Bind to contexts that have already ended (canceled, past deadline),
// whose errors must carry the context's. After Close, Cancel says
// ErrClosed and nothing submitted with the token starts.
func TestAdv19TokenResetLifecycleAgree(t *testing.T) {
	got := adv13Both(t, 8, func(t *testing.T, r *Ring) []string {
		rd, wr := pipe(t)
		var out []string
		note := func(f string, a ...any) { out = append(out, fmt.Sprintf(f, a...)) }
		reap := func(n int) {
			cs := map[string]string{}
			for range n {
				c := reapOne(t, r)
				cs[c.User.(string)] = adv19Cause(c) + fmt.Sprintf(" %q", c.User)
			}
			for _, k := range adv13Sorted(adv19Keys(cs)) {
				note("%s: %s", k, cs[k])
			}
		}
		tok := r.NewToken()
		other := r.NewToken()
		_, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("head"))
		require.NoError(t, err)
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithDeadline(time.Hour).WithUser("held1"))
		require.NoError(t, err)
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(other).WithUser("held2"))
		require.NoError(t, err)
		note("pending %d/%d", tok.Pending(), other.Pending())
		note("reset while pending: invalid=%v", errors.Is(tok.Reset(), ErrInvalid))
		require.NoError(t, tok.Cancel())
		reap(2)
		assert.Eventually(t, func() bool { return tok.Pending() == 0 }, 5*time.Second, time.Millisecond)
		_, err = unix.Write(wr, []byte("ab"))
		require.NoError(t, err)
		reap(1)
		note("reset: %v canceled=%v", tok.Reset(), tok.Canceled())
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("after-reset"))
		require.NoError(t, err)
		_, err = unix.Write(wr, []byte("cd"))
		require.NoError(t, err)
		reap(1)
		require.NoError(t, tok.Cancel())
		q, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("future"))
		require.NoError(t, err)
		note("future pending at once: %v", q.Pending() && tok.Pending() > 0)
		reap(1)
		require.NoError(t, tok.Reset())

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		tok.Bind(ctx)
		note("bound to canceled ctx: canceled=%v", tok.Canceled())
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("ctx-canceled"))
		require.NoError(t, err)
		reap(1)
		require.NoError(t, tok.Reset())
		dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer dcancel()
		tok.Bind(dctx)
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("ctx-deadline"))
		require.NoError(t, err)
		_, err = r.Submit(Foreign(func() { t.Error("hook of a request that never started") }).WithToken(tok).WithUser("foreign-ctx-deadline"))
		require.NoError(t, err)
		reap(2)

		// A deadline, a token bound to a context, and the request's own
		// cancel: the first one wins and later ones change nothing.
		require.NoError(t, tok.Reset())
		lctx, lcancel := context.WithCancel(context.Background())
		stop := tok.Bind(lctx)
		q, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithDeadline(time.Hour).WithUser("first-own"))
		require.NoError(t, err)
		note("own cancel: %v", q.Cancel())
		lcancel()
		note("second cancel: %v", q.Cancel())
		reap(1)
		stop()

		require.NoError(t, r.Close())
		note("cancel after close: %v", errors.Is(tok.Cancel(), ErrClosed))
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok))
		note("submit after close: %v", errors.Is(err, ErrClosed))
		return out
	})
	adv13Agree(t, got)
	for b, out := range got {
		want := []string{
			"pending 2/1",
			"reset while pending: invalid=true",
			`head: canceled "head"`,
			`held1: canceled "held1"`,
			`held2: n=2 "held2"`,
			"reset: <nil> canceled=false",
			`after-reset: n=2 "after-reset"`,
			"future pending at once: false",
			`future: canceled "future"`,
			"bound to canceled ctx: canceled=true",
			`ctx-canceled: canceled+ctx.Canceled "ctx-canceled"`,
			`ctx-deadline: timeout+ctx.DeadlineExceeded "ctx-deadline"`,
			`foreign-ctx-deadline: timeout+ctx.DeadlineExceeded "foreign-ctx-deadline"`,
			"own cancel: <nil>",
			"second cancel: ioring: request not found",
			`first-own: canceled "first-own"`,
			"cancel after close: true",
			"submit after close: true",
		}
		assert.Equal(t, want, out, "backend %v", b)
	}
}

func adv19Keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
