package fcapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Version returns the running Firecracker release. It asks once
// (GET /version, else vmm_version from GET / on releases without that
// endpoint) and caches the answer; a failed probe is not cached. A release
// below 1.0 gives an *UnsupportedVersionError (matching
// ErrUnsupportedVersion) together with the version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	for {
		c.mu.Lock()
		ver, verr, inflight := c.version, c.versionErr, c.probing
		if ver.IsZero() && inflight == nil {
			c.probing = make(chan struct{})
			inflight = c.probing
			c.mu.Unlock()
			return c.probeOnce(ctx, inflight)
		}
		c.mu.Unlock()
		if !ver.IsZero() {
			return ver, verr
		}
		// Another caller is probing: wait for its answer, then look again
		// (and probe ourselves if it failed).
		select {
		case <-inflight:
		case <-ctx.Done():
			return Version{}, fmt.Errorf("probe firecracker version: %w", ctx.Err())
		}
	}
}

// probeOnce runs the probe this caller claimed by creating done, records a
// successful answer and releases the waiters.
func (c *Client) probeOnce(ctx context.Context, done chan struct{}) (Version, error) {
	ver, err := c.probe(ctx)
	var verr error
	if err == nil {
		verr = checkSupported(ver)
	}
	c.mu.Lock()
	if err == nil {
		c.version, c.versionErr = ver, verr
	}
	c.probing = nil
	c.mu.Unlock()
	close(done)
	if err != nil {
		return Version{}, fmt.Errorf("probe firecracker version: %w", err)
	}
	return ver, verr
}

func (c *Client) probe(ctx context.Context) (Version, error) {
	var fv FirecrackerVersion
	err := c.send(ctx, http.MethodGet, "/version", nil, &fv)
	var apiErr *APIError
	switch {
	case err == nil:
		return ParseVersion(fv.FirecrackerVersion)
	case errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusBadRequest || apiErr.StatusCode == http.StatusNotFound):
		info, err := c.GetInstanceInfo(ctx)
		if err != nil {
			return Version{}, err
		}
		return ParseVersion(info.VMMVersion)
	default:
		return Version{}, err
	}
}

// Capabilities returns what the running release supports (probing it if
// needed).
func (c *Client) Capabilities(ctx context.Context) (Capabilities, error) {
	ver, err := c.Version(ctx)
	if err != nil {
		return Capabilities{Version: ver}, err
	}
	return CapabilitiesOf(ver), nil
}

// Supports reports whether the running release has f (probing it if
// needed).
func (c *Client) Supports(ctx context.Context, f Feature) (bool, error) {
	caps, err := c.Capabilities(ctx)
	if err != nil {
		return false, err
	}
	return caps.Supports(f), nil
}
