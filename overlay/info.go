package overlay

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
	"unique"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// InfoProtocol is the stream protocol a node answers with its Labels. Identify already tells
// addresses and protocols; this adds where the peer sits in the operator's network, which
// RTT alone cannot say (two peers 10 ms away may be on the same DSLAM or across an ISP border).
const InfoProtocol protocol.ID = "/nanodc/info/1.0.0"

// Limits on what a peer may send us; the info message comes from untrusted peers.
const (
	maxInfoBytes    = 4096
	maxLabelLen     = 64
	maxExtraLabels  = 16
	infoWireVersion = 1
)

// Labels place a node in the operator's network. ISP and AccessNode (the DSLAM or POP the
// gateway hangs off) drive locality; Extra carries free-form operator labels (region,
// hardware model, …) used by fleet selectors.
type Labels struct {
	ISP        string            `json:"isp,omitempty" yaml:"isp"`
	AccessNode string            `json:"access_node,omitempty" yaml:"access_node"`
	Extra      map[string]string `json:"extra,omitempty" yaml:"extra"`
}

// Matches reports whether l has every selector label (isp, access_node, or an extra
// label) with the selector's value; an empty selector matches everything.
func (l Labels) Matches(sel map[string]string) bool {
	for k, v := range sel {
		var got string
		switch k {
		case "isp":
			got = l.ISP
		case "access_node":
			got = l.AccessNode
		default:
			got = l.Extra[k]
		}
		if got != v {
			return false
		}
	}
	return true
}

// Validate reports the first label that is too long, not UTF-8, or too many.
func (l Labels) Validate() error {
	check := func(field, v string) error {
		if len(v) > maxLabelLen {
			return fmt.Errorf("%s: longer than %d bytes", field, maxLabelLen)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s: not valid UTF-8", field)
		}
		return nil
	}
	if err := check("isp", l.ISP); err != nil {
		return err
	}
	if err := check("access_node", l.AccessNode); err != nil {
		return err
	}
	if len(l.Extra) > maxExtraLabels {
		return fmt.Errorf("extra: more than %d labels", maxExtraLabels)
	}
	for k, v := range l.Extra {
		if k == "" {
			return errors.New("extra: empty label name")
		}
		if err := check("extra key "+fmt.Sprintf("%q", k), k); err != nil {
			return err
		}
		if err := check("extra."+k, v); err != nil {
			return err
		}
	}
	return nil
}

// Locality ranks how close b is to a by labels alone: 0 same access node, 1 same ISP,
// 2 elsewhere or unknown.
func Locality(a, b Labels) int {
	switch {
	case a.ISP != "" && a.ISP == b.ISP && a.AccessNode != "" && a.AccessNode == b.AccessNode:
		return 0
	case a.ISP != "" && a.ISP == b.ISP:
		return 1
	default:
		return 2
	}
}

// infoMessage is the wire form: a uvarint length, then this JSON object.
type infoMessage struct {
	V       int    `json:"v"`
	Version string `json:"version,omitempty"`
	Labels
}

func encodeInfo(w io.Writer, version string, l Labels) error {
	body, err := json.Marshal(infoMessage{V: infoWireVersion, Version: version, Labels: l})
	if err != nil {
		return err
	}
	if len(body) > maxInfoBytes {
		return fmt.Errorf("info message is %d bytes, limit %d", len(body), maxInfoBytes)
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(body)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}

// decodeInfo reads one info message from an untrusted peer.
func decodeInfo(r io.Reader) (version string, l Labels, err error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxInfoBytes+binary.MaxVarintLen64), 512)
	size, err := binary.ReadUvarint(br)
	if err != nil {
		return "", Labels{}, fmt.Errorf("info: reading length: %w", err)
	}
	if size > maxInfoBytes {
		return "", Labels{}, fmt.Errorf("info: message of %d bytes exceeds limit %d", size, maxInfoBytes)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(br, body); err != nil {
		return "", Labels{}, fmt.Errorf("info: reading body: %w", err)
	}
	var m infoMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return "", Labels{}, fmt.Errorf("info: decoding body: %w", err)
	}
	if m.V != infoWireVersion {
		return "", Labels{}, fmt.Errorf("info: unsupported version %d", m.V)
	}
	if len(m.Version) > maxLabelLen || !utf8.ValidString(m.Version) {
		return "", Labels{}, errors.New("info: version string too long or not UTF-8")
	}
	if err := m.Labels.Validate(); err != nil {
		return "", Labels{}, fmt.Errorf("info: %w", err)
	}
	return unique.Make(m.Version).Value(), m.Labels.interned(), nil
}

// A node keeps the labels of every peer it has met for an hour (proximity), and a fleet has
// a handful of ISPs, a few hundred access nodes and one label set per link profile: shared,
// one copy of each serves every peer. At 200 emulated gateways the decoded copies were
// 25 KB per gateway (14 600 maps).
var (
	extrasMu sync.Mutex
	extras   = map[string]map[string]string{} // canonical form → the one shared map
)

// maxInternedExtras bounds what peers sending ever new labels can make a node keep for good.
const maxInternedExtras = 4096

// interned returns l with its strings and Extra map shared with every other peer's equal
// labels. The shared map is read-only, as Labels are everywhere.
func (l Labels) interned() Labels {
	l.ISP = unique.Make(l.ISP).Value()
	l.AccessNode = unique.Make(l.AccessNode).Value()
	if len(l.Extra) == 0 {
		l.Extra = nil
		return l
	}
	keys := make([]string, 0, len(l.Extra))
	for k := range l.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(l.Extra[k])
		b.WriteByte(0)
	}
	extrasMu.Lock()
	defer extrasMu.Unlock()
	if m, ok := extras[b.String()]; ok {
		l.Extra = m
	} else if len(extras) < maxInternedExtras {
		extras[b.String()] = l.Extra
	}
	return l
}
