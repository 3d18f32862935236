package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// readBenchReport reads a report that bench -json wrote.
func readBenchReport(path string) (*benchReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: -compare: %w", err)
	}
	var r benchReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: -compare %s: not the output of bench -json: %w", path, err)
	}
	if len(r.Rows) == 0 {
		return nil, fmt.Errorf("bench: -compare %s: no rows, not the output of bench -json", path)
	}
	return &r, nil
}

// rangesOverlap reports whether the [min–max] ranges of two rows overlap,
// in which case the change of their medians is not a clear one.
func rangesOverlap(a, b benchRow) bool {
	return a.MinMsgsPerSec <= b.MaxMsgsPerSec && b.MinMsgsPerSec <= a.MaxMsgsPerSec
}

// p99Change returns the change of the median commit → handled p99 from o
// to n, benchstat-style: "~" when their [min–max] ranges overlap,
// otherwise "lower" or "higher"; "" when either has no latency runs.
func p99Change(o, n benchRow) (old, new, change string) {
	if o.Handled == nil || n.Handled == nil {
		return "-", "-", "-"
	}
	verdict := "~"
	switch {
	case o.MinHandledP99 <= n.MaxHandledP99 && n.MinHandledP99 <= o.MaxHandledP99:
	case n.Handled.P99 < o.Handled.P99:
		verdict = "lower"
	default:
		verdict = "higher"
	}
	change = "n/a " + verdict
	if o.Handled.P99 > 0 {
		change = fmt.Sprintf("%+.1f%% %s", 100*(n.Handled.P99-o.Handled.P99)/o.Handled.P99, verdict)
	}
	f := func(r benchRow) string {
		return fmt.Sprintf("%.1f [%.1f–%.1f]", r.Handled.P99, r.MinHandledP99, r.MaxHandledP99)
	}
	return f(o), f(n), change
}

// writeBenchCompare prints, benchstat-style, the change of the median
// throughput of every point in both old (read from oldPath) and new: "~"
// when the points' [min–max] ranges overlap, otherwise "faster" or
// "slower"; and the same of the commit → handled p99 where both have
// latency runs. Points in only one of the two are listed after.
func writeBenchCompare(w io.Writer, oldPath string, old, new *benchReport) error {
	fmt.Fprintf(w, "compared with %s: %d messages of %d B, medians of %d repetitions, %s, %s\n",
		oldPath, old.Messages, old.PayloadSize, old.Count, old.Store, old.Broker)
	for _, d := range []struct{ what, old, new string }{
		{"store", old.Store, new.Store},
		{"broker", old.Broker, new.Broker},
		{"messages per drain", fmt.Sprint(old.Messages), fmt.Sprint(new.Messages)},
		{"payload bytes", fmt.Sprint(old.PayloadSize), fmt.Sprint(new.PayloadSize)},
		{"latency rate", fmt.Sprint(old.Rate), fmt.Sprint(new.Rate)},
		{"Go", old.Machine.GoVersion, new.Machine.GoVersion},
		{"cores", fmt.Sprint(old.Machine.Cores), fmt.Sprint(new.Machine.Cores)},
		{"PostgreSQL", old.Machine.Postgres, new.Machine.Postgres},
		{"MySQL", old.Machine.MySQL, new.Machine.MySQL},
		{"nats-server", old.Machine.NATS, new.Machine.NATS},
	} {
		if d.old != d.new {
			fmt.Fprintf(w, "note: %s differs: old %q, new %q\n", d.what, d.old, d.new)
		}
	}
	fmt.Fprintln(w)

	olds := map[benchPoint]benchRow{}
	for _, r := range old.Rows {
		olds[r.benchPoint] = r
	}
	news := map[benchPoint]bool{}
	var onlyNew, onlyOld []benchPoint
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "point\told msgs/s\t[min–max]\tnew msgs/s\t[min–max]\tchange\told p99 ms\tnew p99 ms\tchange")
	for _, n := range new.Rows {
		news[n.benchPoint] = true
		o, ok := olds[n.benchPoint]
		if !ok {
			onlyNew = append(onlyNew, n.benchPoint)
			continue
		}
		change := "n/a"
		if o.MsgsPerSec > 0 {
			change = fmt.Sprintf("%+.1f%%", 100*(n.MsgsPerSec-o.MsgsPerSec)/o.MsgsPerSec)
		}
		verdict := "~"
		switch {
		case rangesOverlap(o, n):
		case n.MsgsPerSec > o.MsgsPerSec:
			verdict = "faster"
		default:
			verdict = "slower"
		}
		oldP99, newP99, p99 := p99Change(o, n)
		fmt.Fprintf(tw, "%s\t%s\t[%s–%s]\t%s\t[%s–%s]\t%s %s\t%s\t%s\t%s\n", n.benchPoint,
			thousands(o.MsgsPerSec), thousands(o.MinMsgsPerSec), thousands(o.MaxMsgsPerSec),
			thousands(n.MsgsPerSec), thousands(n.MinMsgsPerSec), thousands(n.MaxMsgsPerSec), change, verdict,
			oldP99, newP99, p99)
	}
	for _, o := range old.Rows {
		if !news[o.benchPoint] {
			onlyOld = append(onlyOld, o.benchPoint)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "~: the [min–max] ranges overlap, no clear change")
	for _, p := range onlyOld {
		fmt.Fprintf(w, "only in old: %s\n", p)
	}
	for _, p := range onlyNew {
		fmt.Fprintf(w, "only in new: %s\n", p)
	}
	return nil
}
