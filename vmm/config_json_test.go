package vmm

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// A Config stored with the Go field names as keys (before the JSON tags)
// and one stored with the JSON names decode to the same value.
func TestConfigReadsBothSpellings(t *testing.T) {
	want := Config{
		Firecracker: "/fc", ID: "a", RunDir: "/run/a", Kernel: "/k", VCPUs: 2, MemoryMiB: 64,
		Jailer:            &JailerConfig{Path: "/j", UID: 1, GID: 2, NewPIDNS: true},
		Drives:            []Drive{{ID: "rootfs", Path: "/r", Root: true, RateLimiter: &RateLimiter{Ops: &TokenBucket{Size: 9, RefillTime: time.Second}}}},
		NetworkInterfaces: []NetworkInterface{{ID: "eth0", TapName: "kd0", MAC: "02:00:00:00:00:01"}},
		Vsock:             &Vsock{CID: 3, Path: "/v"},
		Balloon:           &Balloon{AmountMiB: 8, StatsInterval: time.Second},
	}
	const old = `{"Firecracker":"/fc","Jailer":{"Path":"/j","UID":1,"GID":2,"NewPIDNS":true},"ID":"a",
		"RunDir":"/run/a","Kernel":"/k","VCPUs":2,"MemoryMiB":64,
		"Drives":[{"ID":"rootfs","Path":"/r","Root":true,"RateLimiter":{"Bandwidth":null,"Ops":{"Size":9,"OneTimeBurst":0,"RefillTime":1000000000}}}],
		"NetworkInterfaces":[{"ID":"eth0","TapName":"kd0","MAC":"02:00:00:00:00:01","RxRateLimiter":null,"TxRateLimiter":null}],
		"Vsock":{"CID":3,"Path":"/v"},"Balloon":{"AmountMiB":8,"DeflateOnOOM":false,"StatsInterval":1000000000},"Console":null}`
	var fromOld Config
	if err := json.Unmarshal([]byte(old), &fromOld); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromOld, want) {
		t.Errorf("old spelling read as\n%+v\nwant\n%+v", fromOld, want)
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var fromNew Config
	if err := json.Unmarshal(b, &fromNew); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromNew, want) {
		t.Errorf("%s read as\n%+v\nwant\n%+v", b, fromNew, want)
	}
	// Given both, the JSON name wins.
	var both Drive
	if err := json.Unmarshal([]byte(`{"Path":"/old","path":"/new","id":"d"}`), &both); err != nil || both.Path != "/new" {
		t.Errorf("both spellings: %+v, %v; want path /new", both, err)
	}
	// Not an object: json's own error.
	if err := json.Unmarshal([]byte(`[1]`), &both); err == nil {
		t.Error("an array decoded as a Drive")
	}
}

func FuzzConfigJSON(f *testing.F) {
	f.Add([]byte(`{"RunDir":"/a","run_dir":"/b","Drives":[{"Path":"/p"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Config
		if json.Unmarshal(b, &c) != nil {
			return
		}
		// Whatever decodes is stored the same after another decode.
		enc, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var c2 Config
		if err := json.Unmarshal(enc, &c2); err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		enc2, err := json.Marshal(c2)
		if err != nil {
			t.Fatal(err)
		}
		if string(enc) != string(enc2) {
			t.Fatalf("round trip changed %s into %s", enc, enc2)
		}
	})
}
