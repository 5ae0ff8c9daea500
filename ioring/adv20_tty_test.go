//go:build linux

package ioring

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv20Pattern is n bytes of a stream that names its positions (a terminal
// in raw mode passes every byte as it is).
func adv20Pattern(start, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		p := start + i
		b[i] = byte(p*7 + p/251)
	}
	return b
}

// adv20TtyNonblock puts both ends of a pty in the mode asked.
func adv20TtyNonblock(t *testing.T, nonblock bool, fds ...int) {
	for _, fd := range fds {
		require.NoError(t, unix.SetNonblock(fd, nonblock))
	}
}

// TestAdv20TtyOrderedWritesCanceledWhileDrained: a chain of ordered writes
// (Write and Writev at the current position) on a pty slave, larger than
// the pty's room, while a reader drains the master slowly; some of them
// are canceled, or given a deadline, at random moments. The promises: the
// writes complete in order, each reports the bytes it moved (a write
// ended part-way by a cancel or deadline reports its part, on both
// backends), and what the master reads is exactly those parts, in
// submission order: nothing lost, nothing written by a write that
// reports it wrote nothing.
func TestAdv20TtyOrderedWritesCanceledWhileDrained(t *testing.T) {
	seed := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d", seed)
	for _, b := range backends {
		for _, nonblock := range []bool{false, true} {
			t.Run(fmt.Sprintf("backend=%v/nonblock=%v", b, nonblock), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, uint64(b)*2+map[bool]uint64{false: 0, true: 1}[nonblock]))
				r := adv12Ring(t, b, 16)
				master, slave := adv12Pty(t)
				defer unix.Close(master)
				defer unix.Close(slave)
				adv20TtyNonblock(t, nonblock, master, slave)
				const n = 6
				var qs []Request
				var bufs [][]byte
				var ops []string
				pos := 0
				for i := range n {
					size := 4<<10 + rng.IntN(12<<10)
					data := adv20Pattern(pos+i*100003, size) // distinct per write
					bufs = append(bufs, data)
					var op Op
					if rng.IntN(2) == 0 {
						op = Write(slave, data, -1)
					} else {
						h := rng.IntN(size-1) + 1
						op = Writev(slave, [][]byte{data[:h], data[h:]}, -1)
					}
					what := op.Code().String()
					if rng.IntN(4) == 0 {
						d := time.Duration(1+rng.IntN(20)) * time.Millisecond
						op = op.WithDeadline(d)
						what += fmt.Sprintf("+deadline %v", d)
					}
					ops = append(ops, what)
					q, err := r.Start(op)
					require.NoError(t, err)
					qs = append(qs, q)
				}
				// Cancels at random moments, while the reader drains.
				stop := make(chan struct{})
				got := make(chan []byte, 1)
				go func() {
					var all []byte
					buf := make([]byte, 1500)
					quiet := 0
					for {
						select {
						case <-stop:
							if quiet > 2 {
								got <- all
								return
							}
						default:
						}
						pf := []unix.PollFd{{Fd: int32(master), Events: unix.POLLIN}}
						k, _ := unix.Poll(pf, 10)
						if k <= 0 {
							quiet++
							continue
						}
						m, err := unix.Read(master, buf)
						if err != nil {
							if err == unix.EAGAIN || err == unix.EINTR {
								continue
							}
							got <- all
							return
						}
						quiet = 0
						all = append(all, buf[:m]...)
						time.Sleep(200 * time.Microsecond)
					}
				}()
				cancels := map[int]bool{}
				for range 3 {
					i := rng.IntN(n)
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
					cancels[i] = true
					qs[i].Cancel()
				}
				var want []byte
				for i, q := range qs {
					c := ttyWaitDone(t, q, fmt.Sprintf("write %d (%s)", i, ops[i]))
					if c.Err != nil {
						require.ErrorIs(t, c.Err, ErrCanceled, "write %d (%s)", i, ops[i])
					}
					require.GreaterOrEqual(t, c.N, 0)
					require.LessOrEqual(t, c.N, len(bufs[i]))
					t.Logf("write %d (%s, %d bytes, canceled %v): %s n=%d", i, ops[i], len(bufs[i]), cancels[i], adv13Out(c), c.N)
					want = append(want, bufs[i][:c.N]...)
				}
				close(stop)
				var all []byte
				select {
				case all = <-got:
				case <-time.After(10 * time.Second):
					t.Fatal("the reader did not stop")
				}
				if !bytes.Equal(all, want) {
					i := 0
					for i < len(all) && i < len(want) && all[i] == want[i] {
						i++
					}
					t.Fatalf("the master read %d bytes, the writes report %d (in order); first difference at %d", len(all), len(want), i)
				}
				require.NoError(t, r.Close())
			})
		}
	}
}

