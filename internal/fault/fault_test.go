package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindAndCodeThroughWrapping(t *testing.T) {
	cause := errors.New("cause")
	f := Wrap(cause, Conflict, "repo_conflict", "system version %s exists", "1.0.0")
	wrapped := fmt.Errorf("upload: %w", f)
	if KindOf(wrapped) != Conflict || CodeOf(wrapped) != "repo_conflict" {
		t.Fatalf("kind %v code %q", KindOf(wrapped), CodeOf(wrapped))
	}
	if !errors.Is(wrapped, cause) {
		t.Fatal("the cause is not reachable with errors.Is")
	}
	if f.Error() != "repo_conflict: system version 1.0.0 exists: cause" {
		t.Fatalf("Error() = %q", f.Error())
	}
	if KindOf(errors.New("plain")) != Internal || CodeOf(errors.New("plain")) != "" {
		t.Fatal("an unclassified error must read as internal")
	}
	if Internal.String() != "internal" || Kind(99).String() != "kind(99)" {
		t.Fatal("kind names")
	}
}

func TestWithCopies(t *testing.T) {
	a := Conflictf("c", "m").With("x", 1)
	b := a.With("y", 2)
	if len(a.Extra) != 1 || len(b.Extra) != 2 || b.Extra["x"] != 1 {
		t.Fatalf("a %v b %v", a.Extra, b.Extra)
	}
}
