// Package natsembed runs a nats-server with JetStream inside this process, on a loopback
// port, with a client connected to it: the server `tandem run -jetstream` shows the
// scale-out with, and the one the JetStream tests run against (a real server, not a mock).
package natsembed

import (
	"errors"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running embedded server and a client of it. Close stops both.
type Server struct {
	srv *server.Server
	NC  *nats.Conn
	JS  jetstream.JetStream
}

// Start runs a server storing its streams in storeDir, listening on a free loopback port,
// and connects a client. Errors: the server's options, a server not ready within 10s, or
// the client's connection.
func Start(storeDir string) (*Server, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: storeDir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	go srv.Start()
	s := &Server{srv: srv}
	if !srv.ReadyForConnections(10 * time.Second) {
		s.Close()
		return nil, errors.New("the embedded nats-server did not start within 10s")
	}
	if s.NC, err = nats.Connect(srv.ClientURL()); err != nil {
		s.Close()
		return nil, err
	}
	if s.JS, err = jetstream.New(s.NC); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// URL is the server's client URL.
func (s *Server) URL() string { return s.srv.ClientURL() }

// Version is the server's version.
func (s *Server) Version() string { return server.VERSION }

// Close closes the client and stops the server.
func (s *Server) Close() {
	if s.NC != nil {
		s.NC.Close()
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
