//go:build linux

package ioring

import (
	"encoding/binary"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// RecvMsg on the kernel's uevent netlink socket (hotplug without a udev
// daemon): a uevent triggered through sysfs arrives, from the kernel.
func TestConformanceNetlinkUevent(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
		if err != nil {
			t.Skipf("uevent netlink socket: %v", err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
			t.Skipf("bind uevent group: %v", err)
		}
		buf := make([]byte, 8192)
		m := &Msg{Buffers: [][]byte{buf}}
		q, err := r.Submit(RecvMsg(fd, m, 0).WithDeadline(5 * time.Second))
		require.NoError(t, err)
		const dev = "/sys/devices/virtual/mem/null/uevent"
		if err := os.WriteFile(dev, []byte("change"), 0); err != nil {
			q.Cancel()
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			t.Skipf("cannot trigger a uevent here (%v); the pending RecvMsg was canceled", err)
		}
		c := reapOne(t, r)
		if c.Err != nil && isCancel(c.Err) {
			t.Skipf("no uevent delivered to this network namespace: %v", c.Err)
		}
		require.NoError(t, c.Err)
		ev := strings.Split(string(buf[:c.N]), "\x00")
		assert.Contains(t, ev, "ACTION=change", "uevent %q", ev)
		from, ok := m.From().(*unix.SockaddrNetlink)
		require.True(t, ok, "From() = %#v", m.From())
		assert.Zero(t, from.Pid, "from the kernel")
		assert.Equal(t, uint32(1), from.Groups)
	})
}

// SendMsg and RecvMsg on a netlink route socket: a request and the
// kernel's answer (RTM_GETLINK for loopback).
func TestConformanceNetlinkRoute(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			t.Skipf("route netlink socket: %v", err)
		}
		defer unix.Close(fd)
		lo, err := net.InterfaceByName("lo")
		require.NoError(t, err)
		req := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofIfInfomsg)
		binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
		binary.NativeEndian.PutUint16(req[4:], unix.RTM_GETLINK)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
		binary.NativeEndian.PutUint32(req[8:], 42) // seq
		binary.NativeEndian.PutUint32(req[unix.NLMSG_HDRLEN+4:], uint32(lo.Index))
		c := doOp(t, r, SendMsg(fd, &Msg{Buffers: [][]byte{req}, Addr: &unix.SockaddrNetlink{Family: unix.AF_NETLINK}}, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, len(req), c.N)
		m := &Msg{Buffers: [][]byte{make([]byte, 16384)}}
		c = doOp(t, r, RecvMsg(fd, m, 0))
		require.NoError(t, c.Err)
		require.GreaterOrEqual(t, c.N, unix.NLMSG_HDRLEN)
		got := m.Buffers[0]
		assert.Equal(t, uint16(unix.RTM_NEWLINK), binary.NativeEndian.Uint16(got[4:]), "nlmsg_type")
		assert.Equal(t, uint32(42), binary.NativeEndian.Uint32(got[8:]), "nlmsg_seq")
		from, ok := m.From().(*unix.SockaddrNetlink)
		require.True(t, ok, "From() = %#v", m.From())
		assert.Zero(t, from.Pid, "from the kernel")
	})
}

// SendMsg and RecvMsg of CAN frames on a vcan interface, where the kernel
// has one (ip link add vcan0 type vcan; skipped otherwise).
func TestConformanceCAN(t *testing.T) {
	ifi, err := net.InterfaceByName("vcan0")
	if err != nil {
		t.Skipf("no vcan0 interface: %v", err)
	}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		open := func() int {
			fd, err := unix.Socket(unix.AF_CAN, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.CAN_RAW)
			if err != nil {
				t.Skipf("CAN socket: %v", err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			require.NoError(t, unix.Bind(fd, &unix.SockaddrCAN{Ifindex: ifi.Index}))
			return fd
		}
		rx, tx := open(), open()
		frame := make([]byte, 16) // struct can_frame
		binary.NativeEndian.PutUint32(frame[0:], 0x123)
		frame[4] = 3
		copy(frame[8:], "abc")
		in := make([]byte, 16)
		m := &Msg{Buffers: [][]byte{in}}
		_, err := r.Submit(RecvMsg(rx, m, 0))
		require.NoError(t, err)
		c := doOp(t, r, SendMsg(tx, &Msg{Buffers: [][]byte{frame}}, 0))
		require.NoError(t, c.Err)
		c = reapOne(t, r)
		require.NoError(t, c.Err)
		assert.Equal(t, frame, in)
		from, ok := m.From().(*unix.SockaddrCAN)
		require.True(t, ok, "From() = %#v", m.From())
		assert.Equal(t, ifi.Index, from.Ifindex)
	})
}
