package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemrt/tandem/go/tandem"
	"github.com/tandemrt/tandem/go/tandem/envelope"
)

// The sidecar contender: what a user would build instead of tandem, a Rust process of its own
// (bench/sidecar, a Cargo package of its own) running the same demo handlers, reached over a
// Unix domain socket.
// Each request frame is a big-endian u32 length, a u64 request id and the event envelope
// (the same CBOR bytes tandem puts in a request slot); each response frame is a length, the
// id, a u8 outcome (tandem's: 0 ack, 1 retry, 2 term) and the reply or error envelope.
// Responses come back in completion order, so one connection carries many calls at once.

// sidecarEnv names the sidecar binary; unset, it is sidecarDefault, relative to bench/: the
// sidecar package's own target directory, where ./build.sh builds it.
const (
	sidecarEnv     = "TANDEM_SIDECAR"
	sidecarDefault = "sidecar/target/release/tandem-sidecar"
	sidecarBuild   = "cargo build --release --manifest-path sidecar/Cargo.toml"

	// sidecarMaxFrame is the sidecar's MAX_FRAME: a longer response is a broken stream.
	sidecarMaxFrame = 16 << 20
)

// errSidecarClosed is returned by Call once the client is closed or its connection failed.
var errSidecarClosed = errors.New("sidecar: connection closed")

// sidecarBinary is the path of the sidecar executable, or an error saying how to build it.
func sidecarBinary() (string, error) {
	path := os.Getenv(sidecarEnv)
	if path == "" {
		path = sidecarDefault
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no sidecar binary at %s (build it with `%s`, or set %s): %w",
			path, sidecarBuild, sidecarEnv, err)
	}
	return path, nil
}

// sidecar is a running tandem-sidecar process and a pool of connections to it. Call is
// safe for concurrent use; Close is idempotent and must not race with Call.
type sidecar struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
	socket string
	conns  []*sidecarConn
	next   atomic.Uint32
	once   sync.Once
}

// startSidecar starts the sidecar binary listening on socket (its directory must exist),
// with workers tokio workers for the handlers, and opens conns connections to it.
func startSidecar(binary, socket string, workers, conns int) (*sidecar, error) {
	cmd := exec.Command(binary, "--socket", socket, "--workers", strconv.Itoa(workers))
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("sidecar: start %s: %w", binary, err)
	}
	s := &sidecar{cmd: cmd, exited: make(chan struct{}), socket: socket}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	for range conns {
		c, err := s.dial(5 * time.Second)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.conns = append(s.conns, c)
	}
	return s, nil
}

