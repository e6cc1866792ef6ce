package agent_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/kindling-vm/kindling/agent"
)

// Run a command in a sandbox through its Firecracker vsock socket.
func ExampleDial() {
	ctx := context.Background()
	c, err := agent.Dial(ctx, agent.Config{VsockPath: "/run/kindling/web/vsock.sock"})
	if err != nil {
		fmt.Println(err) // agent health: agent at "…" does not answer: …
		return
	}
	defer c.Close()
	p, err := c.Exec(ctx, agent.ExecConfig{Args: []string{"uname", "-a"}, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	code, err := p.Wait(ctx)
	fmt.Println(code, err)
}

// Give a cloned guest its own identity and an access token.
func ExampleClient_Init() {
	ctx := context.Background()
	c, err := agent.New(agent.Config{VsockPath: "/run/kindling/clone1/vsock.sock"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	// Fresh entropy and the host's time are sent by default.
	err = c.Init(ctx, agent.InitConfig{AccessToken: "per-sandbox-secret", Hostname: "clone1"})
	fmt.Println(err)
}

// Copy a file into the guest and back.
func ExampleClient_PutFile() {
	ctx := context.Background()
	c, err := agent.New(agent.Config{SocketPath: "/tmp/agent.sock"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	if err := c.PutFile(ctx, "/srv/app/config.toml", strings.NewReader("port = 80\n"), agent.FileOptions{User: "app"}); err != nil {
		fmt.Println(err)
		return
	}
	rc, err := c.GetFile(ctx, "/srv/app/config.toml", agent.FileOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	_, _ = os.Stdout.ReadFrom(rc)
}
