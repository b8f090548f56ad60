package emulator

import (
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// dialLog writes every failed dial of the fleet to failed-dials.csv in the run's output
// folder: when it happened, who dialled, whom (the gateway behind the address), the error
// and its cause. The summary counts failed dials by kind; this says which ones, to find
// the last few of a large fleet.
type dialLog struct {
	start time.Time
	byIP  map[string]string
	mu    sync.Mutex
	f     *os.File
	w     *csv.Writer
}

func newDialLog(path string, gateways []*Gateway) (*dialLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("failed-dial log: %w", err)
	}
	l := &dialLog{start: time.Now(), byIP: map[string]string{}, f: f, w: csv.NewWriter(f)}
	for _, g := range gateways {
		l.byIP[g.IP.String()] = g.Name
	}
	_ = l.w.Write([]string{"t_s", "from", "to", "addr", "error", "cause"})
	return l, nil
}

func (l *dialLog) record(from string, addr ma.Multiaddr, err, cause error) {
	to := ""
	if ip, e := addr.ValueForProtocol(ma.P_IP4); e == nil {
		to = l.byIP[net.ParseIP(ip).String()]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.w.Write([]string{fmt.Sprintf("%.3f", time.Since(l.start).Seconds()), from, to, addr.String(), errText(err), errText(cause)})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func (l *dialLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	return errors.Join(l.w.Error(), l.f.Close())
}
