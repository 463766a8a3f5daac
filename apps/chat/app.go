package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// App is one instance of the chat service: its store, its broker, the clients connected to it.
type App struct {
	Store    Store
	Broker   Broker
	Hub      *Hub
	Instance string
	History  int

	upgrader websocket.Upgrader
	clients  sync.WaitGroup
}

func NewApp(store Store, broker Broker, hub *Hub, instance string, history int) *App {
	return &App{Store: store, Broker: broker, Hub: hub, Instance: instance, History: history,
		upgrader: websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}}
}

// post stores m, then publishes it: every instance (this one too) delivers it to its clients in
// the room when it comes back from the broker. A message that was stored but not published says so.
func (a *App) post(ctx context.Context, m Message) error {
	m.Instance = a.Instance
	start := time.Now()
	saved, err := a.Store.Save(ctx, m)
	storeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		postErrors.WithLabelValues("store").Inc()
		return fmt.Errorf("not stored: %w", err)
	}
	messagesReceived.Inc()
	if err := a.Broker.Publish(ctx, saved); err != nil {
		postErrors.WithLabelValues("publish").Inc()
		return fmt.Errorf("stored as %d but not delivered: %w", saved.ID, err)
	}
	return nil
}

// Handler serves the clients: /ws, /healthz, /rooms/<room>/messages, and /metrics when withMetrics
// (otherwise MetricsHandler serves it on a listener of its own, kept off the public route).
func (a *App) Handler(withMetrics bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", a.serveWS)
	mux.HandleFunc("/healthz", a.serveHealth)
	mux.HandleFunc("/rooms/", a.serveHistory)
	if withMetrics {
		mux.Handle("/metrics", promhttp.Handler())
	}
	return mux
}

func MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	return mux
}

// serveWS: GET /ws?room=<room>&name=<name>. The client first gets the room's recent history, then
// every message of the room; it sends {"body": "..."}.
func (a *App) serveWS(w http.ResponseWriter, r *http.Request) {
	room, name := r.URL.Query().Get("room"), r.URL.Query().Get("name")
	if err := validRoom(room); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := validSender(name); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	history, err := a.Store.Recent(ctx, room, a.History)
	cancel()
	if err != nil {
		http.Error(w, "history unavailable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	conn, err := a.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	c := newClient(a, conn, room, name)
	c.send <- Envelope{Type: "history", Messages: history}
	a.Hub.Join(c)
	a.clients.Add(1)
	go func() {
		defer a.clients.Done()
		c.writeLoop()
	}()
	go func() {
		c.readLoop()
		a.Hub.Leave(c)
	}()
}

// Health is what /healthz answers: each dependency and its state.
type Health struct {
	Status   string            `json:"status"`
	Checks   map[string]string `json:"checks"`
	Instance string            `json:"instance"`
}

// CheckHealth asks PostgreSQL for a query on the messages table and the broker whether it consumes.
func (a *App) CheckHealth(ctx context.Context) (Health, bool) {
	h := Health{Status: "ok", Checks: map[string]string{}, Instance: a.Instance}
	ok := true
	check := func(name string, err error) {
		if err != nil {
			h.Checks[name] = "down: " + err.Error()
			dependencyUp.WithLabelValues(name).Set(0)
			ok = false
			return
		}
		h.Checks[name] = "ok"
		dependencyUp.WithLabelValues(name).Set(1)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	check("postgresql", a.Store.Ping(ctx))
	check("rabbitmq", a.Broker.Healthy())
	if !ok {
		h.Status = "unavailable"
	}
	return h, ok
}

func (a *App) serveHealth(w http.ResponseWriter, r *http.Request) {
	h, ok := a.CheckHealth(r.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

// serveHistory: GET /rooms/<room>/messages?limit=N, the room's last N messages, oldest first.
func (a *App) serveHistory(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/rooms/"), "/")
	if len(parts) != 2 || parts[1] != "messages" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if err := validRoom(parts[0]); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit := a.History
	if raw := r.URL.Query().Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 1000 {
			http.Error(w, "limit: expected 1-1000", http.StatusBadRequest)
			return
		}
		limit = n
	}
	msgs, err := a.Store.Recent(r.Context(), parts[0], limit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(msgs)
}

// Shutdown tells every client the service is going away and waits (bounded by ctx) until each
// connection is closed.
func (a *App) Shutdown(ctx context.Context) error {
	a.Hub.CloseAll()
	done := make(chan struct{})
	go func() {
		a.clients.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("clients still connected at the deadline")
	}
}
