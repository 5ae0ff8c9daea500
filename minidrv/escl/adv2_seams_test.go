package escl_test

// Adversarial tests at the seam between the eSCL front end and the driver
// it shares with other clients: the driver's own cancel and power events
// reaching a job the handler did not cancel.

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"net/http"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// adv2NextJobExact checks that the scanner takes a new job and delivers
// its page exactly, the driver idle before.
func adv2NextJobExact(t *testing.T, r *rig) {
	t.Helper()
	r.waitState(t, minidrv.Idle)
	r.dev.setBandwidth(0)
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 600, 600))
	resp, doc := r.fetch(t, loc)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next job: status %d (%s)", resp.StatusCode, doc)
	}
	img, err := png.Decode(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("next job: decode: %v", err)
	}
	checkImage(t, r.dev, img, "Grayscale8")
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("next job: %v, want delivered", rep.Outcome)
	}
}

// adv2Interrupt starts a slow job with a client waiting in NextDocument,
// runs interrupt (something outside the handler that ends the driver's
// acquisition), and checks that the waiting NextDocument ends with a
// refusal well before the scan could have finished, that the job's report
// says it ended (not delivered) with an error for which wantErr holds, and
// that the scanner then takes the next job and delivers it exactly.
func adv2Interrupt(t *testing.T, interrupt func(r *rig), after func(r *rig), wantErr error) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	got := make(chan advGet, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	arrived := r.expectNextDoc()
	go func() { got <- r.advNextDoc(ctx, loc) }()
	waitNextDoc(t, arrived)
	interrupt(r)
	select {
	case g := <-got:
		if g.code == http.StatusOK || g.code < 0 {
			t.Errorf("waiting NextDocument: status %d (%v), want a refusal", g.code, g.err)
		}
	case <-time.After(8 * time.Second): // the scan alone takes 18 s
		t.Fatal("the waiting NextDocument did not end within 8 s of the driver's acquisition ending")
	}
	rep := r.report(t)
	if rep.Outcome == escl.OutcomeDelivered || rep.Outcome == escl.OutcomeExpired {
		t.Errorf("report: %v, want failed or canceled", rep.Outcome)
	}
	if !errors.Is(rep.Err, wantErr) {
		t.Errorf("report: error %v, want %v", rep.Err, wantErr)
	}
	if after != nil {
		after(r)
	}
	adv2NextJobExact(t, r)
}

// TestAdv2ForeignCancelPendingIO: another client of the driver (the WIA
// application's cancel, not an eSCL DELETE) calls CancelPendingIO while an
// eSCL job scans. The job ends (its waiting NextDocument with it), its
// report carries the driver's ErrCanceled, the handler lets the driver go
// idle, and the next job is served.
func TestAdv2ForeignCancelPendingIO(t *testing.T) {
	adv2Interrupt(t, func(r *rig) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.dev.d.CancelPendingIO(ctx); err != nil {
			t.Errorf("CancelPendingIO: %v", err)
		}
	}, nil, minidrv.ErrCanceled)
}

// TestAdv2SuspendDuringJob: the driver is suspended (EventPowerSuspend)
// while an eSCL job scans: the job fails with ErrOffline and its
// NextDocument ends; after the resume the scanner takes the next job.
func TestAdv2SuspendDuringJob(t *testing.T) {
	adv2Interrupt(t, func(r *rig) {
		if err := r.dev.d.NotifyPnpEvent(minidrv.EventPowerSuspend); err != nil {
			t.Errorf("suspend: %v", err)
		}
	}, func(r *rig) {
		r.waitState(t, minidrv.Suspended)
		resp, body := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("POST while suspended: status %d (%s), want 503", resp.StatusCode, body)
		}
		if err := r.dev.d.NotifyPnpEvent(minidrv.EventPowerResume); err != nil {
			t.Fatalf("resume: %v", err)
		}
	}, minidrv.ErrOffline)
}
