package usb

// defaultBackend is the backend of Open and List without WithBackend or
// CANCELIO_USB: native usbfs on Linux.
const defaultBackend = backendUsbfs
