//go:build tools

// Package tools pins distribution's registry main package, so `go mod tidy` records its dependencies.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
)
