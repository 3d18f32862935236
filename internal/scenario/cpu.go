package scenario

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"syscall"
	"time"
)

// CPU is the processor time used so far by this process and by the local
// database and broker servers, read from getrusage and /proc.
type CPU struct {
	Self     time.Duration // this process, user + system
	Postgres time.Duration // every process named postgres, with its reaped children
	MySQL    time.Duration // every process named mariadbd or mysqld
	NATS     time.Duration // every process named nats-server
	// Allocs is how many heap objects this process has allocated.
	Allocs uint64
}

// Sub returns the CPU used between o and c.
func (c CPU) Sub(o CPU) CPU {
	return CPU{Self: c.Self - o.Self, Postgres: c.Postgres - o.Postgres, MySQL: c.MySQL - o.MySQL,
		NATS: c.NATS - o.NATS, Allocs: c.Allocs - o.Allocs}
}

// Total is the time of them all together.
func (c CPU) Total() time.Duration { return c.Self + c.Postgres + c.MySQL + c.NATS }

// heapAllocs returns the heap objects allocated so far, read without
// stopping the world.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// ReadCPU reads the CPU used so far. The servers' times come from
// /proc/PID/stat: utime + stime + cutime + cstime of every process whose
// name is postgres (so the postmaster counts the backends it has reaped),
// mariadbd, mysqld or nats-server. Only servers on this machine are seen; their time is 0 when
// none runs here.
func ReadCPU() (CPU, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return CPU{}, fmt.Errorf("getrusage: %w", err)
	}
	c := CPU{Self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), Allocs: heapAllocs()}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return CPU{}, err
	}
	for _, path := range stats {
		name, ticks, ok := procTicks(path)
		if !ok {
			continue // gone meanwhile, or not readable
		}
		switch name {
		case "postgres":
			c.Postgres += time.Duration(ticks) * clockTick
		case "mariadbd", "mysqld":
			c.MySQL += time.Duration(ticks) * clockTick
		case "nats-server":
			c.NATS += time.Duration(ticks) * clockTick
		}
	}
	return c, nil
}

// procTicks returns the name and the utime + stime + cutime + cstime of the
// process whose /proc/PID/stat is at path.
func procTicks(path string) (string, int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses, so
	// it ends at the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	name := string(b[open+1 : end])
	fields := bytes.Fields(b[end+1:])
	// fields[0] is the state (field 3); utime..cstime are fields 14..17.
	if len(fields) < 15 {
		return "", 0, false
	}
	var ticks int64
	for _, f := range fields[11:15] {
		v, err := strconv.ParseInt(string(f), 10, 64)
		if err != nil {
			return "", 0, false
		}
		ticks += v
	}
	return name, ticks, true
}
