package bootnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Request is a request received from the peer. Reply to it with
// Conn.Reply, once.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`
	// TimeoutMS is what is left of the caller's deadline, so the
	// executing side does not work on after the caller gave up (0: none).
	TimeoutMS int64           `json:"timeout_ms,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
}

// Timeout is the caller's remaining deadline, 0 when it gave none.
func (r *Request) Timeout() time.Duration { return time.Duration(r.TimeoutMS) * time.Millisecond }

type response struct {
	ID    uint64          `json:"id"`
	Error *RemoteError    `json:"error,omitempty"`
	Body  json.RawMessage `json:"body,omitempty"`
}

// RemoteError is a refusal or failure reported by the peer that executed a
// request. Code is stable and machine-readable.
type RemoteError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *RemoteError) Error() string { return "peer answered " + e.Code + ": " + e.Message }

// Call errors. ErrBusy and ErrConnClosed are answered at once: a caller
// never waits for a request that cannot be answered.
var (
	// ErrBusy: too many requests are in flight on the connection.
	ErrBusy = errors.New("bootnet: too many requests in flight on this connection")
	// ErrConnClosed: the connection closed before the answer arrived
	// (every request bound to it fails at that moment).
	ErrConnClosed = errors.New("bootnet: connection closed")
)

type callResult struct {
	err  error
	body json.RawMessage
}

// Call sends a request on c and waits for its answer, for the
// connection to close, or for ctx, whichever comes first. The request is
// bound to this connection: an answer arriving on another one is not its
// answer. resp (when not nil) receives the answer's body; an error from
// the peer comes back as *RemoteError.
func (c *Conn) Call(ctx context.Context, op string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("bootnet: encode %s request: %w", op, err)
	}
	c.callMu.Lock()
	if len(c.pending) >= c.cfg.maxCalls {
		c.callMu.Unlock()
		return ErrBusy
	}
	c.nextCall++
	id := c.nextCall
	ch := make(chan callResult, 1)
	c.pending[id] = ch
	c.callMu.Unlock()
	defer func() {
		c.callMu.Lock()
		delete(c.pending, id)
		c.callMu.Unlock()
	}()

	r := Request{ID: id, Op: op, Body: body}
	if dl, ok := ctx.Deadline(); ok {
		r.TimeoutMS = max(time.Until(dl).Milliseconds(), 1)
	}
	frame, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("bootnet: encode %s request: %w", op, err)
	}
	if err := c.Send(KindRequest, frame); err != nil {
		return err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return res.err
		}
		if resp != nil {
			if err := json.Unmarshal(res.body, resp); err != nil {
				return fmt.Errorf("bootnet: %s: undecodable answer: %w", op, err)
			}
		}
		return nil
	case <-c.done:
		return fmt.Errorf("%w while waiting for %s: %w", ErrConnClosed, op, c.Err())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PendingCalls counts the requests this side sent on c that wait for an
// answer.
func (c *Conn) PendingCalls() int {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	return len(c.pending)
}

// Reply answers the request id received on c: with result (encoded as
// JSON) when rerr is nil, with rerr otherwise.
func (c *Conn) Reply(id uint64, result any, rerr *RemoteError) error {
	resp := response{ID: id, Error: rerr}
	if rerr == nil && result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			resp.Error = &RemoteError{Code: "internal", Message: "answer could not be encoded"}
		} else {
			resp.Body = b
		}
	}
	frame, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("bootnet: encode answer: %w", err)
	}
	return c.Send(KindResponse, frame)
}

// handleResponse hands an answer to the call waiting for it. An answer
// nobody waits for (the caller gave up) is dropped; one that does not
// parse is a protocol error.
func (c *Conn) handleResponse(body []byte) error {
	var resp response
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("%w: undecodable answer: %v", ErrProtocol, err)
	}
	c.callMu.Lock()
	ch, ok := c.pending[resp.ID]
	delete(c.pending, resp.ID)
	c.callMu.Unlock()
	if !ok {
		return nil
	}
	if resp.Error != nil {
		ch <- callResult{err: resp.Error}
	} else {
		ch <- callResult{body: resp.Body}
	}
	return nil
}

func decodeRequest(body []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: undecodable request: %v", ErrProtocol, err)
	}
	if r.ID == 0 || r.Op == "" {
		return nil, fmt.Errorf("%w: request without id or op", ErrProtocol)
	}
	return &r, nil
}
