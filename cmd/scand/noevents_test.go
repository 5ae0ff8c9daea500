package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/usb"
)

// TestNoEvents: the watcher scand falls back on where USB hotplug events
// cannot be watched reports nothing, and ends its Next as the driver's
// watch needs: on the context's end, and after Close with usb.ErrClosed.
func TestNoEvents(t *testing.T) {
	n := &noEvents{closed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := n.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	done := make(chan error, 1)
	go func() {
		_, err := n.Next(context.Background())
		done <- err
	}()
	require.NoError(t, n.Close())
	require.ErrorIs(t, <-done, usb.ErrClosed)
	require.NoError(t, n.Close(), "a second Close")
	_, err = n.Next(context.Background())
	require.ErrorIs(t, err, usb.ErrClosed)
}
