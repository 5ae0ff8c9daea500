//go:build linux

package ioring

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// File's deadlines under races: two engine bugs the second round of
// ported tests found, fixed since; each comment says what broke.

// TestPort2FileDeadlineClearedStillFires: File.SetReadDeadline promises
// net.Conn's semantics ("A zero t means no deadline"): once
// SetReadDeadline(time.Time{}) has returned, reads do not time out. It
// broke when the earlier deadline's timer had fired but its function had
// not yet run (time.AfterFunc runs it on a goroutine of its own, which a
// loaded machine schedules late): setDeadline's timer.Stop returned false,
// the token, not canceled yet, was kept, and the function then canceled
// it, so every later Read failed at once with ErrTimeout until the next
// SetReadDeadline. It failed within a few hundred rounds here, with or
// without -race.
func TestPort2FileDeadlineClearedStillFires(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		fd, err := unix.Dup(rd)
		require.NoError(t, err)
		f := NewFile(r, fd, "pipe")
		defer f.Close()
		rng := rand.New(rand.NewPCG(1, 1))
		buf := make([]byte, 1)
		for i := range 3000 {
			require.NoError(t, f.SetReadDeadline(time.Now().Add(time.Duration(rng.IntN(200))*time.Microsecond)))
			spin := time.Now().Add(time.Duration(rng.IntN(200)) * time.Microsecond)
			for time.Now().Before(spin) {
			}
			require.NoError(t, f.SetReadDeadline(time.Time{}))
			_, err := unix.Write(wr, []byte{byte(i)})
			require.NoError(t, err)
			n, err := f.Read(buf)
			require.NoError(t, err, "round %d: a read with no deadline set timed out", i)
			require.Equal(t, 1, n)
		}
	})
}

// TestPort2FileInvalidRacesSetDeadline: File documents "All methods are
// safe for concurrent use". Under -race, SetReadDeadline racing any other
// method was a data race: every method starts with File.invalid, which
// read f.rd.tok without f.mu, while setDeadline replaces a canceled
// direction's token under f.mu. Only -race reported it (a pointer load
// compared with nil), but a race-enabled program using File as
// documented failed.
func TestPort2FileInvalidRacesSetDeadline(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		fd, err := unix.Dup(rd)
		require.NoError(t, err)
		f := NewFile(r, fd, "pipe")
		defer f.Close()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			past := time.Now().Add(-time.Second)
			for range 2000 {
				f.SetReadDeadline(past) // cancels the token; the next call replaces it
			}
		}()
		go func() {
			defer wg.Done()
			for range 2000 {
				f.SetWriteDeadline(time.Time{})
			}
		}()
		wg.Wait()
	})
}
