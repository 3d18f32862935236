package retry_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/transmanager/transmanager/retry"
)

// fakeClock is a backoff.Clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	want := retry.Policy{
		InitialInterval:     100 * time.Millisecond,
		MaxInterval:         30 * time.Second,
		Multiplier:          2,
		RandomizationFactor: 0.5,
	}
	if got := retry.DefaultPolicy(); got != want {
		t.Fatalf("DefaultPolicy() = %+v, want %+v", got, want)
	}
	if err := retry.DefaultPolicy().Validate(); err != nil {
		t.Fatalf("DefaultPolicy().Validate() = %v", err)
	}
	// The zero Policy behaves as DefaultPolicy.
	var zero retry.Policy
	for n := range 40 {
		if z, d := zero.Interval(n), retry.DefaultPolicy().Interval(n); z != d {
			t.Fatalf("zero.Interval(%d) = %v, DefaultPolicy().Interval(%d) = %v", n, z, n, d)
		}
	}
	if zero.Interval(1) != 100*time.Millisecond || zero.Interval(40) != 30*time.Second {
		t.Fatalf("zero policy: Interval(1) = %v, Interval(40) = %v", zero.Interval(1), zero.Interval(40))
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		p     retry.Policy
		field string // "" means valid
	}{
		{"zero", retry.Policy{}, ""},
		{"default", retry.DefaultPolicy(), ""},
		{"no jitter", retry.Policy{RandomizationFactor: retry.NoJitter}, ""},
		{"full jitter", retry.Policy{RandomizationFactor: 1}, ""},
		{"constant", retry.Policy{Multiplier: 1}, ""},
		{"max equals initial", retry.Policy{InitialInterval: time.Second, MaxInterval: time.Second}, ""},
		{"long initial with default max", retry.Policy{InitialInterval: time.Hour}, ""},
		{"limits", retry.Policy{MaxAttempts: 3, MaxElapsedTime: time.Minute}, ""},
		{"negative initial", retry.Policy{InitialInterval: -1}, "InitialInterval"},
		{"negative max", retry.Policy{MaxInterval: -1}, "MaxInterval"},
		{"max below initial", retry.Policy{InitialInterval: time.Second, MaxInterval: time.Millisecond}, "MaxInterval"},
		{"max below default initial", retry.Policy{MaxInterval: time.Millisecond}, "MaxInterval"},
		{"multiplier below 1", retry.Policy{Multiplier: 0.5}, "Multiplier"},
		{"negative multiplier", retry.Policy{Multiplier: -2}, "Multiplier"},
		{"NaN multiplier", retry.Policy{Multiplier: math.NaN()}, "Multiplier"},
		{"infinite multiplier", retry.Policy{Multiplier: math.Inf(1)}, "Multiplier"},
		{"jitter above 1", retry.Policy{RandomizationFactor: 1.5}, "RandomizationFactor"},
		{"NaN jitter", retry.Policy{RandomizationFactor: math.NaN()}, "RandomizationFactor"},
		{"negative attempts", retry.Policy{MaxAttempts: -1}, "MaxAttempts"},
		{"negative elapsed", retry.Policy{MaxElapsedTime: -time.Second}, "MaxElapsedTime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.p.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %s", tt.field)
			}
			if !errors.Is(err, retry.ErrInvalidPolicy) {
				t.Errorf("Validate() = %v, does not match ErrInvalidPolicy", err)
			}
			if !strings.Contains(err.Error(), "Policy."+tt.field+" ") {
				t.Errorf("Validate() = %q, does not name Policy.%s", err, tt.field)
			}
		})
	}
}

