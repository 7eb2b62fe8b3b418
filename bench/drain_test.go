package main

import "testing"

// The table prints medians of the runs: the middle run's figure, or the
// mean of the middle two, whatever order the runs came in.
func TestMedian(t *testing.T) {
	for _, c := range []struct {
		secs []float64
		want float64
	}{
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{9, 1, 5, 3}, 4},
		{[]float64{2, 2, 8}, 2},
	} {
		if got := median(runsOf(c.secs), secs); got != c.want {
			t.Errorf("median of %v = %v, want %v", c.secs, got, c.want)
		}
	}
}

// The runs line lists every run's figure in the order the runs came.
func TestEachInRunOrder(t *testing.T) {
	if got, want := each(runsOf([]float64{3, 1, 2.5}), secs, "%.1f"), "3.0 1.0 2.5"; got != want {
		t.Errorf("each = %q, want %q", got, want)
	}
}

func secs(r result) float64 { return r.secs }

func runsOf(secs []float64) []result {
	rs := make([]result, len(secs))
	for i, s := range secs {
		rs[i].secs = s
	}
	return rs
}
