package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cancelio/cancelio/minidrv"
)

// progressLine shows an acquisition's progress on stderr, and shows when
// the scanner stops answering: the driver's progress callback (at least
// once per minidrv.ProgressInterval) feeds it, and a ticker of its own
// notices a silence even when no callback comes. A silence is shown after
// a couple of seconds, or after twice the longest gap between two chunks
// so far (a slow scanner is not a silent one), and always before half the
// stall timeout. On a terminal (or --progress on) it redraws one line;
// otherwise it prints one notice when a silence starts and one when data
// flows again.
type progressLine struct {
	w     io.Writer
	bar   bool          // draw the bar
	stall time.Duration // --stall-timeout, 0: none
	base  time.Duration // a silence this long is shown, at least

	stop chan struct{} // closed by finish
	done chan struct{} // closed when the ticker goroutine has returned

	mu       sync.Mutex // guards the fields below, and writes to w
	p        minidrv.Progress
	lastData time.Time     // the start, or when Bytes last grew
	maxGap   time.Duration // the longest time between two chunks
	quietOn  bool          // a silence is being shown
	shown    string        // the line on the terminal now
}

// newProgressLine returns a progress line for a scan with the given stall
// timeout; mode is --progress. Call start when the acquisition starts.
func newProgressLine(w io.Writer, mode string, stall time.Duration) *progressLine {
	on := mode == "on"
	if mode == "auto" {
		if f, ok := w.(*os.File); ok {
			on = isTerminal(int(f.Fd()))
		}
	}
	base := 2 * minidrv.ProgressInterval
	if stall > 0 {
		base = min(base, stall/2)
	}
	return &progressLine{w: w, bar: on, stall: stall, base: base,
		stop: make(chan struct{}), done: make(chan struct{})}
}

// start starts the clock of the silence and the ticker.
func (l *progressLine) start() {
	l.mu.Lock()
	l.lastData = time.Now()
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		t := time.NewTicker(max(l.base/4, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.mu.Lock()
				l.showLocked(time.Now())
				l.mu.Unlock()
			case <-l.stop:
				return
			}
		}
	}()
}

// update is the driver's progress callback.
func (l *progressLine) update(p minidrv.Progress) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if p.Bytes > l.p.Bytes {
		if l.p.Bytes > 0 { // the first gap includes the scan's start
			l.maxGap = max(l.maxGap, now.Sub(l.lastData))
		}
		l.lastData = now
	}
	l.p = p
	l.showLocked(now)
	return true
}

// showLocked draws the line, or prints a notice when a silence starts or
// ends. l.mu held.
func (l *progressLine) showLocked(now time.Time) {
	quiet := now.Sub(l.lastData)
	silent := quiet >= l.noticeLocked()
	if !l.bar {
		switch {
		case silent && !l.quietOn:
			fmt.Fprintf(l.w, "wiascan: no answer from the scanner for %v; %s\n", quiet.Round(time.Second), l.waitNote())
		case !silent && l.quietOn:
			fmt.Fprintf(l.w, "wiascan: the scanner is sending again\n")
		}
		l.quietOn = silent
		return
	}
	l.quietOn = silent
	const width = 40
	n := l.p.Percent * width / 100
	s := fmt.Sprintf("[%s%s] %3d%% %6.1f/%.1f MB", strings.Repeat("#", n), strings.Repeat(".", width-n),
		l.p.Percent, float64(l.p.Bytes)/1e6, float64(l.p.Total)/1e6)
	if silent {
		s += fmt.Sprintf("  no answer from the scanner for %ds; %s", int(quiet.Seconds()), l.waitNote())
	}
	if s != l.shown {
		fmt.Fprintf(l.w, "\r%s\x1b[K", s)
		l.shown = s
	}
}

// noticeLocked is how long a silence must be to be shown. l.mu held.
func (l *progressLine) noticeLocked() time.Duration {
	n := max(l.base, 2*l.maxGap)
	if l.stall > 0 {
		n = min(n, l.stall/2)
	}
	return n
}

// waitNote says how long wiascan waits for a silent scanner.
func (l *progressLine) waitNote() string {
	if l.stall > 0 {
		return fmt.Sprintf("giving up at %v (--stall-timeout), Ctrl-C cancels", l.stall)
	}
	return "waiting for ever (--stall-timeout 0), Ctrl-C cancels"
}

// finish stops the ticker and ends the line. It returns the last progress
// and how long the scanner had been silent.
func (l *progressLine) finish() (minidrv.Progress, time.Duration) {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shown != "" {
		fmt.Fprintln(l.w)
	}
	return l.p, time.Since(l.lastData)
}
