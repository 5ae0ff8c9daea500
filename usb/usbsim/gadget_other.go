//go:build !linux

package usbsim

import "fmt"

// ServeGadget needs Linux FunctionFS; elsewhere it fails with
// ErrNotSupported.
func ServeGadget(g Gadget, cfg Config) (*Scanner, error) {
	return nil, fmt.Errorf("usbsim: ServeGadget: FunctionFS needs Linux: %w", ErrNotSupported)
}

// The gadget transport's hooks; no Scanner has a gadget here.

func (s *Scanner) ffsPlug() error { return ErrNotSupported }

func (s *Scanner) ffsTeardown(*plug) error { return nil }

func (s *Scanner) ffsKick(*plug) {}
