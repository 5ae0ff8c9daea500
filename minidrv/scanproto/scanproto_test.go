package scanproto_test

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv/scanproto"
)

func TestStartScanRoundTrip(t *testing.T) {
	p := scanproto.ScanParams{DPI: 600, Width: 2480, Height: 3507, Format: scanproto.FormatRGB48, Flags: scanproto.FlagZLP, Seed: 1<<63 | 5}
	b := scanproto.StartScanCommand(p)
	require.Len(t, b, scanproto.StartScanSize)
	assert.Equal(t, byte(scanproto.CmdStartScan), b[0])
	got, ok := scanproto.ParseStartScan(b)
	require.True(t, ok)
	assert.Equal(t, p, got)
	_, ok = scanproto.ParseStartScan(b[:len(b)-1])
	assert.False(t, ok, "short payload")
	_, ok = scanproto.ParseStartScan(append([]byte{scanproto.CmdEcho}, b[1:]...))
	assert.False(t, ok, "wrong opcode")
	assert.Equal(t, b, scanproto.AppendStartScan(nil, p))
}

func TestEventRoundTrip(t *testing.T) {
	e := scanproto.Event{Kind: scanproto.EventJobDone, State: scanproto.StateIdle, Job: 7, Sent: 1<<40 + 1, Total: 1<<40 + 1}
	b := e.Marshal()
	require.Len(t, b, scanproto.EventSize)
	got, err := scanproto.ParseEvent(b)
	require.NoError(t, err)
	assert.Equal(t, e, got)
	_, err = scanproto.ParseEvent(b[1:])
	assert.ErrorIs(t, err, scanproto.ErrBadEvent)
}

func TestCommands(t *testing.T) {
	assert.Equal(t, []byte{scanproto.CmdAbort}, scanproto.AbortCommand())
	assert.Equal(t, []byte{scanproto.CmdGetStatus}, scanproto.StatusCommand())
	assert.Equal(t, []byte{scanproto.CmdEcho, 'h', 'i'}, scanproto.EchoCommand([]byte("hi")))
	assert.Equal(t, []byte{scanproto.CmdEcho}, scanproto.EchoCommand(nil))
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = scanproto.AbortCommand() }))
}

// The protocol is a leaf that device and driver share: standard library
// imports only.
func TestStdlibOnly(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		assert.NotContains(t, first, ".", "scanproto imports %s", imp)
	}
}
