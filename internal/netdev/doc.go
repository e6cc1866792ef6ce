// Package netdev is kindling's host networking for sandboxes: it names,
// creates, checks and deletes the persistent tap devices that Firecracker
// attaches to, derives stable tap names and guest MAC addresses from sandbox
// IDs, and resolves and enters network namespaces.
//
// It talks to the kernel directly: netlink (github.com/vishvananda/netlink)
// for link queries, MTU, up and delete, the /dev/net/tun ioctls for creating
// a tap (the kernel offers no netlink call for that), and setns on a locked
// OS thread for namespace work. It never runs the ip command.
//
// It is not a network manager: it sets up no addresses, routes, bridges,
// NAT, firewall rules or DHCP. It creates, lists and deletes named network
// namespaces (CreateNetNS) but puts nothing in them. AttachTap and Wire
// stand in for a VMM's virtio-net where no guest boots: they attach to a
// tap and copy its frames to and from another tap, a simulated guest's NIC. Its functions are
// safe for concurrent use; each call opens and closes its own netlink
// socket.
//
// The sandbox runtime and package network (layer 2) import it; the VMM driver, the API client
// and the CLI do not (the CLI reaches it only through the runtime). It needs
// root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, for everything but the pure
// functions (TapName, ValidateTapName, MAC, ParseMAC).
package netdev
