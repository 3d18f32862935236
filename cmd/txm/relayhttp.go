package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/txmotel"
)

// relayMetrics is the relay's OpenTelemetry instruments (txm/txmotel), read
// by a Prometheus exporter into a registry of the relay's own, with the Go
// runtime's and the process's collectors.
type relayMetrics struct {
	reg *prometheus.Registry
	mp  *sdkmetric.MeterProvider
	tel *txmotel.Telemetry
}

func newRelayMetrics(stats txm.StatsReporter) (*relayMetrics, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("metrics: Prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	tel, err := txmotel.New(txmotel.Config{MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider(), Stats: stats})
	if err != nil {
		_ = mp.Shutdown(context.Background())
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return &relayMetrics{reg: reg, mp: mp, tel: tel}, nil
}

func (m *relayMetrics) close() {
	_ = m.tel.Close()
	_ = m.mp.Shutdown(context.Background())
}

// relayShutdownTimeout bounds the wait for the requests in progress when the
// relay stops.
const relayShutdownTimeout = 5 * time.Second

// serveHTTP listens on -http and serves /healthz and /metrics until the
// returned function, which shuts the server down and waits for it.
func (r *relay) serveHTTP(ctx context.Context, m *relayMetrics) (stop func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", r.cfg.httpAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on -http %s: %w", r.cfg.httpAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", r.healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slogPrintln{r.log}, ErrorHandling: promhttp.ContinueOnError,
	}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	r.log.LogAttrs(ctx, slog.LevelInfo, "txm relay: serving /healthz and /metrics", slog.String("http_addr", ln.Addr().String()))
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), relayShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Warn("txm relay: HTTP server", slog.Any("error", err))
		}
	}, nil
}

// healthz answers 200 when the relay runs and the store and the broker
// answer now, and 503 with the reasons otherwise.
func (r *relay) healthz(w http.ResponseWriter, req *http.Request) {
	var why []string
	state := r.state.Load()
	switch state {
	case relayStarting:
		why = append(why, "relay: starting")
	case relayStopping:
		why = append(why, "relay: stopping")
	}
	why = append(why, r.check(req.Context(), state == relayStarting)...)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(why) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(why, "\n"))
		return
	}
	fmt.Fprintln(w, "ok")
}

// slogPrintln adapts a logger to promhttp's error log.
type slogPrintln struct{ l *slog.Logger }

func (p slogPrintln) Println(v ...any) {
	p.l.Warn("txm relay: /metrics", slog.String("error", strings.TrimSpace(fmt.Sprintln(v...))))
}
