package wasm

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// pageSize is the WebAssembly page: linear memory grows in these steps.
const pageSize = 64 << 10

// linearMemory backs one app's linear memory. wazero's memory limit is a property of the whole
// runtime (applied when a module is decoded), but each slice sets its own cap, so the cap is
// enforced here instead: Reallocate refuses to grow past it, which makes memory.grow return -1
// in the guest exactly as a declared maximum would.
type linearMemory struct {
	limit uint64 // bytes, a whole number of pages
	buf   []byte
	size  atomic.Int64 // len(buf), readable while a guest call runs
}

var _ experimental.LinearMemory = (*linearMemory)(nil)

// allocator hands wazero this memory for the app's single linear memory.
func (m *linearMemory) allocator() experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(func(capBytes, _ uint64) experimental.LinearMemory {
		m.buf = make([]byte, 0, min(capBytes, m.limit))
		return m
	})
}

// Reallocate implements experimental.LinearMemory.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.limit {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		// Bytes past the old length were zeroed by make and never reachable by the guest.
		m.buf = m.buf[:size]
	} else {
		// Double to keep growth amortised, but never reserve past the cap.
		nb := make([]byte, size, max(size, min(2*uint64(cap(m.buf)), m.limit)))
		copy(nb, m.buf)
		m.buf = nb
	}
	m.size.Store(int64(size))
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *linearMemory) Free() {
	m.buf = nil
	m.size.Store(0)
}