func TestInterval(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		name string
		p    retry.Policy
		want []time.Duration // Interval(1), Interval(2), ...
	}{
		{"default", retry.Policy{}, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms}},
		{"capped", retry.Policy{InitialInterval: ms, MaxInterval: 5 * ms}, []time.Duration{ms, 2 * ms, 4 * ms, 5 * ms, 5 * ms, 5 * ms}},
		{"multiplier 3", retry.Policy{InitialInterval: ms, Multiplier: 3, MaxInterval: 20 * ms}, []time.Duration{ms, 3 * ms, 9 * ms, 20 * ms}},
		{"multiplier 1.5", retry.Policy{InitialInterval: 100 * ms, Multiplier: 1.5}, []time.Duration{100 * ms, 150 * ms, 225 * ms, 337500 * time.Microsecond}},
		{"constant", retry.Policy{InitialInterval: 7 * ms, Multiplier: 1}, []time.Duration{7 * ms, 7 * ms, 7 * ms}},
		{"long initial raises the default cap", retry.Policy{InitialInterval: time.Hour}, []time.Duration{time.Hour, time.Hour}},
		{"default cap", retry.Policy{InitialInterval: 20 * time.Second}, []time.Duration{20 * time.Second, 30 * time.Second, 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for i, want := range tt.want {
				if got := tt.p.Interval(i + 1); got != want {
					t.Errorf("Interval(%d) = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestIntervalEdges(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Minute}
	for _, n := range []int{0, -1, math.MinInt} {
		if got := p.Interval(n); got != 0 {
			t.Errorf("Interval(%d) = %v, want 0", n, got)
		}
		if got := p.Delay(n); got != 0 {
			t.Errorf("Delay(%d) = %v, want 0", n, got)
		}
	}
	// Large attempt counts do not overflow: they stay at the cap.
	for _, n := range []int{64, 1000, 1 << 40, math.MaxInt} {
		if got := p.Interval(n); got != time.Minute {
			t.Errorf("Interval(%d) = %v, want the cap %v", n, got, time.Minute)
		}
	}
}

func TestIntervalMonotonic(t *testing.T) {
	t.Parallel()
	policies := []retry.Policy{
		{},
		{InitialInterval: time.Microsecond, Multiplier: 1.1, MaxInterval: time.Second},
		{InitialInterval: time.Second, Multiplier: 10, MaxInterval: time.Hour},
		{Multiplier: 1},
	}
	for _, p := range policies {
		q := p
		q.RandomizationFactor = retry.NoJitter
		prev := time.Duration(0)
		for n := 1; n <= 200; n++ {
			d, dd := p.Interval(n), q.Delay(n)
			if d != dd {
				t.Fatalf("%+v: Delay(%d) without jitter = %v, Interval = %v", p, n, dd, d)
			}
			if d < prev {
				t.Fatalf("%+v: Interval(%d) = %v < Interval(%d) = %v", p, n, d, n-1, prev)
			}
			prev = d
		}
	}
}

func TestDelayJitterBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		factor float64 // as set on the policy
		f      float64 // effective
	}{
		{"default", 0, 0.5},
		{"small", 0.1, 0.1},
		{"full", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := retry.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: time.Second, RandomizationFactor: tt.factor}
			for n := 1; n <= 10; n++ {
				d := float64(p.Interval(n))
				lo, hi := time.Duration(d*(1-tt.f)), time.Duration(d*(1+tt.f))
				seen := map[time.Duration]bool{}
				for range 200 {
					got := p.Delay(n)
					if got < lo || got > hi {
						t.Fatalf("Delay(%d) = %v, outside [%v, %v]", n, got, lo, hi)
					}
					seen[got] = true
				}
				if len(seen) < 10 {
					t.Fatalf("Delay(%d) took only %d distinct values in 200 draws: no jitter?", n, len(seen))
				}
			}
		})
	}
}

