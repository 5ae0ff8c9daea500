//go:build !linux

package usb

// defaultBackend is the backend of Open and List without WithBackend or
// CANCELIO_USB: libusb where there is no usbfs.
const defaultBackend = backendLibusb