// dial connects to the socket, retrying until the sidecar listens, exits or timeout passes.
func (s *sidecar) dial(timeout time.Duration) (*sidecarConn, error) {
	deadline := time.Now().Add(timeout)
	for {
		nc, err := net.Dial("unix", s.socket)
		if err == nil {
			return newSidecarConn(nc), nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("sidecar: exited before listening on %s (%v)", s.socket, s.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sidecar: not listening on %s after %v: %w", s.socket, timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Call sends ev to the sidecar and waits for its answer: the outcome (0 ack, 1 retry,
// 2 term) and the reply, or for 1 and 2 the error envelope (envelope.DecodeErrorEnvelope).
// The reply is the caller's; a call with an empty reply allocates nothing.
func (s *sidecar) Call(ev *tandem.Event) (outcome uint8, reply []byte, err error) {
	c := s.conns[int(s.next.Add(1))%len(s.conns)]
	return c.call(ev)
}

// Close closes the connections, stops the process (SIGTERM, then SIGKILL after a second)
// and removes the socket.
func (s *sidecar) Close() error {
	s.once.Do(func() {
		for _, c := range s.conns {
			c.close()
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		_ = os.Remove(s.socket)
	})
	return nil
}

// sidecarResult is one response, handed from a connection's reader to the waiting caller.
type sidecarResult struct {
	outcome uint8
	reply   []byte
	err     error
}

// sidecarCall is a caller's pooled state: its frame buffer and the channel its answer
// arrives on.
type sidecarCall struct {
	frame []byte
	done  chan sidecarResult
}

var sidecarCalls = sync.Pool{New: func() any {
	return &sidecarCall{frame: make([]byte, 0, 2<<10), done: make(chan sidecarResult, 1)}
}}

// sidecarConn is one connection: callers write whole frames, one reader goroutine reads
// the answers and hands each to the caller waiting on its id.
type sidecarConn struct {
	nc     net.Conn
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*sidecarCall
	err     error // set once the connection is unusable; pending calls have been failed

	// Writes are combined: a caller appends its frame to out, and if nobody is writing it
	// becomes the writer and writes out (and whatever others append meanwhile) until it is
	// empty. One goroutine alone writes its own frame directly; many share few writes.
	wmu     sync.Mutex
	out     []byte
	spare   []byte
	writing bool
	werr    error
}

func newSidecarConn(nc net.Conn) *sidecarConn {
	c := &sidecarConn{
		nc:      nc,
		pending: make(map[uint64]*sidecarCall),
		out:     make([]byte, 0, 64<<10),
		spare:   make([]byte, 0, 64<<10),
	}
	go c.readLoop()
	return c
}

func (c *sidecarConn) call(ev *tandem.Event) (uint8, []byte, error) {
	sc := sidecarCalls.Get().(*sidecarCall)
	id := c.nextID.Add(1)
	var header [12]byte // length and id, filled in once the envelope is encoded
	frame, err := envelope.AppendEvent(append(sc.frame[:0], header[:]...), ev)
	if err != nil {
		sc.frame = frame
		sidecarCalls.Put(sc)
		return 0, nil, err
	}
	binary.BigEndian.PutUint32(frame[0:4], uint32(len(frame)-4))
	binary.BigEndian.PutUint64(frame[4:12], id)
	sc.frame = frame

	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		sidecarCalls.Put(sc)
		return 0, nil, err
	}
	c.pending[id] = sc
	c.mu.Unlock()

	if err := c.write(frame); err != nil {
		// The reader fails every pending call once the connection is closed, this one too.
		c.nc.Close()
	}
	r := <-sc.done
	sidecarCalls.Put(sc)
	return r.outcome, r.reply, r.err
}

// write sends one frame, combined with whatever other callers append while a write runs.
func (c *sidecarConn) write(frame []byte) error {
	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	c.out = append(c.out, frame...)
	if c.writing {
		c.wmu.Unlock()
		return nil
	}
	c.writing = true
	for len(c.out) > 0 && c.werr == nil {
		buf := c.out
		c.out = c.spare[:0]
		c.wmu.Unlock()
		_, err := c.nc.Write(buf)
		c.wmu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.werr = err
		}
	}
	c.writing = false
	err := c.werr
	c.wmu.Unlock()
	return err
}

// readLoop reads responses until the connection fails or closes, then fails every call
// still pending.
func (c *sidecarConn) readLoop() {
	r := newSidecarFrameReader(c.nc)
	var err error
	for {
		var id uint64
		var res sidecarResult
		id, res.outcome, res.reply, err = r.next()
		if err != nil {
			break
		}
		c.mu.Lock()
		sc, ok := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if !ok {
			err = fmt.Errorf("sidecar: a response for id %d, which is not pending", id)
			break
		}
		sc.done <- res
	}
	c.nc.Close()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errSidecarClosed
	}
	c.mu.Lock()
	c.err = err
	for id, sc := range c.pending {
		delete(c.pending, id)
		sc.done <- sidecarResult{err: err}
	}
	c.mu.Unlock()
}

func (c *sidecarConn) close() { c.nc.Close() }

// sidecarFrameReader reads response frames through a buffer of its own.
type sidecarFrameReader struct {
	r   io.Reader
	buf []byte
	pos int
	end int
}

func newSidecarFrameReader(r io.Reader) *sidecarFrameReader {
	return &sidecarFrameReader{r: r, buf: make([]byte, 64<<10)}
}

// fill makes at least n bytes available from pos (n <= len(buf)).
func (f *sidecarFrameReader) fill(n int) error {
	if f.end-f.pos >= n {
		return nil
	}
	if f.pos > 0 {
		f.end = copy(f.buf, f.buf[f.pos:f.end])
		f.pos = 0
	}
	for f.end < n {
		m, err := f.r.Read(f.buf[f.end:])
		f.end += m
		if err != nil && f.end < n {
			return err
		}
	}
	return nil
}

// next returns one response; the reply is freshly allocated (nil when empty), so the
// caller may keep it.
func (f *sidecarFrameReader) next() (id uint64, outcome uint8, reply []byte, err error) {
	const header = 4 + 8 + 1
	if err := f.fill(header); err != nil {
		return 0, 0, nil, err
	}
	h := f.buf[f.pos : f.pos+header]
	n := int(binary.BigEndian.Uint32(h[0:4]))
	if n < 9 || n > sidecarMaxFrame {
		return 0, 0, nil, fmt.Errorf("sidecar: response frame of %d bytes", n)
	}
	id, outcome = binary.BigEndian.Uint64(h[4:12]), h[12]
	f.pos += header
	size := n - 9
	if size == 0 {
		return id, outcome, nil, nil
	}
	reply = make([]byte, size)
	got := copy(reply, f.buf[f.pos:f.end])
	f.pos += got
	if got < size {
		if _, err := io.ReadFull(f.r, reply[got:]); err != nil {
			return 0, 0, nil, err
		}
	}
	return id, outcome, reply, nil
}

// sidecarSocket is a socket path in dir short enough for sun_path (108 bytes): t.TempDir()
// can be longer, so the path falls back to one under os.TempDir() named after dir.
func sidecarSocket(dir string) (string, func(), error) {
	path := filepath.Join(dir, "sidecar.sock")
	if len(path) < 100 {
		return path, func() {}, nil
	}
	short, err := os.MkdirTemp("", "tsc")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(short, "s.sock"), func() { os.RemoveAll(short) }, nil
}

// startSidecarTemp starts the sidecar binary with workers tokio workers and conns
// connections, on a socket in a temporary directory that stop removes. Without the binary
// it returns ErrUnavailable.
func startSidecarTemp(workers, conns int) (sc *sidecar, stop func() error, err error) {
	bin, err := sidecarBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	dir, err := os.MkdirTemp("", "tandem-sidecar")
	if err != nil {
		return nil, nil, err
	}
	socket, cleanup, err := sidecarSocket(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	if sc, err = startSidecar(bin, socket, workers, conns); err != nil {
		cleanup()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return sc, func() error {
		err := sc.Close()
		cleanup()
		os.RemoveAll(dir)
		return err
	}, nil
}
