//go:build linux

package uring

import (
	"math"
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
	nopRoundTrip(t, r, 8, 100, func() {
		if sqe, _ := r.NextSQE(); sqe != nil {
			t.Fatal("a ninth SQE from an SQ of 8")
		}
	})
	if r.CQReady() != 0 {
		t.Fatal("CQ not empty after advance")
	}
}

// nopRoundTrip takes n SQEs (the SQ must have room for them), makes them
// NOPs with user data base, base+1..., calls full (the SQ is then as the
// NOPs left it; nil for nothing), submits them waiting for all n and
// checks that their CQEs come back in order, each with result 0, then
// hands the CQEs back.
func nopRoundTrip(t *testing.T, r *Ring, n int, base uint64, full func()) {
	t.Helper()
	for i := range n {
		sqe, _ := r.NextSQE()
		if sqe == nil {
			t.Fatalf("SQ full after %d entries", i)
		}
		sqe.Opcode = OpNop
		sqe.UserData = base + uint64(i)
	}
	if full != nil {
		full()
	}
	if got, err := r.Submit(uint32(n)); err != nil || got != n {
		t.Fatalf("Submit: %d, %v", got, err)
	}
	first, second := r.PeekCQ()
	got := append(append([]CQE{}, first...), second...)
	if len(got) != n {
		t.Fatalf("%d CQEs, want %d", len(got), n)
	}
	for i, c := range got {
		if c.UserData != base+uint64(i) || c.Res != 0 {
			t.Errorf("CQE %d: %+v", i, c)
		}
	}
	r.AdvanceCQ(uint32(len(got)))
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
		for round := range 3 {
			nopRoundTrip(t, r, 4, uint64(round*4), nil)
		}
		r.Close()
	}
}

// TestUntake gives back SQEs taken since the last Publish, and none of
// those published: the kernel then sees only what stayed taken.
func TestUntake(t *testing.T) {
	r, err := Setup(8, 16)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer r.Close()
	for range 3 {
		if sqe, _ := r.NextSQE(); sqe == nil {
			t.Fatal("no SQE from an empty SQ")
		}
	}
	if !r.Untake(3) || r.SQFree() != 8 {
		t.Fatalf("Untake(3) of 3 taken: SQ has %d free, want 8", r.SQFree())
	}
	sqe, _ := r.NextSQE()
	sqe.Opcode, sqe.UserData = OpNop, 7
	r.Publish()
	if r.Untake(1) {
		t.Fatal("Untake gave back a published SQE")
	}
	for range 2 {
		r.NextSQE()
	}
	if r.Untake(3) {
		t.Fatal("Untake gave back more than was taken since Publish")
	}
	if !r.Untake(2) || r.SQFree() != 7 {
		t.Fatalf("after Untake(2): %d free, want 7", r.SQFree())
	}
	if got, err := r.Submit(1); err != nil || got != 1 {
		t.Fatalf("Submit: %d, %v", got, err)
	}
	first, second := r.PeekCQ()
	got := append(append([]CQE{}, first...), second...)
	if len(got) != 1 || got[0].UserData != 7 {
		t.Fatalf("CQEs %+v, want the one published NOP (user data 7)", got)
	}
	r.AdvanceCQ(1)
	nopRoundTrip(t, r, 8, 100, nil) // the ring is whole
}

// TestTaker: a Taker takes the SQEs TakeSQE would, zeroed, at the same
// positions, across the ring's wrap, and they count as taken once Took
// stores its position; the kernel runs them.
func TestTaker(t *testing.T) {
	r, err := Setup(8, 16)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer r.Close()
	nopRoundTrip(t, r, 8, 5, nil) // the ring's position off 0, so that the Taker wraps
	for round := range 3 {
		want := r.sqLocal
		tk := r.Taker()
		for i := range 6 {
			sqe, pos := tk.Take()
			if pos != want+uint32(i) {
				t.Fatalf("round %d: SQE %d at position %d, want %d", round, i, pos, want+uint32(i))
			}
			if sqe != &r.sqes[pos&r.sqMask] {
				t.Fatalf("round %d: SQE %d is not the ring's entry at position %d", round, i, pos)
			}
			if *sqe != (SQE{}) {
				t.Fatalf("round %d: SQE %d not zeroed: %+v", round, i, *sqe)
			}
			sqe.Opcode, sqe.UserData = OpNop, uint64(i)
		}
		if r.SQFree() != 8 {
			t.Fatalf("round %d: %d free before Took, want 8", round, r.SQFree())
		}
		r.Took(tk)
		if r.SQFree() != 2 {
			t.Fatalf("round %d: %d free after Took, want 2", round, r.SQFree())
		}
		if got, err := r.Submit(6); err != nil || got != 6 {
			t.Fatalf("round %d: Submit: %d, %v", round, got, err)
		}
		first, second := r.PeekCQ()
		got := append(append([]CQE{}, first...), second...)
		if len(got) != 6 {
			t.Fatalf("round %d: %d CQEs, want 6", round, len(got))
		}
		for i, c := range got {
			if c.UserData != uint64(i) || c.Res != 0 {
				t.Fatalf("round %d: CQE %d: %+v", round, i, c)
			}
		}
		r.AdvanceCQ(uint32(len(got)))
	}
}

// TestNsecToTimespec: the kernel's __kernel_timespec for a duration in
// nanoseconds, whose Nsec stays in [0, 1e9). Its size (16 bytes, 64-bit
// fields on every architecture) is checked at compile time.
func TestNsecToTimespec(t *testing.T) {
	for _, c := range []struct {
		ns   int64
		want Timespec
	}{
		{0, Timespec{}},
		{1, Timespec{0, 1}},
		{1e9, Timespec{1, 0}},
		{1e9 + 5, Timespec{1, 5}},
		{-1, Timespec{-1, 999999999}},
		{math.MaxInt64, Timespec{math.MaxInt64 / 1_000_000_000, math.MaxInt64 % 1_000_000_000}},
	} {
		if got := NsecToTimespec(c.ns); got != c.want {
			t.Errorf("NsecToTimespec(%d) = %+v, want %+v", c.ns, got, c.want)
		}
	}
}
