//go:build linux

package ioring

import (
	"context"
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkPingPong: a 64-byte message and its echo, over a socketpair and
// over TCP loopback, with cancelio Send/Recv (a client goroutine and an
// echo goroutine, each waiting for its own requests) beside Go's net
// package in the same run. One op is one round trip.
func BenchmarkPingPong(b *testing.B) {
	for _, tr := range []string{"socketpair", "tcp"} {
		b.Run("transport="+tr, func(b *testing.B) {
			for _, be := range backends {
				b.Run("impl=cancelio-"+be.String(), func(b *testing.B) {
					r, err := New(Config{Entries: 64, Backend: be})
					if err != nil {
						b.Fatal(err)
					}
					defer r.Close()
					cl, srv := benchConnPair(b, tr)
					defer unix.Close(cl)
					defer unix.Close(srv)
					pingPongRing(b, r, cl, srv)
				})
			}
			b.Run("impl=net", func(b *testing.B) {
				cl, srv := benchConnPair(b, tr)
				c1, c2 := fdConn(b, cl), fdConn(b, srv)
				defer c1.Close()
				defer c2.Close()
				pingPongNet(b, c1, c2)
			})
		})
	}
}

// benchConnPair returns two connected blocking stream sockets.
func benchConnPair(b *testing.B, tr string) (int, int) {
	if tr == "socketpair" {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		return fds[0], fds[1]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	dup := func(c net.Conn) int {
		defer c.Close()
		f, err := c.(*net.TCPConn).File() // a blocking dup
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd, err := unix.Dup(int(f.Fd()))
		if err != nil {
			b.Fatal(err)
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return fd
	}
	return dup(c), dup(s)
}

func fdConn(b *testing.B, fd int) net.Conn {
	f := os.NewFile(uintptr(fd), "sock")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func pingPongRing(b *testing.B, r *Ring, cl, srv int) {
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			c, err := r.Do(ctx, Recv(srv, buf, unix.MSG_WAITALL))
			if err != nil || c.Err != nil || c.N == 0 {
				return
			}
			if c, err := r.Do(ctx, Send(srv, buf[:c.N], 0)); err != nil || c.Err != nil {
				return
			}
		}
	}()
	msg, in := make([]byte, 64), make([]byte, 64)
	b.SetBytes(2 * 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if c, err := r.Do(ctx, Send(cl, msg, 0)); err != nil || c.Err != nil {
			b.Fatal(err, c.Err)
		}
		if c, err := r.Do(ctx, Recv(cl, in, unix.MSG_WAITALL)); err != nil || c.Err != nil || c.N != 64 {
			b.Fatal(err, c.Err, c.N)
		}
	}
	b.StopTimer()
	unix.Shutdown(cl, unix.SHUT_WR)
	<-done
}

func pingPongNet(b *testing.B, cl, srv net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(srv, buf); err != nil {
				return
			}
			if _, err := srv.Write(buf); err != nil {
				return
			}
		}
	}()
	msg, in := make([]byte, 64), make([]byte, 64)
	b.SetBytes(2 * 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(cl, in); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cl.(interface{ CloseWrite() error }).CloseWrite()
	<-done
}
