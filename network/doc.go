// Package network is the host side of kindling's sandbox networking: it
// attaches a sandbox to a CNI network (libcni, in a network namespace made
// for the sandbox, its tap joined to the CNI interface by tc redirects),
// builds clone-safe network slots (a namespace per sandbox where the guest
// always has the same address and MAC, reached from the host at a unique
// address through NAT at the namespace edge) and a pool of them, publishes
// guest ports on the host, enforces a per-sandbox egress policy with
// nftables sets (with a DNS forwarder for domain rules), turns
// "100Mbit"-style limits into Firecracker rate limiters, and lists what
// kindling has left on the host (Leaks).
//
// Manager puts the pieces together for the runtime: Setup builds a
// sandbox's whole network from a Spec and returns one Record to persist,
// Teardown (or TeardownID, when the Record was lost) releases it on every
// end of the sandbox.
//
// It is not the guest's network configuration: it returns what the guest
// must be told (GuestConfig, KernelIPArg) and the runtime passes it on. It
// keeps no state on disk: each set-up returns a record with snake_case JSON
// tags that the caller persists and hands back to tear down; every tear-down
// is idempotent. docs/networking.md describes the design and its limits.
//
// It works through netlink (github.com/vishvananda/netlink), nf_tables
// (github.com/google/nftables), libcni and /proc/sys, never by running ip,
// tc, nft or iptables. It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for
// everything but the parsers.
//
// The sandbox runtime (layer 2) imports it; it imports vmm only for the
// rate-limiter type, and internal/netdev for taps and namespaces.
package network
