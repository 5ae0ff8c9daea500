//go:build linux

package uring

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A provided-buffer ring publishes its tail where the kernel reads it (the
// u16 overlaying the first entry's resv) without touching the first
// entry's id, and a RECV with IOSQE_BUFFER_SELECT takes the buffers in
// ring order, reporting each one's id in its CQE.
func TestPbufRing(t *testing.T) {
	r, err := Setup(4, 8)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer r.Close()
	p, err := r.RegisterPbufRing(4, 7)
	if err != nil {
		t.Fatalf("RegisterPbufRing: %v", err)
	}
	defer func() {
		if p.mapped { // the test failed before its own Close
			p.Close(true)
		}
	}()
	bufs := [][]byte{make([]byte, 8), make([]byte, 8)}
	p.Add(5, bufs[0])
	p.Add(9, bufs[1])
	if p.bufs[0].BID != 5 || p.bufs[0].Resv != 2 || p.bufs[1].BID != 9 {
		t.Fatalf("entries %+v %+v, want ids 5 and 9 and tail 2", p.bufs[0], p.bufs[1])
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	for i, want := range []uint16{5, 9} {
		unix.Write(fds[1], []byte("hi"))
		sqe, _ := r.NextSQE()
		sqe.Opcode = OpRecv
		sqe.FD = int32(fds[0])
		sqe.Flags = SQEBufferSelect
		sqe.BufIndex = 7
		sqe.UserData = uint64(i)
		if _, err := r.Submit(1); err != nil {
			t.Fatal(err)
		}
		first, second := r.PeekCQ()
		cqes := append(first, second...)
		if len(cqes) != 1 || cqes[0].Res != 2 || cqes[0].Flags&CQEFBuffer == 0 || uint16(cqes[0].Flags>>CQEBufShift) != want {
			t.Fatalf("recv %d: CQEs %+v, want 2 bytes in buffer %d", i, cqes, want)
		}
		r.AdvanceCQ(1)
	}
	if string(bufs[0][:2]) != "hi" || string(bufs[1][:2]) != "hi" {
		t.Fatalf("buffers %q %q", bufs[0], bufs[1])
	}
	if err := p.Close(true); err != nil {
		t.Fatal(err)
	}
	if p.mapped {
		t.Fatal("still mapped after Close")
	}
	reg := BufReg{BGID: 7}
	if err := r.register(UnregisterPbufRing, unsafe.Pointer(&reg), 1); err != unix.ENOENT {
		t.Fatalf("unregister again: %v, want ENOENT (Close unregistered it)", err)
	}
}
