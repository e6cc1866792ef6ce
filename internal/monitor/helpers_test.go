package monitor

import (
	"encoding/json"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMain makes this test binary a stand-in for the full program when a
// test runs it as the DNS helper (EnvRelease=dns): it notes that it ran,
// closes its ready pipe, waits for SIGTERM and notes that too.
func TestMain(m *testing.M) {
	if os.Getenv(EnvRelease) == HelperDNS {
		os.Exit(fakeDNSHelper())
	}
	os.Exit(m.Run())
}

// fakeDNSHelperLog is the file in the sandbox directory (its working
// directory) the fake helper notes what it did in.
const fakeDNSHelperLog = "fake-dns.log"

func fakeDNSHelper() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	note := func(s string) {
		f, err := os.OpenFile(fakeDNSHelperLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			f.WriteString(s + "\n")
			f.Close()
		}
	}
	note("up " + os.Getenv(EnvID) + " " + filepath.Base(os.Getenv(EnvRoot)))
	os.NewFile(ReportFD, "ready").Close()
	<-term
	note("stopped")
	return 0
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func jsonMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
