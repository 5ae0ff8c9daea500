package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
)

// failure is a scan that did not complete: line is the one line a person
// reads, err the driver's whole error (printed under -v), canceled whether
// Ctrl-C ended it (exit status 130).
type failure struct {
	line     string
	err      error
	canceled bool
}

func (f *failure) Error() string { return f.line }

// describe turns the error of a failed step into a failure whose line
// says what happened in the scanner's terms. It tells the cases apart by
// the driver's sentinels, never by the text: what is the step ("scan
// failed at 12% (...)", "open the scanner"), stalled whether the scanner
// had been silent for the stall timeout when it failed, and sinkErr the
// output's own error, if any.
func describe(err error, o *options, what string, stalled bool, sinkErr error) *failure {
	var line string
	switch {
	case sinkErr != nil:
		line = fmt.Sprintf("%s: write %s: %v", what, o.out, sinkErr)
	case errors.Is(err, minidrv.ErrOffline), errors.Is(err, usb.ErrNoDevice):
		line = what + ": the scanner went away (unplugged or suspended)"
	case errors.Is(err, minidrv.ErrDeviceCommunication) && stalled:
		// The driver has no sentinel for a stall: a communication
		// failure after a silence as long as the timeout is one.
		line = fmt.Sprintf("%s: the scanner stopped answering: no data within --stall-timeout %v", what, o.stallTimeout)
	case errors.Is(err, minidrv.ErrDeviceCommunication):
		line = what + ": the scanner did not answer as expected"
	default:
		return &failure{line: fmt.Sprintf("%s: %v", what, err)}
	}
	return &failure{line: line, err: err}
}

// stalled reports whether a silence of quiet ended by a failure was the
// stall timeout running out. The driver starts its clock a little before
// the progress line's (at the data's arrival, not its delivery) and checks
// it on a tick, so half the timeout is the bound.
func stalled(timeout, quiet time.Duration) bool {
	return timeout > 0 && quiet >= timeout/2
}
