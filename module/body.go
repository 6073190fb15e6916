package module

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// requestBody is a request body read into memory.
type requestBody struct{ bytes.Reader }

// Close implements io.Closer.
func (*requestBody) Close() error { return nil }

// pooledBody is a POST body's buffer, recycled across requests, with the
// request's GetBody made once per buffer rather than once per POST.
type pooledBody struct {
	bytes.Buffer
	getBody func() (io.ReadCloser, error)
}

// bodyBuffers recycles the buffers of POST bodies; most are a few bytes.
var bodyBuffers = sync.Pool{New: func() any {
	b := new(pooledBody)
	b.getBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b.Bytes())), nil
	}
	return b
}}

// maxPooledBody bounds the buffers kept for reuse, so that one large POST
// does not pin its buffer in the pool.
const maxPooledBody = 64 << 10

// Errors of readBody.
var (
	errBodyTooLarge = errors.New("request body larger than max_body")
	errBodyRead     = errors.New("reading request body")
)

// readBody reads the request's body whole, up to limit bytes, and gives
// the request a replayable copy with its exact length. A body the client
// cannot deliver intact fails here, on the client, rather than half-way
// to the backend, where reverse_proxy would answer 502 and count a
// failure against a healthy node.
func (ex *exchange) readBody(limit int64) error {
	r := ex.req
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	buf := bodyBuffers.Get().(*pooledBody)
	buf.Reset()
	ex.bodyBuf = buf
	ex.bodyLimit = io.LimitedReader{R: r.Body, N: limit + 1}
	n, err := io.Copy(&buf.Buffer, &ex.bodyLimit)
	if err != nil {
		return fmt.Errorf("%w: %v", errBodyRead, err)
	}
	if n > limit {
		return errBodyTooLarge
	}
	ex.body.Reset(buf.Bytes())
	r.Body = &ex.body
	r.ContentLength = n
	r.TransferEncoding = nil
	// with GetBody, Go's transport may resend the POST on a fresh
	// connection when the kept-alive one it picked was closed by the
	// node at that moment (Node's keepAliveTimeout is 5 s), which it
	// never does for a body it cannot replay (the buffer is not reused
	// before the request is done, so neither is its GetBody)
	r.GetBody = buf.getBody
	return nil
}

// releaseBody returns the body's buffer for reuse once the request is done.
func (ex *exchange) releaseBody() {
	if ex.bodyBuf == nil {
		return
	}
	if ex.bodyBuf.Cap() <= maxPooledBody {
		bodyBuffers.Put(ex.bodyBuf)
	}
	ex.bodyBuf = nil
}
