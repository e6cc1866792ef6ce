package network

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/kindling-vm/kindling/vmm"
)

// Rate-limiter shaping: a bucket refills every refillPeriod and holds one
// period's worth, but never less than minBandwidthBucket bytes, so that
// the largest frame a virtio-net device hands over (64 KiB with
// segmentation offload) always fits.
const (
	refillPeriod       = 100 * time.Millisecond
	minBandwidthBucket = 64 << 10
	minOpsBucket       = 1
)

// rateUnits maps a suffix to how many bytes (bandwidth) or packets (ops)
// per second one unit is. Bit rates are decimal, as tc and ISPs use them.
var rateUnits = []struct {
	suffix string
	bytes  float64 // per second, for bandwidth units
	ops    float64 // per second, for packet units
}{
	// Longest suffixes first, so "kbit" is not read as "bit".
	{"kbit", 1e3 / 8, 0}, {"Kbit", 1e3 / 8, 0}, {"mbit", 1e6 / 8, 0}, {"Mbit", 1e6 / 8, 0},
	{"gbit", 1e9 / 8, 0}, {"Gbit", 1e9 / 8, 0}, {"bit", 1.0 / 8, 0},
	{"KiB", 1 << 10, 0}, {"MiB", 1 << 20, 0}, {"GiB", 1 << 30, 0},
	{"kB", 1e3, 0}, {"KB", 1e3, 0}, {"MB", 1e6, 0}, {"GB", 1e9, 0}, {"B", 1, 0},
	{"kpps", 0, 1e3}, {"Kpps", 0, 1e3}, {"Mpps", 0, 1e6}, {"pps", 0, 1},
}

// ParseRate parses a network rate limit such as "100Mbit", "12.5MB",
// "10kpps" or "100Mbit,10kpps" (at most one bandwidth and one packet rate,
// comma-separated; "/s" after a unit is allowed) into Firecracker's
// token-bucket rate limiter, for a NetworkInterface's RxRateLimiter and/or
// TxRateLimiter. Units: bit, kbit, Mbit, Gbit (decimal bits/s); B, KB, MB,
// GB (decimal bytes/s); KiB, MiB, GiB; pps, kpps, Mpps. Errors are
// *InvalidError.
func ParseRate(s string) (*vmm.RateLimiter, error) {
	if strings.TrimSpace(s) == "" {
		return nil, invalid("rate", s, `empty (want a rate such as "100Mbit" or "10kpps")`)
	}
	rl := &vmm.RateLimiter{}
	for part := range strings.SplitSeq(s, ",") {
		p := strings.TrimSuffix(strings.TrimSpace(part), "/s")
		bytes, ops, err := parseOneRate(p)
		if err != nil {
			return nil, invalid("rate", s, err.Error())
		}
		switch {
		case bytes > 0 && rl.Bandwidth != nil, ops > 0 && rl.Ops != nil:
			return nil, invalid("rate", s, "gives the same kind of limit twice (want at most one bandwidth and one packet rate)")
		case bytes > 0:
			rl.Bandwidth = bucket(bytes, minBandwidthBucket)
		default:
			rl.Ops = bucket(ops, minOpsBucket)
		}
	}
	return rl, nil
}

type rateError string

func (e rateError) Error() string { return string(e) }

// parseOneRate reads NUMBER UNIT into bytes or packets per second.
func parseOneRate(p string) (bytes, ops float64, err error) {
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(p, u.suffix)
		if !ok {
			continue
		}
		v, perr := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if perr != nil || math.IsNaN(v) || math.IsInf(v, 0) || strings.TrimSpace(num) == "" {
			return 0, 0, rateError("not a number before the unit " + u.suffix)
		}
		if v <= 0 {
			return 0, 0, rateError("must be more than zero")
		}
		bytes, ops = v*u.bytes, v*u.ops
		if bytes > 0 && bytes < 1 || ops > 0 && ops < 1 {
			return 0, 0, rateError("below one byte or packet per second")
		}
		if bytes > 1e13 || ops > 1e12 {
			return 0, 0, rateError("too large")
		}
		return bytes, ops, nil
	}
	return 0, 0, rateError("no unit (want bit, kbit, Mbit, Gbit, B, KB, MB, GB, KiB, MiB, GiB, pps, kpps or Mpps)")
}

// bucket shapes a rate (units per second) into a token bucket that refills
// every refillPeriod, lengthening the period when one period's worth would
// be less than minSize.
func bucket(perSecond float64, minSize int64) *vmm.TokenBucket {
	refill := refillPeriod
	size := int64(math.Floor(perSecond * refill.Seconds()))
	if size < minSize {
		size = minSize
		ms := math.Ceil(float64(minSize) / perSecond * 1000)
		refill = time.Duration(ms) * time.Millisecond
		// Keep the rate exact at the rounded period.
		size = int64(math.Round(perSecond * refill.Seconds()))
	}
	return &vmm.TokenBucket{Size: size, RefillTime: refill}
}
