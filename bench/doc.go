// Package bench holds cancelio's benchmark suites: the same workloads run on
// cancelio and on the baselines a Go driver author would otherwise pick, in
// one run, to be read with benchstat.
package bench
