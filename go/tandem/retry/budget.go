package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// budgetSlots divides a Budget's window: a deposit or withdrawal ages out between
	// ttl·(1−1/budgetSlots) and ttl after it happened.
	budgetSlots = 10
	// budgetUnit is what one withdrawal costs, in the budget's fixed-point units; a deposit
	// is worth retryRatio·budgetUnit. A decimal scale keeps decimal ratios such as 0.2 exact.
	budgetUnit = 1_000_000

	defaultBudgetTTL = 10 * time.Second
	minBudgetTTL     = time.Second
	maxBudgetTTL     = time.Hour
	maxBudgetRatio   = 100
)

// Budget allows retries as a fraction of recent first deliveries plus a small floor
// per second, over a sliding window, so that a failing dependency cannot turn every
// failure into a retry storm. Within any window of ttl, at most
//
//	minPerSec·ttl.Seconds() + retryRatio·deposits − withdrawals
//
// further withdrawals succeed, where deposits and withdrawals are those of the window.
// The window slides in steps of ttl/10: each deposit and withdrawal counts from the
// moment it happens until between 0.9·ttl and ttl later.
//
// Time is whatever the caller passes (time.Now() in production, a fixed or advancing
// value in tests); a time earlier than one already seen counts as that latest time.
//
// A Budget is safe for concurrent use by many goroutines; each call is O(1)
// and allocation-free.
type Budget struct {
	slotLen    time.Duration
	reserve    int64 // the floor, in units
	perDeposit int64 // units a deposit adds

	// A deposit in the current slot is one atomic add: every first delivery makes one,
	// from many goroutines at once, and a lock there was the one contended point of the
	// submit path. Moving the window, and withdrawals (retries, which are rare), take mu.
	// A deposit racing a move of the window by a whole ttl may land in a slot just
	// cleared: it counts once, for up to one window longer than it should.
	mu      sync.Mutex
	started atomic.Bool
	epoch   time.Time    // the first time seen, set once before started; slot numbers count from it
	current atomic.Int64 // the slot number of the latest time seen; written under mu
	slots   [budgetSlots]atomic.Int64
}

// slotCap bounds each slot's deposits, so that their sum and the reserve cannot overflow:
// past a balance of trillions of retries more deposits change nothing.
const slotCap = math.MaxInt64 / (2 * budgetSlots)

// NewBudget returns a budget over a window of ttl (clamped to 1s..1h; 0 means 10s)
// that allows minPerSec retries per second of the window regardless of traffic, plus
// retryRatio (0..100) retries per first delivery deposited within the window: 0.2 allows
// one retry per five first deliveries. tandem's default is NewBudget(10*time.Second,
// 10, 0.2).
func NewBudget(ttl time.Duration, minPerSec uint32, retryRatio float64) *Budget {
	switch {
	case ttl <= 0:
		ttl = defaultBudgetTTL
	case ttl < minBudgetTTL:
		ttl = minBudgetTTL
	case ttl > maxBudgetTTL:
		ttl = maxBudgetTTL
	}
	switch {
	case !(retryRatio > 0): // negative or NaN
		retryRatio = 0
	case retryRatio > maxBudgetRatio:
		retryRatio = maxBudgetRatio
	}
	// A floor of 2⁶² units is 4.6 trillion retries: plenty, and the sums cannot overflow.
	reserve := min(math.Round(float64(minPerSec)*ttl.Seconds()*budgetUnit), 1<<62)
	return &Budget{
		slotLen:    ttl / budgetSlots,
		reserve:    int64(reserve),
		perDeposit: int64(math.Round(retryRatio * budgetUnit)),
	}
}

// Deposit records one first delivery at now, earning retryRatio retries for the window.
func (b *Budget) Deposit(now time.Time) { b.DepositN(now, 1) }

// DepositN records n first deliveries at now, as n calls of Deposit would: for a caller that
// counts its deliveries and deposits them in batches, reading the clock once per batch.
func (b *Budget) DepositN(now time.Time, n uint64) {
	units := satMul(int64(min(n, math.MaxInt64)), b.perDeposit)
	// The common case, a deposit in the current slot, compares with the slot's end rather
	// than dividing: a deposit per first delivery makes the division show.
	if b.started.Load() {
		cur := b.current.Load()
		if int64(now.Sub(b.epoch)) < satMul(cur+1, int64(b.slotLen)) {
			b.deposit(cur, units)
			return
		}
	}
	b.mu.Lock()
	b.advance(now)
	b.deposit(b.current.Load(), units)
	b.mu.Unlock()
}

// deposit adds units to a slot, up to slotCap.
func (b *Budget) deposit(slot, units int64) {
	s := &b.slots[slot%budgetSlots]
	for {
		v := s.Load()
		if v >= slotCap || s.CompareAndSwap(v, v+min(units, slotCap-v)) {
			return
		}
	}
}

// Withdraw reports whether one retry may happen at now, and if so consumes it.
func (b *Budget) Withdraw(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.advance(now)
	balance := b.reserve
	for i := range b.slots {
		balance += b.slots[i].Load()
	}
	if balance < budgetUnit {
		return false
	}
	b.slots[b.current.Load()%budgetSlots].Add(-budgetUnit)
	return true
}

// advance moves the window to now, forgetting the slots that aged out. It runs at most
// budgetSlots steps. b.mu must be held.
func (b *Budget) advance(now time.Time) {
	if !b.started.Load() {
		b.epoch = now
		b.started.Store(true)
		return
	}
	// Sub uses the monotonic clock when both times carry it, so wall-clock steps do not
	// move the window; it saturates instead of wrapping.
	n := int64(now.Sub(b.epoch) / b.slotLen)
	cur := b.current.Load()
	if n <= cur {
		return
	}
	for s := cur + 1; s <= min(n, cur+budgetSlots); s++ {
		b.slots[s%budgetSlots].Store(0)
	}
	b.current.Store(n)
}

// satMul is a·b for non-negative a and b, saturating at math.MaxInt64.
func satMul(a, b int64) int64 {
	if b != 0 && a > math.MaxInt64/b {
		return math.MaxInt64
	}
	return a * b
}
