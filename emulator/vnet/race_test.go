//go:build race

package vnet

// raceEnabled reports whether the race detector is on; it slows everything
// down so much that timing fidelity cannot be asserted.
const raceEnabled = true
