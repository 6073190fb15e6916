package module

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// Polling POST bodies are read whole before they are proxied (see
// Handler.MaxBody). This file holds them: within a process-wide memory
// budget, in buffers recycled only once nobody can read them any more.

// heldBodyBytes is the memory, in bytes of buffer capacity, that POST
// bodies being read or held for checking use in this process: the measure
// of Handler.MaxBodyMemory. It is process-wide, like the memory it
// protects, and outlives config reloads (requests of the old config
// finish reading under the new one).
var heldBodyBytes atomic.Int64

// reserve counts n more bytes of held bodies if that keeps the total
// within limit.
func reserve(n, limit int64) bool {
	for {
		held := heldBodyBytes.Load()
		if held+n > limit {
			return false
		}
		if heldBodyBytes.CompareAndSwap(held, held+n) {
			return true
		}
	}
}

// heldBody is a POST body read into memory. Its buffer is shared by the
// request's body, by any copy that Go's transport makes through GetBody
// to resend the request, and by the handler until ServeHTTP returns; it is
// recycled only when all of them are done. The transport may read and
// close the body after ServeHTTP returned (its write loop runs apart).
type heldBody struct {
	buf      []byte
	refs     atomic.Int32
	reserved int64 // bytes counted in heldBodyBytes, until ServeHTTP returns
	getBody  func() (io.ReadCloser, error)
}

// bodyReader reads a heldBody; closing it gives its reference back.
type bodyReader struct {
	bytes.Reader
	held   *heldBody
	closed atomic.Bool
}

// Close implements io.Closer.
func (r *bodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.held.unref()
	}
	return nil
}

func (b *heldBody) unref() {
	if b.refs.Add(-1) == 0 && cap(b.buf) <= maxPooledBody {
		b.buf = b.buf[:0]
		heldBodies.Put(b)
	}
}

// heldBodies recycles the buffers of POST bodies; most are a few bytes.
// GetBody is made once per heldBody rather than once per POST.
var heldBodies = sync.Pool{New: func() any {
	b := new(heldBody)
	b.getBody = func() (io.ReadCloser, error) {
		b.refs.Add(1)
		r := &bodyReader{held: b}
		r.Reset(b.buf)
		return r, nil
	}
	return b
}}

// maxPooledBody bounds the buffers kept for reuse, so that one large POST
// does not pin its buffer in the pool.
const maxPooledBody = 64 << 10

// firstBodyChunk is the capacity a body's buffer starts with when the
// pool has none: a usual POST (a Socket.IO event) fits.
const firstBodyChunk = 4 << 10

// Errors of readBody.
var (
	errBodyTooLarge = errors.New("request body larger than max_body")
	errBodyMemory   = errors.New("polling POST bodies held for checking reached max_body_memory")
	errBodyRead     = errors.New("reading request body")
)

// readBody reads the request's body whole, up to limit bytes, with its
// buffer counted against budget, and gives the request a replayable copy
// with its exact length. A body the client cannot deliver intact fails
// here, on the client, rather than half-way to the backend, where
// reverse_proxy would answer 502 and count a failure against a healthy
// node. The buffer grows as bytes arrive, so a client that declares a
// large body and sends little holds little.
func (ex *exchange) readBody(limit, budget int64) error {
	r := ex.req
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ContentLength > limit {
		return errBodyTooLarge
	}
	held := heldBodies.Get().(*heldBody)
	held.refs.Store(1) // the handler's, until releaseBody
	ex.held = held
	buf := held.buf[:0]
	if cap(buf) > 0 {
		// a recycled buffer
		if !reserve(int64(cap(buf)), budget) {
			return errBodyMemory
		}
		held.reserved = int64(cap(buf))
	}
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return errBodyTooLarge
			}
			grown := int64(max(2*cap(buf), firstBodyChunk))
			if r.ContentLength >= 0 && int64(len(buf)) <= r.ContentLength {
				// one byte past the length reads the EOF (a body
				// longer than declared grows as any other)
				grown = min(grown, r.ContentLength+1)
			}
			grown = min(grown, limit+1)
			if !reserve(grown-held.reserved, budget) {
				return errBodyMemory
			}
			held.reserved = grown
			next := make([]byte, len(buf), grown)
			copy(next, buf)
			buf = next
			held.buf = buf
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		held.buf = buf
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errBodyRead, err)
		}
	}
	if int64(len(buf)) > limit {
		return errBodyTooLarge
	}
	held.refs.Add(1) // the request body's
	ex.body.held = held
	ex.body.Reset(buf)
	r.Body = &ex.body
	r.ContentLength = int64(len(buf))
	r.TransferEncoding = nil
	// with GetBody, Go's transport may resend the POST on a fresh
	// connection when the kept-alive one it picked was closed by the
	// node at that moment (Node's keepAliveTimeout is 5 s), which it
	// never does for a body it cannot replay
	r.GetBody = held.getBody
	return nil
}

// releaseBody ends the handler's hold on the body once ServeHTTP is done:
// the memory budget forgets it (the client's part is over) and the buffer
// is recycled as soon as no reader of it remains open.
func (ex *exchange) releaseBody() {
	held := ex.held
	if held == nil {
		return
	}
	ex.held = nil
	heldBodyBytes.Add(-held.reserved)
	held.reserved = 0
	held.unref()
}

// clientBody is the body of a request the handler passes on unread. An
// error reading it is the client's (a malformed chunked body, a client
// gone, a read timeout), so it is reported wrapping context.Canceled:
// reverse_proxy then answers 499 and neither retries the request nor
// counts a failure against the upstream, which did nothing wrong.
type clientBody struct{ io.ReadCloser }

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = clientBodyError{err}
	}
	return n, err
}

// clientBodyError is an error reading a client's request body.
type clientBodyError struct{ err error }

func (e clientBodyError) Error() string {
	return "reading the client's request body: " + e.err.Error()
}

// Unwrap makes the error both context.Canceled (for reverse_proxy) and
// the read error itself.
func (e clientBodyError) Unwrap() []error { return []error{context.Canceled, e.err} }
