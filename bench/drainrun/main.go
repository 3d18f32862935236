// Command drainrun measures the relay's drain of a PostgreSQL (or, with
// -db mysql, a MySQL/MariaDB) outbox into JetStream against the strong
// hand-written loop (internal/scenario.Loop, scenario.MySQLLoop) in one run: every drain in a fresh process, the implementations
// interleaved round by round, and the median and spread of each printed
// with the ratio to the loop's. CPU per message is read for this process
// (getrusage) and for the local database (postgres, mariadbd or mysqld)
// and nats-server processes (/proc). bench/README.md has the figures and
// the command.
//
//	TXM_POSTGRES_URL=... TXM_NATS_URL=... go run ./bench/drainrun -rounds 5 -batch 100,500,1000
//	TXM_MYSQL_URL=... TXM_NATS_URL=... go run ./bench/drainrun -db mysql -rounds 5 -batch 100,500
//
// With -db mysql, -impls also takes loop-outbox: the loop on the library's
// outbox table instead of its own, which shows what the table costs.
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
	impls := fs.String("impls", strings.Join(scenario.Impls, ","), "implementations, comma-separated (with -db mysql also "+scenario.ImplLoopOutbox+")")
	messages := fs.Int("messages", 100_000, "messages per drain")
	payload := fs.Int("payload", 256, "payload bytes")
	keys := fs.Int("keys", 0, "partition keys of the relay's messages, round robin (0: none; the loop keeps no key order and ignores them)")
	raw := fs.String("raw", "", "append every drain's result to this file as a JSON line")
	latency := fs.String("latency", "", "measure commit → PubAck latency at these rates (messages/s, comma-separated) instead of drains")
	seconds := fs.Duration("duration", 10*time.Second, "with -latency: how long each run commits, after a 1s warm-up")
	notifyInterval := fs.Duration("notify-interval", 0, "with -latency: the library producers' sqlstore.Config.NotifyInterval (0: its default; negative: a NOTIFY with every save)")
	one := fs.Bool("one", false, "run a single drain (-impls names one, -batch one) and print its result as JSON")
	cpuProfile := fs.String("cpuprofile", "", "with -one: write the drain's CPU profile to this file")
	memProfile := fs.String("memprofile", "", "with -one: write the drain's allocation profile to this file")
	db := fs.String("db", "postgres", "the outbox's database: postgres (TXM_POSTGRES_URL) or mysql (TXM_MYSQL_URL; drains only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pgURL, natsURL, mysqlURL := os.Getenv("TXM_POSTGRES_URL"), os.Getenv("TXM_NATS_URL"), ""
	switch *db {
	case "postgres":
		if pgURL == "" || natsURL == "" {
			return fmt.Errorf("set TXM_POSTGRES_URL and TXM_NATS_URL")
		}
	case "mysql":
		if mysqlURL = os.Getenv("TXM_MYSQL_URL"); mysqlURL == "" || natsURL == "" {
			return fmt.Errorf("set TXM_MYSQL_URL and TXM_NATS_URL")
		}
		if *latency != "" {
			return fmt.Errorf("-latency runs on PostgreSQL only")
		}
	default:
		return fmt.Errorf("-db: want postgres or mysql, not %q", *db)
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
					// Written while the rate is still the one it was
					// sampled at: the writer scales each sample by it,
					// and at 0 a sample of a small object would count
					// at its own size instead of the 4 KiB it stands
					// for.
					if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
						fmt.Fprintln(os.Stderr, "drainrun: memory profile:", err)
					}
					runtime.MemProfileRate = 0
				}
			}
		}
		if *latency != "" {
			rates, err := ints(*latency)
			if err != nil {
				return fmt.Errorf("-latency: %w", err)
			}
			r, err := scenario.Latency(ctx, scenario.LatencySpec{PostgresURL: pgURL, NATSURL: natsURL,
				Impl: is[0], Rate: rates[0], Duration: *seconds, Warmup: time.Second, Batch: bs[0], PayloadSize: *payload, NotifyInterval: *notifyInterval})
			if err != nil {
				return err
			}
			return json.NewEncoder(stdout).Encode(r)
		}
		r, err := scenario.Drain(ctx, scenario.DrainSpec{PostgresURL: pgURL, NATSURL: natsURL, MySQLURL: mysqlURL,
			Impl: is[0], Batch: bs[0], Messages: *messages, PayloadSize: *payload, Keys: *keys, Timed: timed})
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
	if *latency != "" {
		rates, err := ints(*latency)
		if err != nil {
			return fmt.Errorf("-latency: %w", err)
		}
		return latencyRounds(stdout, rawOut, self, *rounds, rates, bs[0], is, *seconds, *payload)
	}
	results := map[string][]scenario.DrainResult{} // by impl/batch
	for r := range *rounds {
		for _, b := range bs {
			// Rotate the order every round, so no implementation always
			// runs first or right after another.
			order := scenario.Rotate(is, r)
			for _, impl := range order {
				cmd := exec.Command(self, "-one", "-db", *db, "-impls", impl, "-batch", strconv.Itoa(b),
					"-messages", strconv.Itoa(*messages), "-payload", strconv.Itoa(*payload), "-keys", strconv.Itoa(*keys))
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					return fmt.Errorf("round %d, %s at batch %d: %w", r+1, impl, b, err)
				}
				var res scenario.DrainResult
				if err := json.Unmarshal(out, &res); err != nil {
					return fmt.Errorf("round %d, %s at batch %d: %w (%q)", r+1, impl, b, err, out)
				}
				fmt.Fprintf(os.Stderr, "round %d  batch %-5d %-14s %8.0f msgs/s  cpu/msg %5.1f µs (relay %4.1f, %s %4.1f, nats %4.1f)\n",
					r+1, b, impl, res.MsgsPerSec, res.TotalUS, res.RelayUS, *db, database(res), res.NATSUS)
				_, _ = rawOut.Write(out)
				key := impl + "/" + strconv.Itoa(b)
				results[key] = append(results[key], res)
			}
		}
	}
	summarize(stdout, *db, is, bs, results)
	return nil
}

