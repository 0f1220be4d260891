package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/model"
)

// A token is remembered for AuthCacheMaxAge after its last check against
// the database, never past its own expiry, forgotten when revoked here,
// and the cache stays bounded.
func TestAuthCacheBounds(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var c authCache
	tok := model.OperatorToken{ID: uuid.New(), Name: "a", Role: model.RoleViewer}
	c.put([]byte("h1"), tok, now)
	if got, ok := c.get([]byte("h1"), now.Add(AuthCacheMaxAge)); !ok || got.ID != tok.ID {
		t.Fatalf("at the max age: %+v %v", got, ok)
	}
	if _, ok := c.get([]byte("h1"), now.Add(AuthCacheMaxAge+time.Nanosecond)); ok {
		t.Fatal("accepted past the max age")
	}
	if _, ok := c.get([]byte("other"), now); ok {
		t.Fatal("accepted an unknown hash")
	}
	exp := now.Add(time.Minute)
	c.put([]byte("h2"), model.OperatorToken{ID: uuid.New(), TimeExpires: &exp}, now)
	if _, ok := c.get([]byte("h2"), exp); ok {
		t.Fatal("accepted an expired token")
	}
	c.forget(tok.ID)
	if _, ok := c.get([]byte("h1"), now); ok {
		t.Fatal("accepted a revoked token")
	}
	for i := range authCacheSize + 10 {
		c.put([]byte(fmt.Sprint("k", i)), model.OperatorToken{ID: uuid.New()}, now.Add(time.Duration(i)))
	}
	if len(c.m) != authCacheSize {
		t.Fatalf("%d tokens remembered, bound %d", len(c.m), authCacheSize)
	}
	if _, ok := c.get([]byte("k0"), now.Add(time.Hour/60)); ok {
		t.Fatal("the least recently checked token was kept over the bound")
	}
}
