package agent

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
)

// Chmod sets the permission bits of path in the guest (mode.Perm() and
// the setuid, setgid and sticky bits). It uses kindling's own
// POST /kindling/chmod, which envd lacks: an E2B envd does not have it
// and answers 404.
func (c *Client) Chmod(ctx context.Context, path string, mode fs.FileMode, o FileOptions) error {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	q := url.Values{"path": {path}, "mode": {strconv.FormatUint(uint64(unixMode(mode)), 8)}}
	if o.User != "" {
		q.Set("username", o.User)
	}
	req, err := http.NewRequest(http.MethodPost, baseURL+"/kindling/chmod?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("agent chmod %q: %w", path, err)
	}
	res, err := c.do(ctx, fmt.Sprintf("chmod %q", path), req)
	if err != nil {
		return err
	}
	_ = res.Body.Close()
	return nil
}

// unixMode turns an fs.FileMode's permission and special bits into Unix
// mode bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
