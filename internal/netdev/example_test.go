package netdev_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/kindling-vm/kindling/internal/netdev"
)

func ExampleTapName() {
	fmt.Println(netdev.TapName("sb-1"))
	// Output: kd95208ae5efd9
}

func ExampleMAC() {
	fmt.Println(netdev.MAC("sb-1"))
	// Output: 86:11:14:e7:f1:a4
}

func ExampleValidateTapName() {
	fmt.Println(netdev.ValidateTapName("averyveryverylongname"))
	// Output: tap name "averyveryverylongname": longer than 15 bytes
}

func ExampleParseMAC() {
	mac, err := netdev.ParseMAC("AA:FC:00:00:00:01")
	fmt.Println(mac, err)
	_, err = netdev.ParseMAC("ff:ff:ff:ff:ff:ff")
	fmt.Println(err)
	// Output:
	// aa:fc:00:00:00:01 <nil>
	// MAC "ff:ff:ff:ff:ff:ff": multicast or broadcast (lowest bit of the first octet is set), want unicast
}

// A sandbox's tap, created in the sandbox's network namespace (here one
// made with `ip netns add blue`) and removed when the sandbox goes.
func ExampleCreateTap() {
	ctx := context.Background()
	id := "sb-1"
	tap, err := netdev.CreateTap(ctx, netdev.TapSpec{
		Name:  netdev.TapName(id),
		NetNS: "blue",
		Owner: &netdev.Owner{UID: 12345, GID: 12345}, // the jailer's uid and gid
	})
	if err != nil {
		log.Fatal(err) // matches netdev.ErrExists if the name is taken
	}
	defer func() {
		if err := netdev.DeleteTap(ctx, tap.Name, tap.NetNS); err != nil {
			log.Print(err)
		}
	}()
	fmt.Printf("host_dev_name %s, guest_mac %s\n", tap.Name, netdev.MAC(id))
}

// A tap the user made (`ip tuntap add tap0 mode tap`) and names for a
// sandbox: check Firecracker can attach to it before starting the VM.
func ExampleCheckTap() {
	err := netdev.CheckTap("tap0", "")
	switch {
	case errors.Is(err, netdev.ErrNotFound):
		log.Fatal("no tap0: create it first")
	case errors.Is(err, netdev.ErrBusy):
		log.Fatal("tap0 is used by another VM")
	case err != nil:
		log.Fatal(err)
	}
}

// Work that must happen inside a sandbox's network namespace.
func ExampleDo() {
	err := netdev.Do("blue", func() error {
		// Sockets opened here belong to the namespace "blue".
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
