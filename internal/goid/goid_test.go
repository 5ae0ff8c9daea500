package goid

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestID: ID tells goroutines apart and gives one goroutine the same
// id each time (usb's Pump and minidrv's hotplug watch rest on it).
func TestID(t *testing.T) {
	me := ID()
	assert.Positive(t, me)
	assert.Equal(t, me, ID())
	other := make(chan int64)
	go func() { other <- ID() }()
	assert.NotEqual(t, me, <-other)
}
