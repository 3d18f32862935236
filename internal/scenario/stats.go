package scenario

import "slices"

// Median returns the median of f over rs; 0 when rs is empty.
func Median[R any](rs []R, f func(R) float64) float64 {
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

// Spread returns the smallest and the largest value of f over rs; 0, 0
// when rs is empty.
func Spread[R any](rs []R, f func(R) float64) (lo, hi float64) {
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

// Rotate returns xs started at its (r mod len)th element and wrapped
// around: repetition r of a sweep runs its points in this order, so no
// point always runs first or right after another.
func Rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return nil
	}
	k := r % len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}
