//go:build linux

package ioring

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv13BurstsBothDirections: ordered reads and ordered writes wait on
// each socket of several pairs at once (one pollFD armed for IN|OUT), with
// random cancels and short deadlines racing wake-ups, while each peer
// writes in bursts and drains with pauses. No wake-up may be lost (every
// request completes within the bound), and both streams are exact: the
// reads' data in submission order, then what is left, is what the peer
// wrote; what the peer read is the writes' data in submission order.
func TestAdv13BurstsBothDirections(t *testing.T) {
	rng := adv13Rand(t)
	seed := rng.Uint64()
	adv13Both(t, 1024, func(t *testing.T, r *Ring) []string {
		rng := adv13RandFrom(seed)
		const pairs, per = 4, 60
		type pair struct {
			a, b       int
			reads      []int // ids in submission order
			writes     []int
			toA, fromA bytes.Buffer
		}
		ps := make([]*pair, pairs)
		for i := range ps {
			a, b := adv13SockPair(t, unix.SOCK_STREAM)
			require.NoError(t, unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
			ps[i] = &pair{a: a, b: b}
		}
		defer func() {
			for _, p := range ps {
				unix.Close(p.a)
				unix.Close(p.b)
			}
		}()
		led := newAdv12Ledger(t)
		bufs := map[int][]byte{}
		var qs []Request
		id := 0
		for range per {
			for _, p := range ps {
				id++
				var op Op
				if rng.IntN(2) == 0 {
					buf := make([]byte, 1+rng.IntN(64))
					op = Read(p.a, buf, -1)
					bufs[id] = buf
					p.reads = append(p.reads, id)
				} else {
					buf := make([]byte, 1+rng.IntN(4096))
					for j := range buf {
						buf[j] = byte(id + j)
					}
					op = Write(p.a, buf, -1)
					bufs[id] = buf
					p.writes = append(p.writes, id)
				}
				switch rng.IntN(6) {
				case 0:
					op = op.WithDeadline(time.Duration(1+rng.IntN(2000)) * time.Microsecond)
				case 1:
					op = op.WithDeadline(time.Duration(1+rng.IntN(50)) * time.Millisecond)
				}
				q, err := r.Submit(op.WithUser(id))
				require.NoError(t, err)
				led.accept(id, q)
				qs = append(qs, q)
			}
		}
		// Peers: bursts toward a, and drains of what a writes, until
		// every request completed.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for k, p := range ps {
			prng := adv13RandFrom(seed + uint64(k) + 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 8192)
				unix.SetNonblock(p.b, true)
				defer unix.SetNonblock(p.b, false)
				for sent := 0; ; {
					select {
					case <-stop:
						return
					default:
					}
					if sent < 4000 && prng.IntN(3) == 0 {
						chunk := make([]byte, 1+prng.IntN(300))
						for j := range chunk {
							chunk[j] = byte(sent + j)
						}
						n, _ := unix.Write(p.b, chunk)
						if n > 0 {
							p.toA.Write(chunk[:n])
							sent += n
						}
					}
					if n, _ := unix.Read(p.b, buf[:1+prng.IntN(len(buf)-1)]); n > 0 {
						p.fromA.Write(buf[:n])
					}
					if prng.IntN(10) == 0 {
						time.Sleep(time.Duration(prng.IntN(1500)) * time.Microsecond) // bursts
					}
				}
			}()
		}
		crng := adv13RandFrom(seed ^ 0xc0ffee)
		for range 80 {
			qs[crng.IntN(len(qs))].Cancel()
			if crng.IntN(10) == 0 {
				time.Sleep(time.Duration(crng.IntN(500)) * time.Microsecond)
			}
		}
		adv12Reap(t, r, led, "bursts", func() bool { return led.done() == id })
		close(stop)
		wg.Wait()
		led.check()
		outcomes := map[string]int{}
		for k, p := range ps {
			var rd, wr []byte
			for _, i := range p.reads {
				c := led.final[i]
				outcomes["read "+adv13Out(Completion{Err: c.Err})]++
				if c.Err == nil {
					require.Positive(t, c.N, "pair %d read %d: EOF", k, i)
					rd = append(rd, bufs[i][:c.N]...)
				} else {
					require.True(t, adv12IsCancel(c.Err), "pair %d read %d: %v", k, i, c.Err)
				}
			}
			for _, i := range p.writes {
				c := led.final[i]
				outcomes["write "+adv13Out(Completion{Err: c.Err})]++
				if c.Err == nil {
					wr = append(wr, bufs[i][:c.N]...)
				} else {
					require.True(t, adv12IsCancel(c.Err), "pair %d write %d: %v", k, i, c.Err)
					// A canceled write may have moved part (its N): none
					// is reported with an error, so it must be 0 here.
				}
			}
			rest := adv13Drain(t, p.a)
			require.Equal(t, p.toA.Bytes(), append(rd, rest...), "pair %d: stream toward a (%d read, %d left)", k, len(rd), len(rest))
			p.fromA.Write(adv13Drain(t, p.b))
			require.Equal(t, len(wr), p.fromA.Len(), "pair %d: bytes a wrote vs the peer read", k)
			require.True(t, bytes.Equal(wr, p.fromA.Bytes()), "pair %d: stream from a differs", k)
		}
		t.Logf("%v outcomes %v", r.Backend().Backend, fmt.Sprint(outcomes))
		return nil
	})
}