func TestDelayConcurrent(t *testing.T) {
	t.Parallel()
	p := retry.DefaultPolicy()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for n := 1; n <= 500; n++ {
				if d := p.Delay(n); d <= 0 || d > 45*time.Second {
					t.Errorf("Delay(%d) = %v", n, d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestExhausted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		max, attempts int
		want          bool
	}{
		{0, 0, false},
		{0, 1_000_000, false},
		{1, 0, false},
		{1, 1, true},
		{3, 2, false},
		{3, 3, true},
		{3, 4, true},
	}
	for _, tt := range tests {
		p := retry.Policy{MaxAttempts: tt.max}
		if got := p.Exhausted(tt.attempts); got != tt.want {
			t.Errorf("Policy{MaxAttempts: %d}.Exhausted(%d) = %v, want %v", tt.max, tt.attempts, got, tt.want)
		}
	}
}

// retries counts the delays a backoff gives before Stop, up to limit.
func retries(b backoff.BackOff, limit int) int {
	for n := range limit {
		if b.NextBackOff() == backoff.Stop {
			return n
		}
	}
	return limit
}

func TestNewBackOffMaxAttempts(t *testing.T) {
	t.Parallel()
	for _, maxAttempts := range []int{1, 2, 3, 7} {
		p := retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: maxAttempts}
		b := p.NewBackOff()
		// MaxAttempts counts the first attempt: MaxAttempts-1 retries.
		if got := retries(b, 100); got != maxAttempts-1 {
			t.Errorf("MaxAttempts %d: %d retries before Stop, want %d", maxAttempts, got, maxAttempts-1)
		}
		if got := b.NextBackOff(); got != backoff.Stop {
			t.Errorf("MaxAttempts %d: NextBackOff after Stop = %v, want Stop", maxAttempts, got)
		}
		b.Reset()
		if got := retries(b, 100); got != maxAttempts-1 {
			t.Errorf("MaxAttempts %d: after Reset, %d retries, want %d", maxAttempts, got, maxAttempts-1)
		}
		// The same Policy checked statelessly agrees.
		if !p.Exhausted(maxAttempts) || p.Exhausted(maxAttempts-1) {
			t.Errorf("MaxAttempts %d: Exhausted disagrees with the backoff", maxAttempts)
		}
	}
}

func TestNewBackOffMatchesInterval(t *testing.T) {
	t.Parallel()
	policies := []retry.Policy{
		{InitialInterval: time.Millisecond, MaxInterval: time.Second, RandomizationFactor: retry.NoJitter},
		{InitialInterval: 100 * time.Millisecond, Multiplier: 1.5, MaxInterval: time.Minute, RandomizationFactor: retry.NoJitter},
		{InitialInterval: time.Hour, RandomizationFactor: retry.NoJitter},
	}
	for _, p := range policies {
		b := p.NewBackOffClock(newFakeClock())
		for n := 1; n <= 40; n++ {
			got, want := b.NextBackOff(), p.Interval(n)
			// backoff truncates to whole nanoseconds at each step.
			if diff := got - want; diff < -time.Duration(n) || diff > time.Duration(n) {
				t.Fatalf("%+v: NextBackOff #%d = %v, Interval(%d) = %v", p, n, got, n, want)
			}
		}
	}
}

func TestNewBackOffJitterBounds(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond}
	for range 50 {
		b := p.NewBackOffClock(newFakeClock())
		for n := 1; n <= 8; n++ {
			d := float64(p.Interval(n))
			got := b.NextBackOff()
			if lo, hi := time.Duration(d*0.5), time.Duration(d*1.5)+1; got < lo || got > hi {
				t.Fatalf("NextBackOff #%d = %v, outside [%v, %v]", n, got, lo, hi)
			}
		}
	}
}

func TestNewBackOffNoElapsedLimit(t *testing.T) {
	t.Parallel()
	// MaxElapsedTime 0 must never give up, however much time passes; with
	// backoff's own default of 15 minutes this would stop early.
	clock := newFakeClock()
	start := clock.Now()
	b := retry.DefaultPolicy().NewBackOffClock(clock)
	for n := 1; n <= 200; n++ {
		d := b.NextBackOff()
		if d == backoff.Stop {
			t.Fatalf("NextBackOff #%d = Stop after %v with no MaxElapsedTime", n, clock.Now().Sub(start))
		}
		clock.Advance(d)
	}
	if elapsed := clock.Now().Sub(start); elapsed < time.Hour {
		t.Fatalf("only %v elapsed on the fake clock; the test should cover more than backoff's 15 minutes", elapsed)
	}
}

func TestNewBackOffMaxElapsedTime(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	p := retry.Policy{InitialInterval: time.Second, MaxInterval: time.Minute, RandomizationFactor: retry.NoJitter, MaxElapsedTime: 10 * time.Second}
	b := p.NewBackOffClock(clock)
	var got []time.Duration
	for {
		d := b.NextBackOff()
		if d == backoff.Stop {
			break
		}
		got = append(got, d)
		clock.Advance(d)
		if len(got) > 10 {
			t.Fatal("no Stop after 10 retries")
		}
	}
	// 1s + 2s + 4s = 7s elapsed; the next retry would start at 15s > 10s.
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("delays = %v, want %v", got, want)
	}
}

func TestNewBackOffFreshInstances(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: time.Millisecond, RandomizationFactor: retry.NoJitter, MaxAttempts: 3}
	a, b := p.NewBackOff(), p.NewBackOffClock(nil)
	if a == b {
		t.Fatal("NewBackOff returned a shared instance")
	}
	if retries(a, 10) != 2 {
		t.Fatal("first backoff: want 2 retries")
	}
	if got := b.NextBackOff(); got != time.Millisecond {
		t.Fatalf("second backoff starts at %v after the first was used up, want 1ms", got)
	}
}
