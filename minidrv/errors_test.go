package minidrv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHResult(t *testing.T) {
	cases := []struct {
		err  error
		want uint32
		name string
	}{
		{nil, 0, ""},                                  // S_OK
		{ErrCanceled, 1, "S_FALSE"},                   // an outcome, not a failure
		{io.EOF, 0x80004005, ""},                      // E_FAIL for foreign errors
		{context.Canceled, 0x80004005, ""},            // not ours: E_FAIL
		{ErrBusy, 0x80210006, "WIA_ERROR_BUSY"},       // wia.h
		{ErrOffline, 0x80210005, "WIA_ERROR_OFFLINE"}, //
		{ErrDeviceCommunication, 0x8021000A, "WIA_ERROR_DEVICE_COMMUNICATION"},
		{ErrDeviceLocked, 0x8021000D, "WIA_ERROR_DEVICE_LOCKED"},
		{ErrPaperEmpty, 0x80210003, "WIA_ERROR_PAPER_EMPTY"},
		{ErrPaperJam, 0x80210002, "WIA_ERROR_PAPER_JAM"},
		{ErrCoverOpen, 0x80210016, "WIA_ERROR_COVER_OPEN"},
		{ErrWarmingUp, 0x80210007, "WIA_ERROR_WARMING_UP"},
		{ErrGeneral, 0x80210001, "WIA_ERROR_GENERAL_ERROR"},
		{ErrInvalidProperty, 0x80070057, "E_INVALIDARG"},
		{ErrInvalidEvent, 0x80070057, "E_INVALIDARG"},
		{ErrNotInitialized, 0x8000FFFF, "E_UNEXPECTED"},
		{ErrAlreadyInitialized, 0x8000FFFF, "E_UNEXPECTED"},
		{ErrNotLocked, 0x8000FFFF, "E_UNEXPECTED"},
		{ErrInvalidState, 0x8000FFFF, "E_UNEXPECTED"},
	}
	for _, c := range cases {
		got := uint32(HResult(c.err))
		assert.Equal(t, c.want, got, "HResult(%v) = 0x%08X, want 0x%08X", c.err, got, c.want)
		if e, ok := c.err.(*Error); ok {
			assert.Equal(t, c.name, e.Name, "%v", e)
			assert.Contains(t, e.Error(), fmt.Sprintf("0x%08X", c.want), "message shows the code")
			// Wrapped in a foreign error, the code survives.
			assert.Equal(t, c.want, uint32(HResult(fmt.Errorf("acquire: %w", e))))
		}
	}
	assert.Equal(t, int32(0), HResultOK)
	assert.Equal(t, int32(1), HResultFalse)
	for _, c := range []struct {
		hr   int32
		want uint32
	}{{HResultFail, 0x80004005}, {HResultInvalidArg, 0x80070057}, {HResultUnexpected, 0x8000FFFF}} {
		assert.Equal(t, c.want, uint32(c.hr))
	}
}

func TestSentinelsDistinct(t *testing.T) {
	all := []*Error{
		ErrGeneral, ErrPaperJam, ErrPaperEmpty, ErrOffline, ErrBusy, ErrWarmingUp,
		ErrDeviceCommunication, ErrDeviceLocked, ErrCoverOpen, ErrInvalidProperty,
		ErrInvalidEvent, ErrNotInitialized, ErrAlreadyInitialized, ErrNotLocked,
		ErrInvalidState, ErrCanceled,
	}
	for i, a := range all {
		for j, b := range all {
			assert.Equal(t, i == j, errors.Is(a, b), "errors.Is(%v, %v)", a, b)
		}
		assert.NotEmpty(t, a.Msg)
	}
}

func TestErrorWrap(t *testing.T) {
	cause := errors.New("ioring: operation canceled")
	w := ErrCanceled.Wrap(cause)
	require.NotSame(t, ErrCanceled, w)
	assert.ErrorIs(t, w, ErrCanceled, "wrapped error keeps the sentinel's identity")
	assert.ErrorIs(t, w, cause, "and exposes its cause")
	assert.NotErrorIs(t, w, ErrBusy)
	assert.Equal(t, HResultFalse, HResult(w))
	assert.Equal(t, "minidrv: operation canceled (S_FALSE 0x00000001): ioring: operation canceled", w.Error())

	// Wrapping twice still matches the original sentinel and both causes.
	outer := errors.New("usb: no device")
	ww := w.Wrap(outer)
	assert.ErrorIs(t, ww, ErrCanceled)
	assert.ErrorIs(t, ww, outer)
	assert.NotErrorIs(t, ww, w, "identity is the sentinel's, not the intermediate's")

	// errors.Join with the transport's error also works.
	j := errors.Join(ErrCanceled, cause)
	assert.ErrorIs(t, j, ErrCanceled)
	assert.ErrorIs(t, j, cause)
	assert.Equal(t, HResultFalse, HResult(j))

	assert.Same(t, ErrBusy, ErrBusy.Wrap(nil), "Wrap(nil) is the error itself")

	// A sentinel does not match an unrelated *Error with the same code.
	other := &Error{HResult: ErrBusy.HResult, Msg: "busy too"}
	assert.NotErrorIs(t, other, ErrBusy)
	assert.Equal(t, ErrBusy.HResult, HResult(other))
	assert.Equal(t, "minidrv: busy too (0x80210006)", other.Error())
}

func TestErrorMessages(t *testing.T) {
	assert.Equal(t, "minidrv: device busy (WIA_ERROR_BUSY 0x80210006)", ErrBusy.Error())
	assert.Equal(t, "minidrv: device offline (WIA_ERROR_OFFLINE 0x80210005)", ErrOffline.Error())
}
