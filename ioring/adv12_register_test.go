//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv12RegisterRaces registers and unregisters files and buffers over
// and over while ordered writes that use them (WriteFixed from the
// registered buffers on a pipe; Write on a registered file, another pipe)
// are submitted, held, in flight and canceled. A submission is refused
// (ErrInvalid) or accepted; an accepted one completes once, with its
// bytes, EBADF (no file at its turn), EFAULT (its buffer no longer
// registered) or a cancel; and each pipe's reader gets exactly the
// writes' reported prefixes in submission order, with the contents the
// writes were built with.
func TestAdv12RegisterRaces(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			seed := adv12Seed(t)
			for round := range 3 {
				adv12RegisterRound(t, b, seed+uint64(round))
				if t.Failed() {
					return
				}
			}
		})
	}
}

func adv12RegisterRound(t *testing.T, b Backend, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 91))
	r := adv12Ring(t, b, 64)
	l := newAdv12Ledger(t)
	rdB, wrB := adv12Pipe(t, 4096) // WriteFixed on wrB
	rdF, wrF := adv12Pipe(t, 4096) // Write on registered wrF
	defer unix.Close(rdB)
	defer unix.Close(rdF)
	wrClosed := false
	defer func() {
		if !wrClosed {
			unix.Close(wrB)
			unix.Close(wrF)
		}
	}()
	gotB := adv12ReadAll(rdB, 1500, func() time.Duration { return 0 })
	gotF := adv12ReadAll(rdF, 1500, func() time.Duration { return 0 })

	// The registrar: a fresh set of buffers each time (generation g fills
	// them with bytes of g), and the file table [-1, wrF] or [wrF].
	type bufSet struct {
		gen  byte
		bufs [][]byte
	}
	var cur atomic.Pointer[bufSet]
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	var stopOnce sync.Once
	stopAll := func() { stopOnce.Do(func() { close(stop) }); rwg.Wait() }
	defer stopAll()
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		grng := rand.New(rand.NewPCG(seed, 92))
		for g := byte(1); ; g++ {
			select {
			case <-stop:
				return
			default:
			}
			if g == 0 {
				g = 1
			}
			set := &bufSet{gen: g, bufs: [][]byte{bytes.Repeat([]byte{g}, 512), bytes.Repeat([]byte{g}, 1024)}}
			if err := r.RegisterBuffers(set.bufs); err != nil {
				t.Errorf("RegisterBuffers: %v", err)
				return
			}
			cur.Store(set)
			// wrF is always at index 1: the stream's order follows the
			// number a request names, and two indexes of one file are
			// two streams, which the ring does not order together.
			table := []int{-1, wrF}
			if grng.IntN(2) == 0 {
				table = []int{rdB, wrF}
			}
			if err := r.RegisterFiles(table); err != nil {
				t.Errorf("RegisterFiles: %v", err)
				return
			}
			time.Sleep(time.Duration(grng.IntN(800)) * time.Microsecond)
			if grng.IntN(2) == 0 {
				cur.Store(nil)
				if err := r.UnregisterBuffers(); err != nil {
					t.Errorf("UnregisterBuffers: %v", err)
				}
				if err := r.UnregisterFiles(); err != nil {
					t.Errorf("UnregisterFiles: %v", err)
				}
			} else {
				if err := r.UnregisterFiles(); err != nil {
					t.Errorf("UnregisterFiles: %v", err)
				}
				cur.Store(nil)
				if err := r.UnregisterBuffers(); err != nil {
					t.Errorf("UnregisterBuffers: %v", err)
				}
			}
			time.Sleep(time.Duration(grng.IntN(300)) * time.Microsecond)
		}
	}()

	// The writers' requests, in submission order per pipe.
	type wreq struct {
		id   int
		file bool   // a Write on the registered file (else WriteFixed)
		data []byte // what it writes
	}
	var (
		reqs    []*wreq
		refused = map[string]int{}
	)
	var cancels adv12Cancels
	cstop := make(chan struct{})
	var cwg sync.WaitGroup
	toks := []*Token{r.NewToken(), r.NewToken()}
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		cancels.run(t, r, rand.New(rand.NewPCG(seed, 93)), toks, cstop, true)
	}()
	const n = 300
	for i := range n {
		w := &wreq{id: i, file: rng.IntN(2) == 0}
		var op Op
		if w.file {
			idx := 1
			w.data = make([]byte, 1+rng.IntN(700))
			adv6Fill(uint32(seed)+uint32(i), 0, w.data)
			op = Write(idx, w.data, -1).FixedFile()
		} else {
			set := cur.Load()
			if set == nil {
				set = &bufSet{bufs: [][]byte{make([]byte, 512), make([]byte, 1024)}}
			}
			k := rng.IntN(2)
			lo := rng.IntN(len(set.bufs[k]))
			hi := lo + 1 + rng.IntN(len(set.bufs[k])-lo)
			w.data = set.bufs[k][lo:hi]
			op = WriteFixed(wrB, w.data, -1, k)
		}
		op, _ = adv12Decorate(op, rng, toks)
		q, err := r.Submit(op.WithUser(i))
		for errors.Is(err, ErrFull) {
			var dst [8]Completion
			m, rerr := r.Reap(dst[:], time.Second)
			require.NoError(t, rerr)
			for _, c := range dst[:m] {
				l.got(c, "reap")
			}
			q, err = r.Submit(op.WithUser(i))
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("seed %d: Submit: %v", seed, err)
			}
			refused[fmt.Sprint(w.file)]++
			continue
		}
		l.accept(i, q)
		cancels.add(q)
		reqs = append(reqs, w)
		if rng.IntN(10) == 0 {
			time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
		}
	}
	adv12Reap(t, r, l, "writes", func() bool { return l.done() == len(reqs) })
	close(cstop)
	cwg.Wait()
	stopAll()
	l.check()

	var wantB, wantF bytes.Buffer
	errs := map[string]int{}
	for _, w := range reqs {
		c := l.final[w.id]
		var en syscall.Errno
		switch {
		case c.Err == nil:
			errs["ok"]++
		case adv12IsCancel(c.Err):
			errs["cancel"]++
		case errors.As(c.Err, &en) && en == unix.EBADF && w.file:
			errs["EBADF"]++
		case errors.As(c.Err, &en) && en == unix.EFAULT && !w.file:
			errs["EFAULT"]++
		default:
			t.Errorf("seed %d: write %d (file %v): %s", seed, w.id, w.file, adv12Res(c))
		}
		if c.N < 0 || c.N > len(w.data) {
			t.Errorf("seed %d: write %d: N=%d of %d", seed, w.id, c.N, len(w.data))
			continue
		}
		if c.Err != nil && !adv12IsCancel(c.Err) && c.N != 0 {
			t.Errorf("seed %d: write %d: an error with bytes: %s", seed, w.id, adv12Res(c))
		}
		if w.file {
			wantF.Write(w.data[:c.N])
		} else {
			wantB.Write(w.data[:c.N])
		}
	}
	require.NoError(t, r.Close()) // drops the registered wrF, so the reader sees its end
	unix.Close(wrB)
	unix.Close(wrF)
	wrClosed = true
	for _, p := range []struct {
		name string
		got  <-chan []byte
		want []byte
	}{{"fixed buffers", gotB, wantB.Bytes()}, {"fixed file", gotF, wantF.Bytes()}} {
		select {
		case got := <-p.got:
			if !bytes.Equal(got, p.want) {
				at := 0
				for at < len(got) && at < len(p.want) && got[at] == p.want[at] {
					at++
				}
				t.Errorf("seed %d: %s: the reader got %d bytes, the writes report %d; first difference at %d", seed, p.name, len(got), len(p.want), at)
			}
		case <-time.After(adv12Hang):
			t.Fatalf("seed %d: %s: the reader did not see the end", seed, p.name)
		}
	}
	assert.Zero(t, r.InFlight())
	t.Logf("seed %d: %d accepted, refused %v, results %v", seed, len(reqs), refused, errs)
}
