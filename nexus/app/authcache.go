package app

import (
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/nexus/model"
)

// While the database is away, operators can still read what this Nexus
// holds in memory (its background tasks, their statuses, the replication
// matrix) if their token was good a moment ago: a token this Nexus
// validated against the database within AuthCacheMaxAge is accepted from
// memory, but only when the database cannot be asked, and only to read.
// An actor authenticated that way is Cached, and every change refuses it
// (audited): a change could be neither recorded nor audited, and a token
// revoked through another Nexus during the outage must not change
// anything. As soon as the database answers, every request is checked
// against it again.

// AuthCacheMaxAge bounds how long ago a token must have been checked
// against the database to be accepted from memory during an outage.
const AuthCacheMaxAge = 15 * time.Minute

// authCacheSize bounds the tokens remembered; the least recently checked
// go first.
const authCacheSize = 1024

type cachedToken struct {
	token   model.OperatorToken
	checked time.Time
}

// authCache holds tokens recently checked against the database, by hash;
// the zero value is empty and ready.
type authCache struct {
	mu sync.Mutex
	m  map[string]cachedToken
}

func (c *authCache) put(hash []byte, t model.OperatorToken, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedToken{}
	}
	if _, ok := c.m[string(hash)]; !ok && len(c.m) >= authCacheSize {
		var oldest string
		var at time.Time
		for k, v := range c.m {
			if oldest == "" || v.checked.Before(at) {
				oldest, at = k, v.checked
			}
		}
		delete(c.m, oldest)
	}
	c.m[string(hash)] = cachedToken{token: t, checked: now}
}

// get returns the token checked under hash within AuthCacheMaxAge of now,
// and not expired by now.
func (c *authCache) get(hash []byte, now time.Time) (model.OperatorToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[string(hash)]
	switch {
	case !ok, now.Sub(e.checked) > AuthCacheMaxAge,
		e.token.TimeExpires != nil && !now.Before(*e.token.TimeExpires):
		return model.OperatorToken{}, false
	}
	return e.token, true
}

// forget drops a token (revoked here).
func (c *authCache) forget(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.m {
		if v.token.ID == id {
			delete(c.m, k)
		}
	}
}
