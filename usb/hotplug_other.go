//go:build !linux

package usb

import (
	"context"
	"iter"

	"github.com/cancelio/cancelio/ioring"
)

// Hotplug reports the arrival and removal of USB devices; on Linux it
// reads the kernel's uevents. Here there is none.
type Hotplug struct{}

// errNoHotplug is WatchHotplug's answer where there are no uevents.
var errNoHotplug = errorf("usb: hotplug: %w: needs Linux uevents", ioring.ErrNotSupported)

// WatchHotplug fails with an error wrapping ioring.ErrNotSupported on
// this platform.
func WatchHotplug(*ioring.Ring, HotplugFilter) (*Hotplug, error) { return nil, errNoHotplug }

// Next fails on this platform.
func (h *Hotplug) Next(context.Context) (HotplugEvent, error) { return HotplugEvent{}, errNoHotplug }

// Events yields the error of Next on this platform.
func (h *Hotplug) Events(ctx context.Context) iter.Seq2[HotplugEvent, error] {
	return func(yield func(HotplugEvent, error) bool) { yield(h.Next(ctx)) }
}

// Close does nothing on this platform.
func (h *Hotplug) Close() error { return nil }
