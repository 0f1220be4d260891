package app

import (
	"testing"

	"github.com/rackplane/rackplane/api"
	"github.com/rackplane/rackplane/internal/fault"
)

// A body of unknown length reserves a step at a time, and near the
// budget's end only what it needs; what it was granted goes back whole.
func TestReservationGrowsInStepsWithinTheBudget(t *testing.T) {
	g := newUploadGate(2, budgetStep+budgetStep/2)
	a := &reservation{g: g, limit: 1 << 40}
	if err := a.grow(10); err != nil || a.reserved != budgetStep {
		t.Fatalf("first byte: reserved %d, %v", a.reserved, err)
	}
	if err := a.grow(budgetStep + 1); err != nil || a.reserved != budgetStep+1 {
		t.Fatalf("past the first step with the budget nearly gone: reserved %d, %v (want just what is needed)", a.reserved, err)
	}
	b := &reservation{g: g, limit: 1 << 40}
	if err := b.grow(budgetStep/2 - 1); err != nil {
		t.Fatalf("the rest of the budget: %v", err)
	}
	if err := b.grow(budgetStep / 2); fault.CodeOf(err) != api.CodeUploadBudget || fault.KindOf(err) != fault.Busy {
		t.Fatalf("one byte beyond the budget: %v", err)
	}
	if f, _ := fault.As(b.grow(budgetStep)); f == nil || f.RetryAfter != uploadRetryAfter {
		t.Fatalf("a budget refusal must say when to retry: %+v", f)
	}
	a.release()
	b.release()
	if h := g.heldBytes(); h != 0 {
		t.Fatalf("after both released, %d held", h)
	}
}

// A declared length never reserves beyond itself.
func TestReservationStopsAtItsLimit(t *testing.T) {
	g := newUploadGate(1, 1<<40)
	r := &reservation{g: g, limit: 1000}
	if err := r.grow(1); err != nil || r.reserved != 1000 {
		t.Fatalf("reserved %d, %v", r.reserved, err)
	}
}

func TestTheGateRefusesBeyondItsSlots(t *testing.T) {
	g := newUploadGate(1, 1)
	leave, err := g.enter()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.enter(); fault.CodeOf(err) != api.CodeTooManyUploads {
		t.Fatalf("second upload: %v", err)
	}
	leave()
	if leave, err = g.enter(); err != nil {
		t.Fatalf("after the first left: %v", err)
	}
	leave()
}
