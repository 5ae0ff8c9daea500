//go:build !linux

package main

// isTerminal reports whether fd is a terminal; without a way to tell, no.
func isTerminal(int) bool { return false }
