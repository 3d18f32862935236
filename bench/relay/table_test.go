package relay

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestRelayTable turns the output of the relay benchmarks into markdown
// tables (see bench/README.md). It runs only when TXM_RELAY_RESULTS names
// one or more files (separated by commas) of `go test -bench` output:
//
//	TXM_RELAY_RESULTS=/tmp/relay-bench.txt go test ./bench/relay -run TestRelayTable -v
//
// For every cell it prints the median msgs/s of the relay and of the
// baseline over the counts, and their ratio.
func TestRelayTable(t *testing.T) {
	files := os.Getenv("TXM_RELAY_RESULTS")
	if files == "" {
		t.Skip("set TXM_RELAY_RESULTS to benchmark output files to print the relay tables")
	}
	res := relayResults{}
	for _, f := range strings.Split(files, ",") {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		err = res.parse(fh)
		_ = fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	var sb strings.Builder
	res.write(&sb)
	t.Log("\n" + sb.String())
}

// relayResults holds msgs/s samples by implementation ("relay",
// "baseline") and cell name.
type relayResults map[string]map[string][]float64

var relayLine = regexp.MustCompile(`^Benchmark(Relay|RelayBaseline|RelayKeyed)/(\S+?)(-\d+)?\s+\d+\s.*?([\d.e+]+) msgs/s`)

func (r relayResults) parse(in io.Reader) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		m := relayLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return fmt.Errorf("%q: %w", sc.Text(), err)
		}
		impl, cell := "relay", m[2]
		switch {
		case m[1] == "RelayBaseline":
			impl = "baseline"
		case m[1] == "RelayKeyed":
			// impl=relay/store=... or impl=baseline/store=...
			name, rest, _ := strings.Cut(cell, "/")
			impl, cell = strings.TrimPrefix(name, "impl=")+"-keyed", rest
		}
		if r[impl] == nil {
			r[impl] = map[string][]float64{}
		}
		r[impl][cell] = append(r[impl][cell], v)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read benchmark output: %w", err)
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// write prints one table per store and latency: a row per worker count,
// a column per batch size, each cell "relay / baseline (ratio)".
func (r relayResults) write(w io.Writer) {
	lats := []string{"0", "100us", "1ms"}
	for _, suffix := range []string{"", "-keyed"} {
		relay, base := r["relay"+suffix], r["baseline"+suffix]
		if len(relay) == 0 {
			continue
		}
		for _, store := range relayStores {
			for _, lat := range lats {
				var rows []string
				for _, wk := range relayWorkers {
					row := fmt.Sprintf("| %d |", wk)
					any := false
					for _, batch := range relayBatches {
						cell := fmt.Sprintf("store=%s/lat=%s/workers=%d/batch=%d", store, lat, wk, batch)
						rv, bv := relay[cell], base[cell]
						if len(rv) == 0 || len(bv) == 0 {
							row += " – |"
							continue
						}
						any = true
						mr, mb := median(rv), median(bv)
						row += fmt.Sprintf(" %s / %s (%.2f) |", kilo(mr), kilo(mb), mr/mb)
					}
					if any {
						rows = append(rows, row)
					}
				}
				if len(rows) == 0 {
					continue
				}
				title := "relay"
				if suffix != "" {
					title = "relay with 1000 partition keys"
				}
				fmt.Fprintf(w, "\n%s, store=%s, publisher latency %s (msgs/s relay / baseline (ratio); median of %d)\n\n",
					title, store, lat, samples(relay))
				fmt.Fprint(w, "| workers |")
				for _, batch := range relayBatches {
					fmt.Fprintf(w, " batch %d |", batch)
				}
				fmt.Fprint(w, "\n|---:|")
				for range relayBatches {
					fmt.Fprint(w, "---:|")
				}
				fmt.Fprintln(w)
				for _, row := range rows {
					fmt.Fprintln(w, row)
				}
			}
		}
	}
}

// samples returns the smallest number of samples of any cell.
func samples(m map[string][]float64) int {
	n := -1
	for _, v := range m {
		if n < 0 || len(v) < n {
			n = len(v)
		}
	}
	return n
}

// kilo formats a rate in thousands with three significant digits:
// 12345 -> "12.3k", 1950 -> "1.95k".
func kilo(v float64) string {
	switch {
	case v >= 100_000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 10_000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fk", v/1000)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
