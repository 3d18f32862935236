// Command drainrun measures the relay's drain of a PostgreSQL outbox into
// JetStream against the strong hand-written loop (internal/scenario.Loop)
// in one run: every drain in a fresh process, the implementations
// interleaved round by round, and the median and spread of each printed
// with the ratio to the loop's. CPU per message is read for this process
// (getrusage) and for the local postgres and nats-server processes
// (/proc). bench/README.md has the figures and the command.
//
//	TXM_POSTGRES_URL=... TXM_NATS_URL=... go run ./bench/drainrun -rounds 5 -batch 100,500,1000
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/transmanager/transmanager/internal/scenario"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "drainrun:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("drainrun", flag.ContinueOnError)
	rounds := fs.Int("rounds", 5, "rounds; each drains once per implementation and batch size")
	batches := fs.String("batch", "100,500,1000", "batch sizes, comma-separated")
	impls := fs.String("impls", strings.Join(scenario.Impls, ","), "implementations, comma-separated")
	messages := fs.Int("messages", 100_000, "messages per drain")
	payload := fs.Int("payload", 256, "payload bytes")
	raw := fs.String("raw", "", "append every drain's result to this file as a JSON line")
	one := fs.Bool("one", false, "run a single drain (-impls names one, -batch one) and print its result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "with -one: write the drain's CPU profile to this file")
	memProfile := fs.String("memprofile", "", "with -one: write the drain's allocation profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pgURL, natsURL := os.Getenv("TXM_POSTGRES_URL"), os.Getenv("TXM_NATS_URL")
	if pgURL == "" || natsURL == "" {
		return fmt.Errorf("set TXM_POSTGRES_URL and TXM_NATS_URL")
	}
	bs, err := ints(*batches)
	if err != nil {
		return fmt.Errorf("-batch: %w", err)
	}
	is := strings.Split(*impls, ",")
	if *one {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var timed func() func()
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			timed = func() func() {
				if err := pprof.StartCPUProfile(f); err != nil {
					fmt.Fprintln(os.Stderr, "drainrun: cpu profile:", err)
				}
				return pprof.StopCPUProfile
			}
		}
		if *memProfile != "" {
			f, err := os.Create(*memProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			timed = func() func() {
				runtime.MemProfileRate = 4096
				return func() {
					runtime.MemProfileRate = 0
					if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
						fmt.Fprintln(os.Stderr, "drainrun: memory profile:", err)
					}
				}
			}
		}
		r, err := scenario.Drain(ctx, scenario.DrainSpec{PostgresURL: pgURL, NATSURL: natsURL,
			Impl: is[0], Batch: bs[0], Messages: *messages, PayloadSize: *payload, Timed: timed})
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(r)
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	var rawOut io.Writer = io.Discard
	if *raw != "" {
		f, err := os.OpenFile(*raw, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		rawOut = f
	}
	results := map[string][]scenario.DrainResult{} // by impl/batch
	for r := range *rounds {
		for _, b := range bs {
			// Rotate the order every round, so no implementation always
			// runs first or right after another.
			order := append(slices.Clone(is[r%len(is):]), is[:r%len(is)]...)
			for _, impl := range order {
				cmd := exec.Command(self, "-one", "-impls", impl, "-batch", strconv.Itoa(b),
					"-messages", strconv.Itoa(*messages), "-payload", strconv.Itoa(*payload))
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					return fmt.Errorf("round %d, %s at batch %d: %w", r+1, impl, b, err)
				}
				var res scenario.DrainResult
				if err := json.Unmarshal(out, &res); err != nil {
					return fmt.Errorf("round %d, %s at batch %d: %w (%q)", r+1, impl, b, err, out)
				}
				fmt.Fprintf(os.Stderr, "round %d  batch %-5d %-14s %8.0f msgs/s  cpu/msg %5.1f µs (relay %4.1f, postgres %4.1f, nats %4.1f)\n",
					r+1, b, impl, res.MsgsPerSec, res.TotalUS, res.RelayUS, res.PostgresUS, res.NATSUS)
				_, _ = rawOut.Write(out)
				key := impl + "/" + strconv.Itoa(b)
				results[key] = append(results[key], res)
			}
		}
	}
	summarize(stdout, is, bs, results)
	return nil
}

// summarize prints, per batch size and implementation, the median and
// range of throughput and CPU per message, and the ratio of the medians to
// the loop's.
func summarize(w io.Writer, impls []string, batches []int, results map[string][]scenario.DrainResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\timpl\tmsgs/s median\t[min–max]\tvs loop\tcpu µs/msg median\t[min–max]\tvs loop\trelay\tpostgres\tnats\trounds\t")
	for _, b := range batches {
		loop := results[scenario.ImplLoop+"/"+strconv.Itoa(b)]
		loopRate, loopCPU := median(loop, rate), median(loop, total)
		for _, impl := range impls {
			rs := results[impl+"/"+strconv.Itoa(b)]
			if len(rs) == 0 {
				continue
			}
			lo, hi := spread(rs, rate)
			clo, chi := spread(rs, total)
			ratio := func(v, base float64) string {
				if base == 0 {
					return "-"
				}
				return fmt.Sprintf("%.2f", v/base)
			}
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t[%.0f–%.0f]\t%s\t%.1f\t[%.1f–%.1f]\t%s\t%.1f\t%.1f\t%.1f\t%d\t\n",
				b, impl, median(rs, rate), lo, hi, ratio(median(rs, rate), loopRate),
				median(rs, total), clo, chi, ratio(median(rs, total), loopCPU),
				median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS }),
				median(rs, func(r scenario.DrainResult) float64 { return r.PostgresUS }),
				median(rs, func(r scenario.DrainResult) float64 { return r.NATSUS }), len(rs))
		}
	}
	tw.Flush()
}

func rate(r scenario.DrainResult) float64  { return r.MsgsPerSec }
func total(r scenario.DrainResult) float64 { return r.TotalUS }

func median(rs []scenario.DrainResult, f func(scenario.DrainResult) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	vs := make([]float64, len(rs))
	for i, r := range rs {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

func spread(rs []scenario.DrainResult, f func(scenario.DrainResult) float64) (lo, hi float64) {
	for i, r := range rs {
		v := f(r)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}

func ints(s string) ([]int, error) {
	var out []int
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(s, ",", "\n")))
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers", s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty")
	}
	return out, nil
}
