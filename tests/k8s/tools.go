//go:build tools

// Package tools pins the Kubernetes commands the Halo tests run (a real kube-apiserver
// and kubectl, as controller-runtime's envtest does). scripts/build-k8s-tools.sh builds them.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
