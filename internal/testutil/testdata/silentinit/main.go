// Command silentinit is a guest init that never serves anything: it waits
// for SIGTERM or SIGINT and exits. Tests boot it where a guest agent is
// expected, to see how a guest that never answers is reported.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
