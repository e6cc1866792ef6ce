package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Lease is a host-local IPAM lease: an address of a CNI network held by a
// container ID.
type Lease struct {
	Network     string `json:"network"`
	Address     string `json:"address"`
	ContainerID string `json:"container_id"`
}

// hostLocalLeases lists the leases of network in hostLocalDataDir.
func hostLocalLeases(network string) ([]Lease, error) {
	dir := filepath.Join(hostLocalDataDir, network)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list leases of %s: %w", network, err)
	}
	var out []Lease
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || n == "lock" || strings.HasPrefix(n, "last_reserved_ip") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue // released meanwhile
		}
		id, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out = append(out, Lease{Network: network, Address: n, ContainerID: strings.TrimSpace(id)})
	}
	return out, nil
}
