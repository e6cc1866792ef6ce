package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kindling-vm/kindling/internal/gotool"
)

// moduleRoot returns the directory of kindling's go.mod, as `go env GOMOD`
// sees it from the working directory.
func moduleRoot(ctx context.Context, goBin string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, goBin, "env", "GOMOD")
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside kindling's source tree: run from it")
	}
	return filepath.Dir(mod), nil
}

// goBuild builds the main package pkg (relative to kindling's module root)
// into out.
func goBuild(ctx context.Context, pkg, out string) error {
	goBin, err := gotool.Path()
	if err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	root, err := moduleRoot(ctx, goBin)
	if err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
