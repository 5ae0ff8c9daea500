//go:build linux

package ioring

import (
	"context"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every engine benchmark runs on each backend as a sub-benchmark, so that
// `benchstat -col /backend` puts them side by side. The cross-library
// comparison (liburing, goroutines, netpoll) lives in ../bench.

func forEachBackendB(b *testing.B, entries int, fn func(b *testing.B, r *Ring)) {
	for _, be := range backends {
		b.Run("backend="+be.String(), func(b *testing.B) {
			r, err := New(Config{Entries: entries, Backend: be})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			fn(b, r)
		})
	}
}

func BenchmarkNop(b *testing.B) {
	benchNops(b, func(r *Ring, ops []Op, reqs []Request, cs []Completion) (int, error) {
		var err error
		if len(ops) == 1 {
			_, err = r.Submit(ops[0])
		} else {
			_, err = r.SubmitBatch(ops, reqs)
		}
		return 0, err
	})
}

// BenchmarkSubmitAndReap is BenchmarkNop's loop with the submission and
// the first reap in one call, as a program that keeps requests in flight
// makes them.
func BenchmarkSubmitAndReap(b *testing.B) {
	benchNops(b, func(r *Ring, ops []Op, reqs []Request, cs []Completion) (int, error) {
		_, got, err := r.SubmitAndReap(ops, reqs, cs, -1)
		return got, err
	})
}

// BenchmarkDo is the synchronous form, one NOP per Do, under a context
// that never ends and under one that can: the second watches its context
// only when a wait has to block, so a NOP (done at once) costs it nothing.
func BenchmarkDo(b *testing.B) {
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, bc := range []struct {
		name string
		ctx  context.Context
	}{{"background", context.Background()}, {"cancelable", cctx}} {
		b.Run("ctx="+bc.name, func(b *testing.B) {
			forEachBackendB(b, 64, func(b *testing.B, r *Ring) {
				b.ReportAllocs()
				for b.Loop() {
					if c, err := r.Do(bc.ctx, Nop()); err != nil || c.Err != nil {
						b.Fatal(err, c.Err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		})
	}
}

// BenchmarkNopAfterPark is the one-NOP round trip (SubmitAndReap) on an
// io_uring ring whose reaper has never parked, and on one whose reaper
// parked once, a while before (evIdleFor, shortened here): the eventfd
// that park registered is unregistered again, and costs nothing after.
func BenchmarkNopAfterPark(b *testing.B) {
	saved := evIdleFor
	evIdleFor = 10 * time.Millisecond
	defer func() { evIdleFor = saved }()
	for _, parked := range []string{"never", "once"} {
		b.Run("parked="+parked, func(b *testing.B) {
			r, err := New(Config{Entries: 64, Backend: BackendURing})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if parked == "once" {
				rd, wr := pipe(b)
				time.AfterFunc(20*time.Millisecond, func() { unix.Write(wr, []byte{1}) })
				if _, err := r.ReadAt(context.Background(), rd, make([]byte, 1), -1); err != nil {
					b.Fatal(err)
				}
				time.Sleep(20 * evIdleFor)
			}
			ops, reqs, cs := []Op{Nop()}, make([]Request, 1), make([]Completion, 1)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := r.SubmitAndReap(ops, reqs, cs, -1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchNops runs batches of 1 and 32 NOPs on each backend: submit starts
// a batch and returns how many of its completions it reaped already, and
// Reap takes the rest.
func benchNops(b *testing.B, submit func(r *Ring, ops []Op, reqs []Request, cs []Completion) (int, error)) {
	for _, batch := range []int{1, 32} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			forEachBackendB(b, 256, func(b *testing.B, r *Ring) {
				ops := make([]Op, batch)
				for i := range ops {
					ops[i] = Nop()
				}
				reqs := make([]Request, batch)
				cs := make([]Completion, batch)
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += batch {
					got, err := submit(r, ops, reqs, cs)
					for err == nil && got < batch {
						var n int
						n, err = r.Reap(cs[got:], -1)
						got += n
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		})
	}
}

func BenchmarkRead4K(b *testing.B) {
	const block, fileSize = 4096, 64 << 20
	f, err := os.CreateTemp(b.TempDir(), "read4k")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := 0; i < fileSize; i += len(chunk) {
		f.Write(chunk)
	}
	fd := int(f.Fd())
	// Warm the page cache.
	for off := int64(0); off < fileSize; off += int64(len(chunk)) {
		unix.Pread(fd, chunk, off)
	}
	for _, qd := range []int{1, 32} {
		b.Run("qd="+strconv.Itoa(qd), func(b *testing.B) {
			forEachBackendB(b, 64, func(b *testing.B, r *Ring) {
				rng := rand.New(rand.NewPCG(1, 1))
				bufs := make([][]byte, qd)
				for i := range bufs {
					bufs[i] = make([]byte, block)
				}
				cs := make([]Completion, qd)
				offset := func() int64 { return int64(rng.IntN(fileSize/block)) * block }
				b.SetBytes(block)
				b.ReportAllocs()
				b.ResetTimer()
				// Completions are answered with one batch of new reads: one
				// io_uring_enter per batch, as a QD32 reader would do.
				ops := make([]Op, 0, qd)
				reqs := make([]Request, qd)
				inflight, submitted := 0, 0
				for i := 0; i < qd && submitted < b.N; i++ {
					ops = append(ops, Read(fd, bufs[i], offset()).WithUser(i))
					submitted++
				}
				if _, err := r.SubmitBatch(ops, reqs); err != nil {
					b.Fatal(err)
				}
				inflight = len(ops)
				for inflight > 0 {
					n, err := r.Reap(cs, -1)
					if err != nil {
						b.Fatal(err)
					}
					inflight -= n
					ops = ops[:0]
					for _, c := range cs[:n] {
						if c.Err != nil || c.N != block {
							b.Fatalf("read: %d, %v", c.N, c.Err)
						}
						if submitted < b.N {
							ops = append(ops, Read(fd, bufs[c.User.(int)], offset()).WithUser(c.User))
							submitted++
						}
					}
					if len(ops) > 0 {
						if _, err := r.SubmitBatch(ops, reqs); err != nil {
							b.Fatal(err)
						}
						inflight += len(ops)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
			})
		})
	}
}

// BenchmarkCancel: N reads pending on N empty pipes, all under one token;
// the time from Token.Cancel to the last completion delivered.
func BenchmarkCancel(b *testing.B) {
	for _, pending := range []int{1, 64} {
		b.Run("pending="+strconv.Itoa(pending), func(b *testing.B) {
			forEachBackendB(b, 128, func(b *testing.B, r *Ring) {
				fds := make([]int, pending)
				for i := range fds {
					fds[i], _ = pipe(b)
				}
				bufs := make([][]byte, pending)
				for i := range bufs {
					bufs[i] = make([]byte, 64)
				}
				cs := make([]Completion, pending)
				lat := make([]time.Duration, 0, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					tok := r.NewToken()
					for j, fd := range fds {
						if _, err := r.Submit(Read(fd, bufs[j], -1).WithToken(tok)); err != nil {
							b.Fatal(err)
						}
					}
					// Let the reads arm (io_uring: poll armed at submit).
					r.Reap(cs, 0)
					b.StartTimer()
					start := time.Now()
					tok.Cancel()
					for got := 0; got < pending; {
						n, err := r.Reap(cs[got:], -1)
						if err != nil {
							b.Fatal(err)
						}
						got += n
					}
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) }
				b.ReportMetric(pct(0.50), "p50-ns")
				b.ReportMetric(pct(0.99), "p99-ns")
			})
		})
	}
}

// BenchmarkStreamOrder measures what submission order costs on a stream:
// 8 one-byte reads queued on a pipe, then 8 bytes written at once, ordered
// (the default for reads at the current position: one read in the kernel
// at a time) and unordered (all 8 in the kernel). ns/op is per read.
func BenchmarkStreamOrder(b *testing.B) {
	const depth = 8
	for _, ordered := range []bool{true, false} {
		b.Run("ordered="+strconv.FormatBool(ordered), func(b *testing.B) {
			forEachBackendB(b, 64, func(b *testing.B, r *Ring) {
				rd, wr := pipe(b)
				ops := make([]Op, depth)
				for i := range ops {
					ops[i] = Read(rd, make([]byte, 1), -1)
					if !ordered {
						ops[i] = ops[i].Unordered()
					}
				}
				reqs := make([]Request, depth)
				cs := make([]Completion, depth)
				data := make([]byte, depth)
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += depth {
					if _, err := r.SubmitBatch(ops, reqs); err != nil {
						b.Fatal(err)
					}
					if _, err := unix.Write(wr, data); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < depth; {
						n, err := r.Reap(cs[got:], -1)
						if err != nil {
							b.Fatal(err)
						}
						for _, c := range cs[got : got+n] {
							if c.Err != nil || c.N != 1 {
								b.Fatalf("read: n=%d err=%v", c.N, c.Err)
							}
						}
						got += n
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
			})
		})
	}
}
