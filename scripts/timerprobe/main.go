// Command timerprobe measures how late this machine wakes a sleeper, with Go timers, a
// timerfd read and nanosleep, alone or beside a synthetic load. It answers whether the
// emulator's packet scheduler would gain validity from a sleep primitive finer than Go's
// netpoller, which rounds its waits to whole milliseconds (docs/decisions.md, session 19).
//
//	go run ./scripts/timerprobe [idle|bursts|fleet]
package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

const samples = 3000

func main() {
	load := "idle"
	if len(os.Args) > 1 {
		load = os.Args[1]
	}
	switch load {
	case "idle":
	case "bursts": // one goroutine computing in 30 ms bursts, half the time
		go func() {
			for {
				burn(30 * time.Millisecond)
				time.Sleep(30 * time.Millisecond)
			}
		}()
	case "fleet": // 250 goroutines waking every 10-50 ms for 20-120 µs: ~0.6 cores
		for i := range 250 {
			go func() {
				r := rand.New(rand.NewPCG(uint64(i), 1))
				for {
					time.Sleep(time.Duration(10+r.IntN(40)) * time.Millisecond)
					burn(time.Duration(20+r.IntN(100)) * time.Microsecond)
				}
			}()
		}
	default:
		fmt.Fprintf(os.Stderr, "timerprobe: unknown load %q (want idle, bursts or fleet)\n", load)
		os.Exit(2)
	}
	time.Sleep(200 * time.Millisecond)
	waits := make([]time.Duration, samples)
	for i := range waits {
		waits[i] = time.Duration(200+rand.IntN(4800)) * time.Microsecond
	}
	fmt.Printf("load %s, %d waits of 0.2-5 ms, lateness:\n", load, samples)
	fmt.Println("  go timer ", summary(goTimer(waits)))
	fmt.Println("  timerfd  ", summary(timerfd(waits)))
	fmt.Println("  nanosleep", summary(nanosleep(waits)))
}

func burn(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

func goTimer(waits []time.Duration) []time.Duration {
	late := make([]time.Duration, 0, len(waits))
	t := time.NewTimer(time.Hour)
	for _, w := range waits {
		start := time.Now()
		t.Reset(w)
		<-t.C
		late = append(late, time.Since(start)-w)
	}
	return late
}

// timerfd sleeps on a timerfd from a thread of its own, as a scheduler goroutine would.
func timerfd(waits []time.Duration) []time.Duration {
	out := make(chan []time.Duration)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		if err != nil {
			fmt.Fprintln(os.Stderr, "timerprobe: timerfd:", err)
			os.Exit(1)
		}
		defer unix.Close(fd)
		late := make([]time.Duration, 0, len(waits))
		buf := make([]byte, 8)
		for _, w := range waits {
			start := time.Now()
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(w))}
			if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
				fmt.Fprintln(os.Stderr, "timerprobe: timerfd:", err)
				os.Exit(1)
			}
			if _, err := unix.Read(fd, buf); err != nil {
				fmt.Fprintln(os.Stderr, "timerprobe: timerfd:", err)
				os.Exit(1)
			}
			late = append(late, time.Since(start)-w)
		}
		out <- late
	}()
	return <-out
}

func nanosleep(waits []time.Duration) []time.Duration {
	late := make([]time.Duration, 0, len(waits))
	for _, w := range waits {
		start := time.Now()
		ts := unix.NsecToTimespec(int64(w))
		_ = unix.Nanosleep(&ts, nil) // an interrupted sleep shows up as an early sample
		late = append(late, time.Since(start)-w)
	}
	return late
}

func summary(late []time.Duration) string {
	slices.Sort(late)
	q := func(p float64) time.Duration { return late[int(p*float64(len(late)-1))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v", q(.5), q(.9), q(.99), late[len(late)-1].Round(time.Microsecond))
}
