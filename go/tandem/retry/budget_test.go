package retry

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var budgetT0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// drain withdraws at now until the budget refuses, and returns how many succeeded.
func drain(b *Budget, now time.Time) int {
	n := 0
	for b.Withdraw(now) {
		n++
		if n > 1e7 {
			panic("the budget never runs dry")
		}
	}
	return n
}

func TestBudgetFloorWithoutDeposits(t *testing.T) {
	b := NewBudget(10*time.Second, 10, 0.2)
	if got := drain(b, budgetT0); got != 100 {
		t.Errorf("no deposits, 10/s over 10s: %d withdrawals succeeded, want 100", got)
	}
	if b.Withdraw(budgetT0.Add(time.Second)) {
		t.Error("a withdrawal succeeded after the floor was spent within the window")
	}
	if got := drain(NewBudget(10*time.Second, 0, 0.2), budgetT0); got != 0 {
		t.Errorf("no floor, no deposits: %d withdrawals succeeded, want 0", got)
	}
}

func TestBudgetRatioOfDeposits(t *testing.T) {
	b := NewBudget(10*time.Second, 10, 0.2)
	for range 100 {
		b.Deposit(budgetT0)
	}
	if got := drain(b, budgetT0.Add(time.Second)); got != 100+20 {
		t.Errorf("100 deposits at 0.2 plus a floor of 100: %d withdrawals succeeded, want 120", got)
	}
	// Each further deposit earns a fifth of a retry.
	for i := range 10 {
		b.Deposit(budgetT0.Add(2 * time.Second))
		want := i%5 == 4
		if got := b.Withdraw(budgetT0.Add(2 * time.Second)); got != want {
			t.Fatalf("after %d more deposits: Withdraw = %v, want %v", i+1, got, want)
		}
	}

	no := NewBudget(10*time.Second, 0, 0.2)
	for range 100 {
		no.Deposit(budgetT0)
	}
	if got := drain(no, budgetT0); got != 20 {
		t.Errorf("100 deposits at 0.2, no floor: %d withdrawals succeeded, want 20", got)
	}

	several := NewBudget(10*time.Second, 0, 2)
	several.Deposit(budgetT0)
	if got := drain(several, budgetT0); got != 2 {
		t.Errorf("ratio 2: one deposit allowed %d withdrawals, want 2", got)
	}
}

// DepositN(n) is n deposits in one step; 0 deposits nothing, and a count past any balance
// saturates instead of wrapping into debt.
func TestBudgetDepositN(t *testing.T) {
	one, batch := NewBudget(10*time.Second, 0, 0.2), NewBudget(10*time.Second, 0, 0.2)
	for range 100 {
		one.Deposit(budgetT0)
	}
	batch.DepositN(budgetT0, 60)
	batch.DepositN(budgetT0.Add(time.Second), 0)
	batch.DepositN(budgetT0.Add(time.Second), 40)
	if a, b := drain(one, budgetT0.Add(time.Second)), drain(batch, budgetT0.Add(time.Second)); a != 20 || b != 20 {
		t.Errorf("100 deposits one at a time allowed %d withdrawals, in batches of 60, 0 and 40 %d; want 20 each", a, b)
	}
	// Batches age out with the slot of the time they carry.
	if batch.Withdraw(budgetT0.Add(11 * time.Second)) {
		t.Error("a withdrawal succeeded a window after every deposit")
	}

	huge := NewBudget(10*time.Second, 10, 100)
	for range 3 {
		huge.DepositN(budgetT0, ^uint64(0))
	}
	for i := range 1000 {
		if !huge.Withdraw(budgetT0) {
			t.Fatalf("withdrawal %d refused after saturating deposits", i)
		}
	}
}

func TestBudgetDepositsExpireAfterTTL(t *testing.T) {
	const ttl = 10 * time.Second
	b := NewBudget(ttl, 0, 0.5)
	for range 40 {
		b.Deposit(budgetT0)
	}
	// Still within the window: half the deposits' worth is there.
	if got := drain(b, budgetT0.Add(ttl/2)); got != 20 {
		t.Fatalf("within the window: %d withdrawals succeeded, want 20", got)
	}

	b = NewBudget(ttl, 0, 0.5)
	for range 40 {
		b.Deposit(budgetT0)
	}
	if b.Withdraw(budgetT0.Add(ttl)) {
		t.Error("a withdrawal succeeded on deposits made a ttl ago")
	}
	// Fresh deposits count again.
	b.Deposit(budgetT0.Add(ttl))
	b.Deposit(budgetT0.Add(ttl))
	if got := drain(b, budgetT0.Add(ttl)); got != 1 {
		t.Errorf("two fresh deposits at 0.5: %d withdrawals succeeded, want 1", got)
	}

	// The window slides: deposits spread over time leave one by one.
	b = NewBudget(ttl, 0, 1)
	for s := range 10 {
		b.Deposit(budgetT0.Add(time.Duration(s) * time.Second))
	}
	if got := drain(b, budgetT0.Add(ttl+5*time.Second)); got != 4 {
		t.Errorf("one deposit per second for 10s, 15s after the first: %d withdrawals, want 4 (those of seconds 6 to 9; second 5 is a ttl ago)", got)
	}
}

