package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// ImageConfigPath is where the image builder leaves the image's process
// defaults inside the guest.
const ImageConfigPath = "/.kindling/image.json"

// DefaultUser is the user processes and file operations run as when the
// request names none, as in E2B. When the guest has no such user the agent
// falls back to root.
const DefaultUser = "user"

// ImageConfig is the image's process defaults, as the image builder writes
// them to ImageConfigPath.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// LoadImageConfig reads an image config file. A missing file gives an empty
// config and no error: images without one use the agent's defaults.
func LoadImageConfig(path string) (ImageConfig, error) {
	var c ImageConfig
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read image config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("image config %q: %w", path, err)
	}
	for _, kv := range c.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return c, fmt.Errorf("image config %q: env entry %q is not KEY=VALUE", path, kv)
		}
	}
	return c, nil
}

// defaults are what a process or file operation gets when the request does
// not say: environment, working directory and user. /init changes them.
type defaults struct {
	mu      sync.Mutex // guards the fields below
	env     []string   // KEY=VALUE, image's first, then /init's; later wins
	workdir string
	user    string
}

func newDefaults(img ImageConfig) *defaults {
	d := &defaults{env: append([]string(nil), img.Env...), workdir: img.WorkingDir, user: img.User}
	if d.user == "" {
		d.user = DefaultUser
	}
	return d
}

// envMap returns the default environment as a map.
func (d *defaults) envMap() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[string]string, len(d.env))
	for _, kv := range d.env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func (d *defaults) envList() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.env...)
}

// setEnv merges vars into the default environment.
func (d *defaults) setEnv(vars map[string]string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range vars {
		d.env = append(d.env, k+"="+v)
	}
	d.env = dedupEnv(d.env)
}

func (d *defaults) get() (workdir, user string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.workdir, d.user
}

func (d *defaults) set(workdir, user string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if workdir != "" {
		d.workdir = workdir
	}
	if user != "" {
		d.user = user
	}
}

// dedupEnv keeps the last value of each key, in the order keys first appear.
func dedupEnv(env []string) []string {
	last := make(map[string]string, len(env))
	var order []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, seen := last[k]; !seen {
			order = append(order, k)
		}
		last[k] = v
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+last[k])
	}
	return out
}

// account is a resolved guest user.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32
	home   string
}

// lookupUser resolves name through the guest's /etc/passwd and /etc/group
// (the pure-Go resolver: the agent is built without cgo). A numeric name is
// taken as a uid.
func lookupUser(name string) (*account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	a := &account{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir, groups: []uint32{uint32(gid)}}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != a.gid {
				a.groups = append(a.groups, uint32(n))
			}
		}
	}
	if a.home == "" {
		a.home = "/"
	}
	return a, nil
}

// rootAccount is the fallback when the default user does not exist.
func rootAccount() *account {
	if a, err := lookupUser("root"); err == nil {
		return a
	}
	return &account{name: "root", home: "/root", groups: []uint32{0}}
}

// resolvePath makes p absolute for account a, as envd does: an empty path is
// workdir (else the home), "~" and "~/x" are in the user's home, and a
// relative path is relative to the home.
func resolvePath(p string, a *account, workdir string) (string, error) {
	if p == "" {
		p = workdir
	}
	if p == "" {
		return a.home, nil
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = filepath.Join(a.home, p[1:])
	} else if strings.HasPrefix(p, "~") {
		return "", fmt.Errorf("path %q: only the caller's own home (~) can be expanded", p)
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p), nil
	}
	return filepath.Join(a.home, p), nil
}
