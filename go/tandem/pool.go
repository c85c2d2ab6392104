package tandem

import "sync"

// bufPool recycles byte buffers by pointer, so Get and Put do not allocate.
type bufPool struct{ p sync.Pool }

var directBufs bufPool

func (b *bufPool) get(size int) *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok && cap(*v) >= size {
		return v
	}
	buf := make([]byte, 0, max(size, 512))
	return &buf
}

func (b *bufPool) put(buf *[]byte) { b.p.Put(buf) }
