package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// EntropySize is how many fresh random bytes Init gives the guest when the
// caller supplies none.
const EntropySize = 64

// InitConfig is what Init tells the agent after a boot, a restore or a
// clone, so that the guest does not carry its parent's identity.
type InitConfig struct {
	// Env is merged into the environment of processes started later.
	Env map[string]string
	// AccessToken becomes the token every later request must carry; the
	// client then uses it. Empty clears the token (the agent is open).
	AccessToken string
	// Time sets the guest clock; zero means now.
	Time time.Time
	// Entropy is mixed into the guest kernel's entropy pool; nil means
	// EntropySize fresh bytes from the host's crypto/rand.
	Entropy []byte
	// Hostname, if set, becomes the guest's hostname.
	Hostname string
	// DefaultUser and DefaultWorkdir replace the image's defaults.
	DefaultUser    string
	DefaultWorkdir string
}

// initBody is /init's JSON (envd's fields, and kindling's hostname and
// entropy).
type initBody struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    *string           `json:"accessToken,omitempty"`
	Timestamp      time.Time         `json:"timestamp"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	Hostname       string            `json:"hostname,omitempty"`
	Entropy        []byte            `json:"entropy,omitempty"`
}

// Init re-initialises the guest: clock, entropy, hostname, environment
// and access token. The current token (if any) authenticates the call.
func (c *Client) Init(ctx context.Context, ic InitConfig) error {
	b := initBody{EnvVars: ic.Env, Timestamp: ic.Time, DefaultUser: ic.DefaultUser,
		DefaultWorkdir: ic.DefaultWorkdir, Hostname: ic.Hostname, Entropy: ic.Entropy}
	if b.Timestamp.IsZero() {
		b.Timestamp = time.Now()
	}
	if b.Entropy == nil {
		b.Entropy = make([]byte, EntropySize)
		if _, err := rand.Read(b.Entropy); err != nil {
			return fmt.Errorf("agent init: entropy: %w", err)
		}
	}
	if ic.AccessToken != "" {
		b.AccessToken = &ic.AccessToken
	}
	body, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("agent init: %w", err)
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	req, _ := http.NewRequest(http.MethodPost, baseURL+"/init", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := c.do(ctx, "init", req)
	clear(body)
	if err != nil {
		return err
	}
	_ = res.Body.Close()
	c.setAccessToken(ic.AccessToken)
	return nil
}
