//go:build linux

package uring

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSetupProbeNop(t *testing.T) {
	r, err := Setup(8, 16)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer r.Close()
	if err := r.Probe(); err != nil {
		t.Fatal(err)
	}
	if !r.Supports(OpNop) || !r.Supports(OpRead) {
		t.Fatalf("kernel reports no NOP or READ support")
	}
	if r.SQEntries() != 8 || r.CQEntries() != 16 {
		t.Fatalf("entries %d/%d, want 8/16", r.SQEntries(), r.CQEntries())
	}
	for i := 0; i < 8; i++ {
		sqe, _ := r.NextSQE()
		if sqe == nil {
			t.Fatalf("SQ full after %d entries", i)
		}
		sqe.Opcode = OpNop
		sqe.UserData = uint64(100 + i)
	}
	if sqe, _ := r.NextSQE(); sqe != nil {
		t.Fatal("a ninth SQE from an SQ of 8")
	}
	n, err := r.Submit(8)
	if err != nil || n != 8 {
		t.Fatalf("Submit: %d, %v", n, err)
	}
	first, second := r.PeekCQ()
	got := append(append([]CQE{}, first...), second...)
	if len(got) != 8 {
		t.Fatalf("%d CQEs, want 8", len(got))
	}
	for i, c := range got {
		if c.UserData != uint64(100+i) || c.Res != 0 {
			t.Errorf("CQE %d: %+v", i, c)
		}
	}
	r.AdvanceCQ(uint32(len(got)))
	if r.CQReady() != 0 {
		t.Fatal("CQ not empty after advance")
	}
}

func TestUnavailable(t *testing.T) {
	for _, e := range []error{unix.ENOSYS, unix.EPERM, unix.EACCES, unix.EOPNOTSUPP} {
		if !Unavailable(e) {
			t.Errorf("Unavailable(%v) = false", e)
		}
	}
	if Unavailable(unix.EFAULT) {
		t.Error("Unavailable(EFAULT) = true")
	}
}

// BenchmarkRawNop32 is the floor for the engine: 32 NOPs per enter on the
// bare ABI, with no slots, tokens or queues.
func BenchmarkRawNop32(b *testing.B) { benchRawNop(b, 32) }

// BenchmarkRawNop1 is the same with one NOP per enter.
func BenchmarkRawNop1(b *testing.B) { benchRawNop(b, 1) }

// benchRawNop completes b.N NOPs, batch per io_uring_enter.
func benchRawNop(b *testing.B, batch int) {
	r, err := Setup(64, 128)
	if err != nil {
		b.Skip(err)
	}
	defer r.Close()
	b.ReportAllocs()
	for done := 0; done < b.N; done += batch {
		for range batch {
			sqe, _ := r.NextSQE()
			sqe.Opcode = OpNop
			sqe.FD = -1
		}
		if _, err := r.Submit(0); err != nil {
			b.Fatal(err)
		}
		first, second := r.PeekCQ()
		r.AdvanceCQ(uint32(len(first) + len(second)))
	}
}
