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

// TestSQLayouts runs NOPs around a small ring three times, with and without
// the SQ index array, and checks that Setup leaves the array out whenever
// the kernel accepts NO_SQARRAY.
func TestSQLayouts(t *testing.T) {
	// Does this kernel take the flag? Ask it directly.
	p := Params{Flags: SetupNoSQArray}
	fd, err := setup(4, &p)
	kernelHas := err == nil
	if kernelHas {
		unix.Close(fd)
	} else if err != unix.EINVAL {
		t.Fatalf("io_uring_setup(NO_SQARRAY): %v", err)
	}
	for _, without := range []bool{true, false} {
		noSQArray = without
		r, err := Setup(4, 8)
		noSQArray = true
		if err != nil {
			t.Fatalf("Setup (NO_SQARRAY %v): %v", without, err)
		}
		if got, want := r.params.Flags&SetupNoSQArray != 0, without && kernelHas; got != want {
			t.Errorf("NO_SQARRAY asked %v, kernel has it %v: ring set up with it %v", without, kernelHas, got)
		}
		for round := 0; round < 3; round++ {
			for i := 0; i < 4; i++ {
				sqe, _ := r.NextSQE()
				if sqe == nil {
					t.Fatalf("round %d: SQ full after %d entries", round, i)
				}
				sqe.Opcode = OpNop
				sqe.UserData = uint64(round*4 + i)
			}
			if n, err := r.Submit(4); err != nil || n != 4 {
				t.Fatalf("round %d: Submit: %d, %v", round, n, err)
			}
			first, second := r.PeekCQ()
			got := append(append([]CQE{}, first...), second...)
			if len(got) != 4 {
				t.Fatalf("round %d: %d CQEs, want 4", round, len(got))
			}
			for i, c := range got {
				if c.UserData != uint64(round*4+i) || c.Res != 0 {
					t.Errorf("round %d, CQE %d: %+v", round, i, c)
				}
			}
			r.AdvanceCQ(uint32(len(got)))
		}
		r.Close()
	}
}