func TestBudgetWithdrawalsExpireToo(t *testing.T) {
	const ttl = 10 * time.Second
	b := NewBudget(ttl, 1, 0)
	if got := drain(b, budgetT0); got != 10 {
		t.Fatalf("floor 1/s over 10s: %d withdrawals, want 10", got)
	}
	if b.Withdraw(budgetT0.Add(ttl / 2)) {
		t.Fatal("the floor refilled before the withdrawals left the window")
	}
	if got := drain(b, budgetT0.Add(ttl)); got != 10 {
		t.Errorf("a ttl later: %d withdrawals, want the whole floor of 10 again", got)
	}
	// A long silence clears the window in one step.
	if got := drain(b, budgetT0.Add(1000*ttl)); got != 10 {
		t.Errorf("after a long silence: %d withdrawals, want 10", got)
	}
}

func TestBudgetTimeGoingBackwards(t *testing.T) {
	b := NewBudget(10*time.Second, 0, 1)
	b.Deposit(budgetT0.Add(time.Minute))
	// An earlier time counts as the latest one seen: the deposit is still there.
	if !b.Withdraw(budgetT0) {
		t.Error("a withdrawal at an earlier time than the deposit was refused")
	}
	if b.Withdraw(budgetT0) {
		t.Error("two withdrawals on one deposit at ratio 1")
	}
}

func TestBudgetClampsArguments(t *testing.T) {
	// ttl 0 means 10s: a floor of 1/s gives 10.
	if got := drain(NewBudget(0, 1, 0), budgetT0); got != 10 {
		t.Errorf("ttl 0: %d withdrawals, want 10 (the default 10s window)", got)
	}
	// ttl below a second is a second.
	if got := drain(NewBudget(time.Millisecond, 5, 0), budgetT0); got != 5 {
		t.Errorf("ttl 1ms: %d withdrawals, want 5 (a 1s window)", got)
	}
	// A negative ratio earns nothing; it does not take from the floor.
	neg := NewBudget(10*time.Second, 1, -3)
	for range 100 {
		neg.Deposit(budgetT0)
	}
	if got := drain(neg, budgetT0); got != 10 {
		t.Errorf("ratio -3: %d withdrawals, want the floor of 10", got)
	}
	// The largest floor does not overflow into a refusal.
	huge := NewBudget(time.Hour, ^uint32(0), 100)
	for range 1000 {
		huge.Deposit(budgetT0)
		if !huge.Withdraw(budgetT0) {
			t.Fatal("the largest budget refused a withdrawal")
		}
	}
}

func TestBudgetConcurrentNeverExceedsBound(t *testing.T) {
	const (
		goroutines = 64
		each       = 200
		floor      = 10 // 1/s over 10s
	)
	b := NewBudget(10*time.Second, 1, 0.5)
	var granted, deposits atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				now := budgetT0.Add(time.Duration(i) * time.Millisecond) // all within one slot
				if (g+i)%2 == 0 {
					b.Deposit(now)
					deposits.Add(1)
				} else if b.Withdraw(now) {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	bound := floor + deposits.Load()/2
	if granted.Load() > bound {
		t.Fatalf("%d withdrawals granted, above the bound %d", granted.Load(), bound)
	}
	// No grant was lost or double-counted: what is left is exactly the rest of the bound.
	left := int64(drain(b, budgetT0.Add(time.Second)))
	if granted.Load()+left != bound {
		t.Errorf("granted %d concurrently + %d afterwards = %d, want exactly the bound %d",
			granted.Load(), left, granted.Load()+left, bound)
	}

	// Racing withdrawals on a known balance get exactly the balance.
	b = NewBudget(10*time.Second, 1, 0.5)
	for range 1000 {
		b.Deposit(budgetT0)
	}
	granted.Store(0)
	for range goroutines {
		wg.Go(func() {
			for range 50 {
				if b.Withdraw(budgetT0) {
					granted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := granted.Load(); got != floor+500 {
		t.Errorf("%d racing withdrawals on a balance of %d: %d granted", goroutines*50, floor+500, got)
	}
}

func TestBudgetDoesNotAllocate(t *testing.T) {
	b := NewBudget(10*time.Second, 10, 0.2)
	now := budgetT0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(100 * time.Millisecond)
		b.Deposit(now)
		b.Withdraw(now)
	})
	if allocs != 0 {
		t.Errorf("Deposit+Withdraw allocate %v times per call", allocs)
	}
}

func ExampleBudget() {
	// A floor of 1 retry per second, plus one retry per five first deliveries, over 10s.
	budget := NewBudget(10*time.Second, 1, 0.2)
	now := time.Now()
	for range 50 {
		budget.Deposit(now) // a first delivery
	}
	retries := 0
	for budget.Withdraw(now) {
		retries++
	}
	fmt.Println(retries)
	// Output: 20
}
