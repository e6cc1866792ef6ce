// Package gotool finds the go command for kindling's own tools and tests,
// which build parts of this module (the fake Firecracker, the kindling
// binary) at run time. Nothing in the product imports it.
package gotool

import (
	"errors"
	"os/exec"
)

// ErrNoGo is returned when the go command is not on PATH.
var ErrNoGo = errors.New("the go command is not on PATH: install Go 1.26 or add its bin directory to PATH")

// Path returns the go command found on PATH.
func Path() (string, error) {
	p, err := exec.LookPath("go")
	if err != nil {
		return "", ErrNoGo
	}
	return p, nil
}
