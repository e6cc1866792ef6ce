package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// upstreamTimeout bounds one forwarded query.
const upstreamTimeout = 3 * time.Second

// maxInflight bounds the queries a forwarder handles at once.
const maxInflight = 64

// DNSForwarder is the sandbox's resolver: it forwards the guest's DNS
// queries (UDP and TCP) to an upstream resolver and, before passing an answer on,
// adds the A and AAAA addresses it gives for domains the egress policy
// allows to the sandbox's nftables sets (Host.AllowResolved). The process
// that owns the sandbox (its monitor) runs one per sandbox; for a slot it
// listens on the slot's gateway address inside the slot (the DNS server
// in the slot's GuestConfig).
type DNSForwarder struct {
	host     Host
	upstream netip.AddrPort

	mu  sync.Mutex // guards rec and source
	rec *EgressRecord
	// source, if set, gives the policy in force for each answer instead
	// of rec (SetPolicySource).
	source func() *EgressRecord
}

// NewDNSForwarder returns a forwarder that asks upstream (dialled from the
// host namespace) and learns addresses into rec's sets; rec may be nil
// (no egress policy: it only forwards).
func NewDNSForwarder(host Host, upstream netip.AddrPort, rec *EgressRecord) (*DNSForwarder, error) {
	if !upstream.IsValid() || upstream.Port() == 0 {
		return nil, invalid("DNS upstream", upstream.String(), "want ADDRESS:PORT, as 192.0.2.53:53")
	}
	return &DNSForwarder{host: host, upstream: upstream, rec: rec}, nil
}

// SetPolicy switches to a new egress record (after Host.ApplyEgress).
func (f *DNSForwarder) SetPolicy(rec *EgressRecord) {
	f.mu.Lock()
	f.rec = rec
	f.mu.Unlock()
}

// SetPolicySource makes the forwarder ask source for the egress record in
// force before it learns from each answer, so that a policy changed by
// another process (the record persisted by the runtime) is followed at
// once. source returning nil means no policy.
func (f *DNSForwarder) SetPolicySource(source func() *EgressRecord) {
	f.mu.Lock()
	f.source = source
	f.mu.Unlock()
}

func (f *DNSForwarder) policy() *EgressRecord {
	f.mu.Lock()
	rec, source := f.rec, f.source
	f.mu.Unlock()
	if source != nil {
		return source()
	}
	return rec
}

// DNSListener holds the sockets a forwarder serves on: UDP, and TCP for
// answers too large for UDP.
type DNSListener struct {
	UDP net.PacketConn
	TCP net.Listener
}

// Close closes both sockets.
func (l *DNSListener) Close() error {
	return errors.Join(l.UDP.Close(), l.TCP.Close())
}

// ListenDNS opens the sockets a forwarder serves on, at addr inside the
// namespace netns (a slot's NetNS; "" for the caller's).
func ListenDNS(netns string, addr netip.AddrPort) (*DNSListener, error) {
	l := &DNSListener{}
	err := inNS(netns, func() error {
		var err error
		if l.UDP, err = net.ListenPacket("udp", addr.String()); err != nil {
			return err
		}
		if l.TCP, err = net.Listen("tcp", addr.String()); err != nil {
			l.UDP.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("DNS forwarder on %s: %w", addr, err)
	}
	return l, nil
}

// Serve answers queries on l until ctx ends or l is closed, then waits
// for the queries in flight. It closes l when ctx ends.
func (f *DNSForwarder) Serve(ctx context.Context, l *DNSListener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInflight)
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.serveTCP(ctx, l.TCP, sem, &wg)
	}()
	for {
		buf := make([]byte, 4096)
		n, from, err := l.UDP.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("DNS forwarder: %w", err)
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // overloaded: drop, the client retries
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if answer, err := f.forward(ctx, "udp", buf[:n]); err == nil {
				_, _ = l.UDP.WriteTo(answer, from)
			}
		}()
	}
}

