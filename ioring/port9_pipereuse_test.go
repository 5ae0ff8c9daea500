//go:build linux

package ioring

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A port of liburing's pipe-reuse.c (IORING_FEAT_SUBMIT_STABLE): a readv
// of sixteen vectors on a pipe holding half of the data; right after the
// submission the caller overwrites its iovec array (base NULL, length
// 1000000), then writes the other half. The read must land in the
// buffers the iovecs named at submission: the kernel copied them, so the
// caller's array was free to reuse.
//
// Through cancelio: Readv's bufs is the [][]byte naming the buffers (the
// buffers themselves stay the ring's until the completion). The ring
// builds its own iovecs at submission ("A submission copies what it needs
// of the Op"), so overwriting the elements of the caller's [][]byte after
// Submit must change nothing, on both backends, also for a read that
// waits (the pipe empty at submission), and one held behind another read
// of the stream (offset -1), whose turn comes after the overwrite.

func TestPort9ReadvIovecsStable(t *testing.T) {
	const size, nbuf = 16384, 16
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		wbuf := make([]byte, size)
		for i := range wbuf {
			wbuf[i] = byte(i*7 + i/251)
		}
		for _, kind := range []string{"half present", "empty", "held"} {
			rd, wr := pipe(t)
			buf := make([]byte, size)
			bufs := make([][]byte, nbuf)
			for i := range bufs {
				bufs[i] = buf[i*size/nbuf : (i+1)*size/nbuf]
			}
			decoy := make([]byte, 1000000)
			off := int64(0)
			var first Request
			var firstBuf []byte
			if kind == "held" {
				off = -1
				firstBuf = make([]byte, 1)
				var err error
				first, err = r.Submit(Read(rd, firstBuf, -1))
				require.NoError(t, err)
			}
			if kind == "half present" {
				_, err := unix.Write(wr, wbuf[:size/2])
				require.NoError(t, err)
			}
			q, err := r.Submit(Readv(rd, bufs, off))
			require.NoError(t, err)
			for i := range bufs { // reuse the "iovec array"
				bufs[i] = decoy
			}
			time.Sleep(10 * time.Millisecond)
			if kind == "held" {
				_, err = unix.Write(wr, []byte{0xAA})
				require.NoError(t, err)
				time.Sleep(10 * time.Millisecond)
			}
			if kind == "half present" {
				_, err = unix.Write(wr, wbuf[size/2:])
			} else {
				_, err = unix.Write(wr, wbuf)
			}
			require.NoError(t, err)
			qs := []Request{q}
			if kind == "held" {
				qs = append(qs, first)
			}
			var c Completion
			for _, cc := range adv9Wait(t, r, qs...) {
				if cc.Req == q {
					c = cc
				}
			}
			s := fmt.Sprintf("%s: %s", kind, adv13Out(c))
			if c.Err == nil {
				s += fmt.Sprintf(" data ok %v decoy untouched %v", bytes.Equal(buf[:c.N], wbuf[:c.N]), bytes.Count(decoy, []byte{0}) == len(decoy))
			}
			out = append(out, s)
		}
		return out
	})
	for b, g := range got {
		for _, s := range g {
			require.Regexp(t, `^[a-z ]+: n=(8192|16384) data ok true decoy untouched true$`, s, "backend %v", b)
		}
	}
}
