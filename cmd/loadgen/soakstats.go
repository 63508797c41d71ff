package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK), 100 on Linux).
const clockTicks = 100

// processCPU is the CPU time process pid has used so far, user and system.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read the CPU time of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: count the fields
	// after it. utime and stime are fields 14 and 15, so 12 and 13 after.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("process %d: short stat %q", pid, b)
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("process %d: stat field %q: %w", pid, f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuSampler records a process's CPU time at every soakWindow boundary:
// the CPU a request costs does not depend on what else the machine runs,
// where throughput does.
type cpuSampler struct {
	at   []time.Duration // at[i]: CPU used by the start of window i
	done chan struct{}
}

// sampleCPU samples pid's CPU time now and after each of windows
// soakWindows, until ctx ends.
func sampleCPU(ctx context.Context, pid, windows int) *cpuSampler {
	s := &cpuSampler{done: make(chan struct{})}
	record := func() {
		if cpu, err := processCPU(pid); err == nil {
			s.at = append(s.at, cpu)
		}
	}
	record()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(soakWindow)
		defer tick.Stop()
		for len(s.at) <= windows {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				record()
			}
		}
	}()
	return s
}

// perOp is the CPU time per operation over windows [from, to), or "" when
// a sample is missing.
func (s *cpuSampler) perOp(from, to, ops int) string {
	<-s.done
	if to >= len(s.at) || ops == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f ms CPU/req", float64((s.at[to]-s.at[from]).Microseconds())/1000/float64(ops))
}

// redisHoldings says what the embedded Redis holds for the service's
// outbound streams: their entries and the published ids kept to drop
// redeliveries.
func redisHoldings(ctx context.Context, rdb *goredis.Client, prefix string, channels ...string) (entries, ids int64, err error) {
	for _, ch := range channels {
		n, err := rdb.XLen(ctx, prefix+ch).Result()
		if err != nil && err != goredis.Nil {
			return 0, 0, fmt.Errorf("XLEN %s: %w", prefix+ch, err)
		}
		entries += n
		iter := rdb.Scan(ctx, 0, "{"+prefix+ch+"}:published:*", 1000).Iterator()
		for iter.Next(ctx) {
			n, err := rdb.HLen(ctx, iter.Val()).Result()
			if err != nil {
				return 0, 0, fmt.Errorf("HLEN %s: %w", iter.Val(), err)
			}
			ids += n
		}
		if err := iter.Err(); err != nil {
			return 0, 0, fmt.Errorf("scan the published ids of %s: %w", prefix+ch, err)
		}
	}
	return entries, ids, nil
}
