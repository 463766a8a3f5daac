package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// memStore is a Store in memory; down makes every call fail as a database that is gone would.
type memStore struct {
	mu   sync.Mutex
	msgs []Message
	down error
}

func (s *memStore) Save(_ context.Context, m Message) (Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return m, s.down
	}
	m.ID = int64(len(s.msgs) + 1)
	m.SentAt = time.Now()
	s.msgs = append(s.msgs, m)
	return m, nil
}

func (s *memStore) Recent(_ context.Context, room string, limit int) ([]Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return nil, s.down
	}
	out := []Message{}
	for _, m := range s.msgs {
		if m.Room == room {
			out = append(out, m)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

func (s *memStore) Ping(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

func (s *memStore) Close() error { return nil }

// memBus is a fanout exchange in memory: every broker attached to it delivers every message.
type memBus struct {
	mu      sync.Mutex
	members []*memBroker
}

type memBroker struct {
	bus     *memBus
	deliver func(Message)
	down    error
}

func (bus *memBus) attach(deliver func(Message)) *memBroker {
	b := &memBroker{bus: bus, deliver: deliver}
	bus.mu.Lock()
	bus.members = append(bus.members, b)
	bus.mu.Unlock()
	return b
}

func (b *memBroker) Publish(_ context.Context, m Message) error {
	if b.down != nil {
		return b.down
	}
	b.bus.mu.Lock()
	members := append([]*memBroker(nil), b.bus.members...)
	b.bus.mu.Unlock()
	for _, other := range members {
		other.deliver(m)
	}
	return nil
}

func (b *memBroker) Healthy() error { return b.down }
func (b *memBroker) Close() error   { return nil }

type instance struct {
	app    *App
	store  *memStore
	broker *memBroker
	srv    *httptest.Server
}

func newInstance(t *testing.T, store *memStore, bus *memBus, name string) *instance {
	t.Helper()
	hub := NewHub()
	broker := bus.attach(func(m Message) { hub.Deliver(m) })
	app := NewApp(store, broker, hub, name, 10)
	srv := httptest.NewServer(app.Handler(true))
	t.Cleanup(srv.Close)
	return &instance{app: app, store: store, broker: broker, srv: srv}
}

func dial(t *testing.T, base, room, name string) *websocket.Conn {
	t.Helper()
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws?room=" + room + "&name=" + name
	conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func next(t *testing.T, conn *websocket.Conn) Envelope {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	var env Envelope
	if err := conn.ReadJSON(&env); err != nil {
		t.Fatalf("read: %v", err)
	}
	return env
}

func send(t *testing.T, conn *websocket.Conn, body string) {
	t.Helper()
	if err := conn.WriteJSON(map[string]string{"body": body}); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestValidation(t *testing.T) {
	for _, room := range []string{"general", "a", "team-1_x"} {
		if validRoom(room) != nil {
			t.Errorf("room %q refused", room)
		}
	}
	for _, room := range []string{"", "General", "-x", "a b", "a/b", strings.Repeat("a", 65)} {
		if validRoom(room) == nil {
			t.Errorf("room %q accepted", room)
		}
	}
	if validSender("Ann") != nil || validSender("") == nil || validSender("a\nb") == nil || validSender("  ") == nil {
		t.Error("sender names")
	}
	if validBody("hi") != nil || validBody(" ") == nil || validBody(strings.Repeat("x", maxBodyBytes+1)) == nil ||
		validBody("\xff") == nil {
		t.Error("bodies")
	}
}

func TestTwoClientsInARoomGetEachOthersMessagesAndOtherRoomsDoNot(t *testing.T) {
	store := &memStore{}
	a := newInstance(t, store, &memBus{}, "a")
	ann, bob, eve := dial(t, a.srv.URL, "general", "ann"), dial(t, a.srv.URL, "general", "bob"), dial(t, a.srv.URL, "other", "eve")
	for _, c := range []*websocket.Conn{ann, bob, eve} {
		if env := next(t, c); env.Type != "history" || len(env.Messages) != 0 {
			t.Fatalf("first envelope: %+v", env)
		}
	}
	send(t, ann, "hello bob")
	for _, c := range []*websocket.Conn{ann, bob} {
		env := next(t, c)
		if env.Type != "message" || env.Message.Body != "hello bob" || env.Message.Sender != "ann" || env.Message.ID != 1 {
			t.Fatalf("got %+v", env)
		}
	}
	_ = eve.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var env Envelope
	if err := eve.ReadJSON(&env); err == nil {
		t.Fatalf("a client of another room got %+v", env)
	}
	if len(store.msgs) != 1 || store.msgs[0].Room != "general" || store.msgs[0].Instance != "a" {
		t.Fatalf("stored: %+v", store.msgs)
	}
}

func TestAJoiningClientGetsTheRoomsHistory(t *testing.T) {
	store := &memStore{}
	a := newInstance(t, store, &memBus{}, "a")
	ann := dial(t, a.srv.URL, "general", "ann")
	next(t, ann)
	send(t, ann, "first")
	next(t, ann)
	bob := dial(t, a.srv.URL, "general", "bob")
	if env := next(t, bob); len(env.Messages) != 1 || env.Messages[0].Body != "first" {
		t.Fatalf("history: %+v", env)
	}
}

func TestTwoInstancesShareARoomThroughTheBroker(t *testing.T) {
	store, bus := &memStore{}, &memBus{}
	a, b := newInstance(t, store, bus, "a"), newInstance(t, store, bus, "b")
	ann, bob := dial(t, a.srv.URL, "general", "ann"), dial(t, b.srv.URL, "general", "bob")
	next(t, ann)
	next(t, bob)
	send(t, bob, "from b")
	if env := next(t, ann); env.Message == nil || env.Message.Body != "from b" || env.Message.Instance != "b" {
		t.Fatalf("ann got %+v", env)
	}
}

func TestAnInvalidMessageIsRefusedToItsSenderOnly(t *testing.T) {
	a := newInstance(t, &memStore{}, &memBus{}, "a")
	ann := dial(t, a.srv.URL, "general", "ann")
	next(t, ann)
	send(t, ann, "   ")
	if env := next(t, ann); env.Type != "error" || !strings.Contains(env.Error, "body") {
		t.Fatalf("got %+v", env)
	}
}

func TestAMessageStoredButNotPublishedSaysSo(t *testing.T) {
	a := newInstance(t, &memStore{}, &memBus{}, "a")
	ann := dial(t, a.srv.URL, "general", "ann")
	next(t, ann)
	a.broker.down = errBrokerDown
	send(t, ann, "lost?")
	if env := next(t, ann); env.Type != "error" || !strings.Contains(env.Error, "stored as 1 but not delivered") {
		t.Fatalf("got %+v", env)
	}
}

func health(t *testing.T, base string) (int, Health) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, h
}

func TestHealthFailsWhenEitherDependencyIsDownAndNamesIt(t *testing.T) {
	a := newInstance(t, &memStore{}, &memBus{}, "a")
	if code, h := health(t, a.srv.URL); code != 200 || h.Checks["postgresql"] != "ok" || h.Checks["rabbitmq"] != "ok" {
		t.Fatalf("healthy: %d %+v", code, h)
	}
	a.broker.down = errBrokerDown
	if code, h := health(t, a.srv.URL); code != 503 || !strings.HasPrefix(h.Checks["rabbitmq"], "down") || h.Checks["postgresql"] != "ok" {
		t.Fatalf("broker down: %d %+v", code, h)
	}
	a.broker.down = nil
	a.store.down = errors.New("connection refused")
	if code, h := health(t, a.srv.URL); code != 503 || h.Checks["postgresql"] != "down: connection refused" {
		t.Fatalf("database down: %d %+v", code, h)
	}
	a.store.down = nil
	if code, _ := health(t, a.srv.URL); code != 200 {
		t.Fatalf("recovered: %d", code)
	}
}

func TestMetricsAreServed(t *testing.T) {
	a := newInstance(t, &memStore{}, &memBus{}, "a")
	health(t, a.srv.URL)
	resp, err := http.Get(a.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := new(strings.Builder)
	_, _ = io.Copy(buf, resp.Body)
	for _, name := range []string{"chat_clients_connected", "chat_dependency_up{dependency=\"rabbitmq\"} 1", "go_goroutines"} {
		if !strings.Contains(buf.String(), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestShutdownTellsClientsTheServiceIsGoingAway(t *testing.T) {
	a := newInstance(t, &memStore{}, &memBus{}, "a")
	ann := dial(t, a.srv.URL, "general", "ann")
	next(t, ann)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_ = ann.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, _, err := ann.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("expected close 1001, got %v", err)
	}
}

func TestHistoryEndpointAndBadRequests(t *testing.T) {
	store := &memStore{}
	a := newInstance(t, store, &memBus{}, "a")
	_, _ = store.Save(context.Background(), Message{Room: "general", Sender: "ann", Body: "x"})
	resp, err := http.Get(a.srv.URL + "/rooms/general/messages?limit=5")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	_ = json.NewDecoder(resp.Body).Decode(&msgs)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(msgs) != 1 || msgs[0].Body != "x" {
		t.Fatalf("history: %d %+v", resp.StatusCode, msgs)
	}
	for _, path := range []string{"/rooms/Bad/messages", "/rooms/general/messages?limit=0", "/ws?room=general", "/ws?room=&name=x"} {
		resp, err := http.Get(a.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}
