package module

import (
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

// heldBody is a POST body read into memory, in chunks: a first one that
// fits a usual POST (a Socket.IO event), then bodyChunk-sized ones, so
// that a large body grows without copying (no garbage the size of the
// body for the collector to find later) and a client that declares a
// large body and sends little holds little. The chunks are shared by
// the request's body, by any copy that Go's transport makes through
// GetBody to resend the request, and by the handler until ServeHTTP
// returns; the heldBody is recycled only when all of them are done. The
// transport may read and close the body after ServeHTTP returned (its
// write loop runs apart).
type heldBody struct {
	chunks   [][]byte // each full but the last; chunks[0] is recycled
	size     int64
	refs     atomic.Int32
	reserved int64 // bytes counted in heldBodyBytes, until ServeHTTP returns
	getBody  func() (io.ReadCloser, error)
}

// bodyReader reads a heldBody; closing it gives its reference back.
type bodyReader struct {
	held   *heldBody
	chunk  int // the chunk being read
	off    int // the offset in it
	closed atomic.Bool
}

func (r *bodyReader) reset(held *heldBody) {
	r.held, r.chunk, r.off = held, 0, 0
	r.closed.Store(false)
}

// Read implements io.Reader.
func (r *bodyReader) Read(p []byte) (int, error) {
	chunks := r.held.chunks
	n := 0
	for n < len(p) && r.chunk < len(chunks) {
		k := copy(p[n:], chunks[r.chunk][r.off:])
		n += k
		r.off += k
		if r.off == len(chunks[r.chunk]) {
			r.chunk, r.off = r.chunk+1, 0
		}
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// WriteTo implements io.WriterTo, which io.Copy (and so Go's transport)
// prefers: each chunk goes out in one write.
func (r *bodyReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for chunks := r.held.chunks; r.chunk < len(chunks); r.chunk, r.off = r.chunk+1, 0 {
		rest := chunks[r.chunk][r.off:]
		if len(rest) == 0 {
			continue
		}
		n, err := w.Write(rest)
		total += int64(n)
		r.off += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Close implements io.Closer.
func (r *bodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.held.unref()
	}
	return nil
}

func (b *heldBody) unref() {
	if b.refs.Add(-1) != 0 {
		return
	}
	for _, c := range b.chunks[min(1, len(b.chunks)):] {
		if cap(c) == bodyChunk {
			bodyChunks.Put((*[bodyChunk]byte)(c[:bodyChunk]))
		}
	}
	if len(b.chunks) == 0 || cap(b.chunks[0]) != firstBodyChunk {
		return
	}
	clear(b.chunks[1:])
	b.chunks[0] = b.chunks[0][:0]
	b.chunks = b.chunks[:1]
	b.size = 0
	heldBodies.Put(b)
}

// heldBodies recycles the first chunks of POST bodies; most bodies fit
// in one. GetBody is made once per heldBody rather than once per POST.
var heldBodies = sync.Pool{New: func() any {
	b := new(heldBody)
	b.getBody = func() (io.ReadCloser, error) {
		b.refs.Add(1)
		r := new(bodyReader)
		r.reset(b)
		return r, nil
	}
	return b
}}

// bodyChunks recycles the full-size chunks of large bodies: under a
// flood of large POSTs, the chunks of those refused or done are reused by
// the next instead of waiting for the collector, so that the process
// holds about max_body_memory, not twice as much.
var bodyChunks = sync.Pool{New: func() any { return new([bodyChunk]byte) }}

// firstBodyChunk is the size of a body's first chunk, recycled with its
// heldBody: a usual POST fits. bodyChunk is the size of the next ones.
const (
	firstBodyChunk = 4 << 10
	bodyChunk      = 64 << 10
)

// largeBodyShare is the part of max_body_memory that chunks beyond the
// first may use: large bodies, which a few stalling clients can send, may
// not take the memory that every usual POST needs, so that they cannot
// deny service to every polling session on their own.
func largeBodyShare(budget int64) int64 { return budget - budget/4 }

// Errors of readBody.
var (
	errBodyTooLarge = errors.New("request body larger than max_body")
	errBodyMemory   = errors.New("polling POST bodies held for checking reached max_body_memory")
	errBodyRead     = errors.New("reading request body")
)

// readBody reads the request's body whole, up to limit bytes, with its
// chunks counted against budget, and gives the request a replayable copy
// with its exact length. A body the client cannot deliver intact fails
// here, on the client, rather than half-way to the backend, where
// reverse_proxy would answer 502 and count a failure against a healthy
// node.
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
	if len(held.chunks) == 1 {
		// a recycled first chunk
		if !reserve(firstBodyChunk, budget) {
			return errBodyMemory
		}
		held.reserved = firstBodyChunk
	}
	for {
		last := len(held.chunks) - 1
		if last < 0 || len(held.chunks[last]) == cap(held.chunks[last]) {
			if held.size > limit {
				return errBodyTooLarge
			}
			size, share := int64(firstBodyChunk), budget
			if last >= 0 {
				size, share = bodyChunk, largeBodyShare(budget)
				if r.ContentLength >= 0 && held.size <= r.ContentLength {
					// one byte past the length reads the EOF (a
					// body longer than declared grows as any other)
					size = min(size, r.ContentLength+1-held.size)
				}
				size = min(size, limit+1-held.size)
			}
			if !reserve(size, share) {
				return errBodyMemory
			}
			held.reserved += size
			var chunk []byte
			if size == bodyChunk {
				chunk = bodyChunks.Get().(*[bodyChunk]byte)[:0]
			} else {
				chunk = make([]byte, 0, size)
			}
			held.chunks = append(held.chunks, chunk)
			last++
		}
		chunk := held.chunks[last]
		n, err := r.Body.Read(chunk[len(chunk):cap(chunk)])
		held.chunks[last] = chunk[:len(chunk)+n]
		held.size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %v", errBodyRead, err)
		}
	}
	if held.size > limit {
		return errBodyTooLarge
	}
	held.refs.Add(1) // the request body's
	ex.body.reset(held)
	r.Body = &ex.body
	r.ContentLength = held.size
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
