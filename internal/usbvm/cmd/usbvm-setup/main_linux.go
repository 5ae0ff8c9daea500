// Command usbvm-setup prepares the usbvm guest: it installs QEMU from Debian
// (qemu-system-x86) when it is missing, downloads the kernel package that
// linux-image-amd64 depends on (without installing it), caches its kernel
// and USB gadget modules in ${XDG_CACHE_HOME:-$HOME/.cache}/cancelio/usbvm/,
// and boots the guest once to check it and to choose the accelerator.
// A cached kernel of the current package version is reused.
//
//	go run ./internal/usbvm/cmd/usbvm-setup [-force] [-check] [-no-boot-check] [-q]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/cancelio/cancelio/internal/usbvm/internal/guestinit"
	"github.com/cancelio/cancelio/internal/usbvm/internal/vmhost"
)

func main() {
	if guestinit.IsInit() {
		guestinit.Main() // the boot check runs this binary as the guest's init
	}
	force := flag.Bool("force", false, "download and extract the kernel even if it is cached")
	quiet := flag.Bool("q", false, "print only errors and the kernel directory")
	noBoot := flag.Bool("no-boot-check", false, "skip the boot check (accelerator: tcg)")
	check := flag.Bool("check", false, "boot the guest once even if the cached kernel passed before")
	flag.Parse()

	root, err := vmhost.CacheRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var log io.Writer = os.Stderr
	if *quiet {
		log = nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	k, err := vmhost.Setup(ctx, root, vmhost.SetupOptions{Log: log, Force: *force, SkipBootCheck: *noBoot, BootCheck: *check})
	if err != nil {
		fmt.Fprintf(os.Stderr, "usbvm-setup: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(k.Dir)
}
