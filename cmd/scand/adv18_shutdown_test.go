package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv18ExpectPost returns a channel closed when the first POST reaches the
// eSCL handler of the daemon the test starts next (call it before start).
func adv18ExpectPost(t *testing.T) <-chan struct{} {
	t.Helper()
	arrived := make(chan struct{})
	var once sync.Once
	testRequest = func(r *http.Request) {
		if r.Method == http.MethodPost {
			once.Do(func() { close(arrived) })
		}
	}
	t.Cleanup(func() { testRequest = nil })
	return arrived
}

// TestAdv18SIGTERMStalledPostBody: a client that sent a POST's headers and
// part of its body, then stalls (holding no job: the body is read before
// the scanner is reserved), must not hold up SIGTERM: scand stops
// promptly with status 0, as documented ("open requests end").
func TestAdv18SIGTERMStalledPostBody(t *testing.T) {
	arrived := adv18ExpectPost(t)
	d := start(t)
	host := strings.TrimPrefix(strings.TrimSuffix(d.url, "/eSCL"), "http://")
	body := fmt.Sprintf(settingsXML, "Grayscale8", 75, 75)
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_, err = fmt.Fprintf(c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:20])
	require.NoError(t, err)
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("the POST did not reach the handler within 15 s")
	}
	code, took := d.stop(t)
	assert.Equal(t, exitOK, code, "exit status after SIGTERM with a stalled POST:\n%s", d.log.String())
	assert.Less(t, took, 5*time.Second, "SIGTERM held up by a stalled POST body")
	// The stalled client is not served a job after the daemon stopped.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, body[20:])
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		resp.Body.Close()
		assert.NotEqual(t, http.StatusCreated, resp.StatusCode, "a job created after shutdown")
	}
}

// TestAdv18SIGTERMSilentConnection: a client that connected and sent
// nothing yet (a pre-connect) must not hold up SIGTERM for long.
func TestAdv18SIGTERMSilentConnection(t *testing.T) {
	d := start(t)
	host := strings.TrimPrefix(strings.TrimSuffix(d.url, "/eSCL"), "http://")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	time.Sleep(100 * time.Millisecond) // accepted
	code, took := d.stop(t)
	assert.Equal(t, exitOK, code, d.log.String())
	assert.Less(t, took, 3*time.Second, "SIGTERM held up by a silent connection")
}