// TestAdv20TtyOrderedReadsCanceledWhileFed: ordered reads (Read and Readv
// at the current position) on a pty master, fed from the slave in bursts,
// with cancels, deadlines and context ends at random moments. Every byte
// written is read once, in order: by the completions' reported counts in
// submission order, then by a final drain.
func TestAdv20TtyOrderedReadsCanceledWhileFed(t *testing.T) {
	seed := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d", seed)
	for _, b := range backends {
		for _, nonblock := range []bool{false, true} {
			t.Run(fmt.Sprintf("backend=%v/nonblock=%v", b, nonblock), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 7+uint64(b)*2+map[bool]uint64{false: 0, true: 1}[nonblock]))
				r := adv12Ring(t, b, 32)
				master, slave := adv12Pty(t)
				defer unix.Close(master)
				defer unix.Close(slave)
				adv20TtyNonblock(t, nonblock, master, slave)
				const total = 24 << 10
				stream := adv20Pattern(0, total)
				fed := make(chan error, 1)
				frng := rand.New(rand.NewPCG(seed, 99))
				go func() {
					// Writes to the slave from a plain goroutine, in bursts.
					w := 0
					for w < total {
						k := min(total-w, 100+frng.IntN(900))
						m, err := unix.Write(slave, stream[w:w+k])
						if err == unix.EAGAIN || err == unix.EINTR {
							time.Sleep(time.Millisecond)
							continue
						}
						if err != nil {
							fed <- err
							return
						}
						w += m
						time.Sleep(time.Duration(frng.IntN(300)) * time.Microsecond)
					}
					fed <- nil
				}()
				var got []byte
				type pend struct {
					q    Request
					bufs [][]byte
					stop func()
				}
				var window []pend
				wait := func(p pend) {
					c := ttyWaitDone(t, p.q, "a read")
					if p.stop != nil {
						p.stop()
					}
					if c.Err != nil {
						require.ErrorIs(t, c.Err, ErrCanceled)
					}
					n := c.N
					for _, b := range p.bufs {
						k := min(n, len(b))
						got = append(got, b[:k]...)
						n -= k
					}
				}
				for len(got) < total {
					// Keep up to four reads in flight.
					for len(window) < 4 {
						var p pend
						var op Op
						if rng.IntN(2) == 0 {
							p.bufs = [][]byte{make([]byte, 1+rng.IntN(700))}
							op = Read(master, p.bufs[0], -1)
						} else {
							p.bufs = [][]byte{make([]byte, 1+rng.IntN(50)), make([]byte, 1+rng.IntN(500))}
							op = Readv(master, p.bufs, -1)
						}
						var err error
						switch rng.IntN(6) {
						case 0:
							p.q, err = r.Start(op.WithDeadline(time.Duration(1+rng.IntN(3)) * time.Millisecond))
						case 1:
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
							p.stop = cancel
							p.q, err = r.Start(op)
							if err == nil {
								q := p.q
								context.AfterFunc(ctx, func() { q.Cancel() })
							}
						default:
							p.q, err = r.Start(op)
						}
						require.NoError(t, err)
						window = append(window, p)
					}
					if rng.IntN(3) == 0 {
						window[rng.IntN(len(window))].q.Cancel()
					}
					wait(window[0])
					window = window[1:]
				}
				for _, p := range window {
					p.q.Cancel()
					wait(p)
				}
				require.NoError(t, <-fed)
				require.Equal(t, total, len(got), "bytes read in all")
				if !bytes.Equal(got, stream) {
					i := 0
					for got[i] == stream[i] {
						i++
					}
					t.Fatalf("the reads' bytes differ from the stream at %d", i)
				}
				require.NoError(t, r.Close())
			})
		}
	}
}