// latencyRounds runs the latency measurement of every implementation at
// every rate, each in a fresh process, rounds times, interleaved as the
// drains are, and prints the medians and spreads with the ratios to the
// loop's.
func latencyRounds(stdout, rawOut io.Writer, self string, rounds int, rates []int, batch int, impls []string, d time.Duration, payload int) error {
	results := map[string][]scenario.LatencyResult{} // by impl/rate
	for r := range rounds {
		for _, rate := range rates {
			order := scenario.Rotate(impls, r)
			for _, impl := range order {
				cmd := exec.Command(self, "-one", "-impls", impl, "-batch", strconv.Itoa(batch), "-latency", strconv.Itoa(rate),
					"-duration", d.String(), "-payload", strconv.Itoa(payload))
				cmd.Stderr = os.Stderr
				out, err := cmd.Output()
				if err != nil {
					return fmt.Errorf("round %d, %s at %d/s: %w", r+1, impl, rate, err)
				}
				var res scenario.LatencyResult
				if err := json.Unmarshal(out, &res); err != nil {
					return fmt.Errorf("round %d, %s at %d/s: %w (%q)", r+1, impl, rate, err, out)
				}
				fmt.Fprintf(os.Stderr, "round %d  %5d/s %-14s p50 %6.2f  p90 %6.2f  p99 %6.2f  max %7.2f  gap %7.2f ms  (%d messages, %.0f/s)\n",
					r+1, rate, impl, res.P50, res.P90, res.P99, res.Max, res.MaxGap, res.Messages, res.Achieved)
				_, _ = rawOut.Write(out)
				key := impl + "/" + strconv.Itoa(rate)
				results[key] = append(results[key], res)
			}
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate/s\timpl\tp50 ms\t[min–max]\tvs loop\tp99 ms\t[min–max]\tvs loop\tmax ms (worst)\tmax gap ms (worst)\trounds\t")
	for _, rate := range rates {
		loop := results[scenario.ImplLoop+"/"+strconv.Itoa(rate)]
		p50 := func(r scenario.LatencyResult) float64 { return r.P50 }
		p99 := func(r scenario.LatencyResult) float64 { return r.P99 }
		for _, impl := range impls {
			rs := results[impl+"/"+strconv.Itoa(rate)]
			if len(rs) == 0 {
				continue
			}
			lo50, hi50 := scenario.Spread(rs, p50)
			lo99, hi99 := scenario.Spread(rs, p99)
			_, worst := scenario.Spread(rs, func(r scenario.LatencyResult) float64 { return r.Max })
			_, gap := scenario.Spread(rs, func(r scenario.LatencyResult) float64 { return r.MaxGap })
			fmt.Fprintf(tw, "%d\t%s\t%.2f\t[%.2f–%.2f]\t%s\t%.2f\t[%.2f–%.2f]\t%s\t%.1f\t%.1f\t%d\t\n",
				rate, impl, scenario.Median(rs, p50), lo50, hi50, ratio(scenario.Median(rs, p50), scenario.Median(loop, p50)),
				scenario.Median(rs, p99), lo99, hi99, ratio(scenario.Median(rs, p99), scenario.Median(loop, p99)), worst, gap, len(rs))
		}
	}
	return tw.Flush()
}

func ratio(v, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/base)
}

// summarize prints, per batch size and implementation, the median and
// range of throughput and CPU per message, and the ratio of the medians to
// the loop's.
func summarize(w io.Writer, db string, impls []string, batches []int, results map[string][]scenario.DrainResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "batch\timpl\tmsgs/s median\t[min–max]\tvs loop\tcpu µs/msg median\t[min–max]\tvs loop\trelay\t"+db+"\tnats\trounds\t")
	for _, b := range batches {
		loop := results[scenario.ImplLoop+"/"+strconv.Itoa(b)]
		loopRate, loopCPU := scenario.Median(loop, rate), scenario.Median(loop, total)
		for _, impl := range impls {
			rs := results[impl+"/"+strconv.Itoa(b)]
			if len(rs) == 0 {
				continue
			}
			lo, hi := scenario.Spread(rs, rate)
			clo, chi := scenario.Spread(rs, total)
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t[%.0f–%.0f]\t%s\t%.1f\t[%.1f–%.1f]\t%s\t%.1f\t%.1f\t%.1f\t%d\t\n",
				b, impl, scenario.Median(rs, rate), lo, hi, ratio(scenario.Median(rs, rate), loopRate),
				scenario.Median(rs, total), clo, chi, ratio(scenario.Median(rs, total), loopCPU),
				scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.RelayUS }),
				scenario.Median(rs, database),
				scenario.Median(rs, func(r scenario.DrainResult) float64 { return r.NATSUS }), len(rs))
		}
	}
	tw.Flush()
}

func rate(r scenario.DrainResult) float64 { return r.MsgsPerSec }

// database is the CPU per message of the database the drain ran on.
func database(r scenario.DrainResult) float64 { return r.PostgresUS + r.MySQLUS }
func total(r scenario.DrainResult) float64    { return r.TotalUS }

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
