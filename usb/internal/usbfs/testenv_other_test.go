//go:build !(linux && (amd64 || arm64 || riscv64 || loong64))

package usbfs

func startTestEnv() (stop func()) { return func() {} }

// opensDevices: usbfs opens no device on this platform (errPlatform).
const opensDevices = false
