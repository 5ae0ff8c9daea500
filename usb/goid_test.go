package usb

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestGoid: goid tells goroutines apart and gives one goroutine the same
// id each time (the Pump's inCallback rests on it).
func TestGoid(t *testing.T) {
	me := goid()
	assert.Positive(t, me)
	assert.Equal(t, me, goid())
	other := make(chan int64)
	go func() { other <- goid() }()
	assert.NotEqual(t, me, <-other)
}
