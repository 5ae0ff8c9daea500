// Package check holds repository checks that are not about one package:
// links_test.go makes sure every relative link in the Markdown files, and
// every Markdown file a Go comment names, resolves inside the repository;
// embedcheck.sh makes sure the project's tools stay out of an embedder's
// module graph. It has no API; `go test ./internal/check/` (part of
// `make test`) runs the Go checks, `make embedcheck` the script.
package check
