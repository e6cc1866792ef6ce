// Package shim is kindling's containerd runtime v2 shim
// (io.containerd.kindling.v2): containerd's task API served over ttrpc,
// with each pod sandbox — or each plain task — in a Firecracker microVM
// of its own, driven through kindling's runtime (package sandbox), and the
// containers run in that VM by the guest agent (package agent/container).
//
// It is not a Kubernetes component: containerd's CRI plugin turns pods
// into tasks, and this package only sees tasks. It is imported by
// cmd/containerd-shim-kindling-v2 alone; see docs/kubernetes.md for the
// process model, the mapping of the task API and what is not done yet.
package shim
