package node

import (
	"bytes"
	"testing"
)

// FuzzConfig checks the YAML loader on arbitrary bytes: no panic, and anything it accepts
// passes validation (defaults included).
func FuzzConfig(f *testing.F) {
	f.Add([]byte("listen: [\"/ip4/0.0.0.0/udp/4001/quic-v1\"]\nlabels: {isp: a}\n"))
	f.Add([]byte("connmgr:\n  low: lots\n"))
	f.Add([]byte("bootstrap:\n  - /ip4/127.0.0.1/udp/1/quic-v1/p2p/12D3KooWAJQWCYjTG7MX3eCVqmXnqZGNjYSCmmuHmRpXQrXBp3jS\n"))
	f.Add([]byte("ping_interval: 5s\napi: {listen: off}\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := DefaultConfig()
		if err := cfg.decode(data); err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		// Accepted: it must be usable as-is.
		if _, err := parseBootstrap(cfg.Bootstrap); err != nil {
			t.Fatalf("validated config has bad bootstrap: %v", err)
		}
		if len(parseMultiaddrs(cfg.Listen)) != len(cfg.Listen) {
			t.Fatal("validated config has unparsable listen addresses")
		}
	})
}

// FuzzProvideRequest checks the management API's request decoder.
func FuzzProvideRequest(f *testing.F) {
	f.Add([]byte(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}`))
	f.Add([]byte(`{"cid":""}`))
	f.Add([]byte(`{"cid":"x"} {}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeProvideRequest(bytes.NewReader(data))
		if err == nil && req.CID == "" {
			t.Fatal("accepted a request without a CID")
		}
	})
}