// serveTCP answers DNS over TCP: each message is prefixed by its length
// in two bytes. A connection may carry several queries.
func (f *DNSForwarder) serveTCP(ctx context.Context, ln net.Listener, sem chan struct{}, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			for {
				_ = c.SetDeadline(time.Now().Add(2 * upstreamTimeout))
				q, err := readTCPMessage(c)
				if err != nil {
					return
				}
				answer, err := f.forward(ctx, "tcp", q)
				if err != nil {
					return
				}
				if err := writeTCPMessage(c, answer); err != nil {
					return
				}
			}
		}()
	}
}

func readTCPMessage(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, int(n[0])<<8|int(n[1]))
	_, err := io.ReadFull(r, msg)
	return msg, err
}

func writeTCPMessage(w io.Writer, msg []byte) error {
	if len(msg) > 0xffff {
		return errors.New("DNS message too long")
	}
	_, err := w.Write(append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...))
	return err
}

// forward sends one query upstream, learns from the answer and returns it.
func (f *DNSForwarder) forward(ctx context.Context, network string, query []byte) ([]byte, error) {
	var qh dnsmessage.Parser
	hdr, err := qh.Start(query)
	if err != nil || hdr.Response {
		return nil, fmt.Errorf("not a DNS query")
	}
	var conn net.Conn
	err = inNS(f.host.NetNS, func() error {
		var err error
		conn, err = net.Dial(network, f.upstream.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline := time.Now().Add(upstreamTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if network == "tcp" {
		err = writeTCPMessage(conn, query)
	} else {
		_, err = conn.Write(query)
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		var answer []byte
		if network == "tcp" {
			answer, err = readTCPMessage(conn)
		} else {
			var n int
			n, err = conn.Read(buf)
			answer = buf[:n]
		}
		if err != nil {
			return nil, err
		}
		var ap dnsmessage.Parser
		ah, err := ap.Start(answer)
		if err != nil || !ah.Response || ah.ID != hdr.ID {
			continue // not the answer to this query
		}
		if rec := f.policy(); rec != nil {
			if err := f.learn(ctx, rec, &ap); err != nil {
				// The guest gets no answer rather than one it cannot use.
				return nil, err
			}
		}
		return answer, nil
	}
}

// learn adds the addresses an answer gives for allowed names (and for the
// targets of CNAMEs from allowed names) to the sandbox's sets.
func (f *DNSForwarder) learn(ctx context.Context, rec *EgressRecord, p *dnsmessage.Parser) error {
	qs, err := p.AllQuestions()
	if err != nil || len(qs) == 0 {
		return nil
	}
	qname := strings.ToLower(qs[0].Name.String())
	if !rec.Policy.AllowsDomain(qname) {
		return nil
	}
	allowedNames := map[string]bool{qname: true}
	answers, err := p.AllAnswers()
	if err != nil {
		return nil
	}
	// CNAMEs come before what they point at; two passes follow chains in
	// any order.
	for range 2 {
		for _, a := range answers {
			if c, ok := a.Body.(*dnsmessage.CNAMEResource); ok && allowedNames[strings.ToLower(a.Header.Name.String())] {
				allowedNames[strings.ToLower(c.CNAME.String())] = true
			}
		}
	}
	var addrs []netip.Addr
	ttl := maxDNSTimeout
	for _, a := range answers {
		if !allowedNames[strings.ToLower(a.Header.Name.String())] {
			continue
		}
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			addrs = append(addrs, netip.AddrFrom4(b.A))
		case *dnsmessage.AAAAResource:
			addrs = append(addrs, netip.AddrFrom16(b.AAAA))
		default:
			continue
		}
		ttl = min(ttl, time.Duration(a.Header.TTL)*time.Second)
	}
	if len(addrs) == 0 {
		return nil
	}
	return f.host.AllowResolved(ctx, rec, strings.TrimSuffix(qname, "."), addrs, ttl)
}

// ResolvConfUpstream returns the first "nameserver" of a resolv.conf file
// (such as /etc/resolv.conf) at port 53, as the upstream of a
// DNSForwarder. The forwarder dials it from the host namespace, so a
// loopback resolver (systemd-resolved's 127.0.0.53) works.
func ResolvConfUpstream(path string) (netip.AddrPort, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("DNS upstream: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				continue // not an address: try the next line
			}
			return netip.AddrPortFrom(a, 53), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("DNS upstream: no nameserver line in %s: %w", path, ErrNotFound)
}
