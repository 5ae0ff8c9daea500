package bench

import (
	"sync"
	"sync/atomic"
	"time"
)

// CancelLoop runs a read+cancel cycle every period on its own goroutine, for
// impls whose CancelLoad is a background goroutine (the Go baselines; the
// C baseline interleaves the cycle into its own loop instead).
type CancelLoop struct {
	cycles atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	err    error // first cycle error; read after wg.Wait
}

// StartCancelLoop calls cycle every period until Stop. cycle must submit one
// read, cancel it and wait for its completion. A failing cycle ends the loop;
// Stop returns its error.
//
// The cycles keep to a schedule of absolute times, start+k*period: a
// goroutine woken late runs the cycles that came due meanwhile back to
// back, so that the rate requested is the rate attempted. Go's timers wake
// a goroutine well after its time often enough (a bare 1 ms time.Ticker
// delivers about 92% of its ticks on an idle 2-core machine here), and a
// ticker drops what it could not deliver: the loop would measure the
// runtime's timers, not the cancels. A goroutine more than maxCatchUp
// periods behind gives those up and starts the schedule again from now: it
// could not run, and the shortfall shows in cancels-%.
func StartCancelLoop(period time.Duration, cycle func() error) *CancelLoop {
	l := &CancelLoop{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTimer(period)
		defer t.Stop()
		next := time.Now().Add(period)
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
			now := time.Now()
			if now.Sub(next) > maxCatchUp*period {
				next = now
			}
			for !now.Before(next) {
				if err := cycle(); err != nil {
					l.err = err
					return
				}
				l.cycles.Add(1)
				next = next.Add(period)
				select {
				case <-l.stop:
					return
				default:
				}
			}
			t.Reset(time.Until(next))
		}
	}()
	return l
}

// maxCatchUp bounds the cycles a late CancelLoop makes up for at once.
const maxCatchUp = 8

// Cycles returns the number of completed cycles.
func (l *CancelLoop) Cycles() int64 { return l.cycles.Load() }

// Stop ends the loop, waits for it and returns the first cycle error.
func (l *CancelLoop) Stop() error {
	close(l.stop)
	l.wg.Wait()
	return l.err
}
