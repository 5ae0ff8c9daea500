//go:build linux

package ioring

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkMessageStream: a peer writes 64-byte messages on a socketpair
// and the ring receives them one by one, with a Recv submitted again for
// each message (op=recv) or with one RecvMultishot whose buffers go back
// to its BufRing (op=recv-multishot). One op is one message.
func BenchmarkMessageStream(b *testing.B) {
	for _, op := range []string{"recv", "recv-multishot"} {
		for _, be := range backends {
			b.Run("op="+op+"/backend="+be.String(), func(b *testing.B) {
				r, err := New(Config{Entries: 16, Backend: be})
				if err != nil {
					b.Fatal(err)
				}
				defer r.Close()
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer unix.Close(fds[0])
				defer unix.Close(fds[1])
				msg, buf := make([]byte, 64), make([]byte, 64)
				var c [1]Completion
				reap := func() {
					if n, err := r.Reap(c[:], 10*time.Second); n != 1 || err != nil || c[0].Err != nil {
						b.Fatal(n, err, c[0])
					}
				}
				b.ReportAllocs()
				if op == "recv" {
					for b.Loop() {
						if _, err := r.Submit(Recv(fds[0], buf, 0)); err != nil {
							b.Fatal(err)
						}
						unix.Write(fds[1], msg)
						reap()
					}
					return
				}
				br, err := r.NewBufRing(16, 64)
				if err != nil {
					b.Fatal(err)
				}
				q, err := r.Submit(RecvMultishot(fds[0], br, 0))
				if err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					unix.Write(fds[1], msg)
					reap()
					br.Release(c[0].BufID)
				}
				b.StopTimer()
				q.Cancel()
				for c[0].More { // up to its final completion
					r.Reap(c[:], 10*time.Second)
				}
			})
		}
	}
}
