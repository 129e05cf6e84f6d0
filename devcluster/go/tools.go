//go:build tools

// Package tools pins the upstream main packages we build, so `go mod tidy` records their dependencies.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
