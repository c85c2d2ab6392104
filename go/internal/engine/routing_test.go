package engine

import (
	"fmt"
	"math"
	"testing"
)

func table(sticky bool, ws ...uint32) *routing {
	r := &routing{sticky: sticky}
	var sum uint64
	for i, w := range ws {
		sum += uint64(w)
		r.targets = append(r.targets, &binding{target: &Target{Name: fmt.Sprint("t", i)}})
		r.weights = append(r.weights, w)
		r.cum = append(r.cum, sum)
	}
	return r
}

// A random pick follows the weights within five standard deviations; a weight of 0 is
// never picked.
func TestPickFollowsTheWeights(t *testing.T) {
	const n = 100000
	for _, ws := range [][]uint32{{1, 3}, {1, 1, 2}, {5, 0, 5}} {
		r := table(false, ws...)
		got := map[*binding]int{}
		for range n {
			got[r.pick("")]++
		}
		var total float64
		for _, w := range ws {
			total += float64(w)
		}
		for i, b := range r.targets {
			p := float64(ws[i]) / total
			mean, sd := n*p, math.Sqrt(n*p*(1-p))
			if math.Abs(float64(got[b])-mean) > 5*sd || (ws[i] == 0 && got[b] != 0) {
				t.Errorf("weights %v: target %d picked %d times, want %.0f ± %.0f", ws, i, got[b], mean, 5*sd)
			}
		}
	}
}

// A sticky pick: a key always picks the same target; the shares follow the weights; a
// weight change moves keys only to the target whose weight grew, about as many as its share
// grew; the pick depends on names, not on the order of the targets.
func TestStickyPickIsConsistent(t *testing.T) {
	const keys = 20000
	before := table(true, 1, 1, 1)
	owner := make([]string, keys)
	shares := map[string]int{}
	for k := range keys {
		key := fmt.Sprint("key-", k)
		owner[k] = before.pick(key).target.Name
		shares[owner[k]]++
		if again := before.pick(key).target.Name; again != owner[k] {
			t.Fatalf("key %s picked %s then %s", key, owner[k], again)
		}
	}
	for name, got := range shares {
		if math.Abs(float64(got)-keys/3.0) > 5*math.Sqrt(keys*(1.0/3)*(2.0/3)) {
			t.Errorf("%s owns %d of %d keys at equal weights", name, got, keys)
		}
	}
	after := table(true, 1, 1, 2) // t2's share: 1/3 → 1/2
	moved := 0
	for k := range keys {
		now := after.pick(fmt.Sprint("key-", k)).target.Name
		if now != owner[k] {
			moved++
			if now != "t2" {
				t.Fatalf("key %d moved from %s to %s; only t2's weight grew", k, owner[k], now)
			}
		}
	}
	if want := keys / 6; math.Abs(float64(moved-want)) > float64(want)/5 {
		t.Errorf("%d keys moved, want about %d (the share t2 gained)", moved, want)
	}
	reversed := &routing{sticky: true, targets: []*binding{before.targets[2], before.targets[1], before.targets[0]},
		weights: []uint32{1, 1, 1}, cum: []uint64{1, 2, 3}}
	for k := range 1000 {
		key := fmt.Sprint("key-", k)
		if reversed.pick(key) != before.pick(key) {
			t.Fatalf("key %s: the pick depends on the targets' order", key)
		}
	}
	zero := table(true, 1, 0)
	for k := range 1000 {
		if zero.pick(fmt.Sprint(k)) != zero.targets[0] {
			t.Fatal("a sticky split picked a target of weight 0")
		}
	}
}
