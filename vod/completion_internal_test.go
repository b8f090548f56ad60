package vod

import (
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// TestRecordedOnly: an unrecorded piece reads as known and missing (so anacrolix neither
// hashes it on open nor leaves it unrequested), recorded ones read as recorded, and the bolt
// store's records survive reopening through the wrapper.
func TestRecordedOnly(t *testing.T) {
	dir := t.TempDir()
	bolt, err := storage.NewBoltPieceCompletion(dir)
	if err != nil {
		t.Fatal(err)
	}
	pc := recordedOnly{bolt}
	var ih metainfo.Hash
	ih[0] = 1
	key := func(i int) metainfo.PieceKey { return metainfo.PieceKey{InfoHash: ih, Index: i} }
	if got, err := pc.Get(key(0)); err != nil || got != (storage.Completion{Ok: true, Complete: false}) {
		t.Fatalf("unrecorded piece: %+v, %v; want known and incomplete", got, err)
	}
	if err := pc.Set(key(1), true); err != nil {
		t.Fatal(err)
	}
	if err := pc.Set(key(2), false); err != nil {
		t.Fatal(err)
	}
	if !pc.Persistent() {
		t.Error("a bolt store reads as not persistent through the wrapper: anacrolix would record pieces before their data is flushed")
	}
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	bolt, err = storage.NewBoltPieceCompletion(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	pc = recordedOnly{bolt}
	for i, want := range []storage.Completion{{Ok: true}, {Ok: true, Complete: true}, {Ok: true}, {Ok: true}} {
		if got, err := pc.Get(key(i)); err != nil || got != want {
			t.Errorf("piece %d after reopening: %+v, %v; want %+v", i, got, err, want)
		}
	}
	if raw, _ := bolt.Get(key(0)); raw.Ok {
		t.Errorf("reading an unrecorded piece wrote a record: %+v", raw)
	}
}
