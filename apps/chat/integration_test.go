package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// TestIntegrationTwoInstancesOverRealPostgreSQLAndRabbitMQ runs when the suite gives it a real
// PostgreSQL (libpq's PG* variables, CHAT_TEST_POSTGRES=1) and a real RabbitMQ (CHAT_TEST_AMQP_URI):
// two instances, one room, a message crosses from one to the other through the broker and is in the
// database; health is ok, and fails naming RabbitMQ once the broker connection is gone.
func TestIntegrationTwoInstancesOverRealPostgreSQLAndRabbitMQ(t *testing.T) {
	uri := os.Getenv("CHAT_TEST_AMQP_URI")
	if os.Getenv("CHAT_TEST_POSTGRES") == "" || uri == "" {
		t.Skip("CHAT_TEST_POSTGRES and CHAT_TEST_AMQP_URI are not set (the pytest suite sets them)")
	}
	exchange := fmt.Sprintf("chat.test.%d", time.Now().UnixNano())
	start := func(name string) (*App, *AMQPBroker, *httptest.Server) {
		store, err := OpenPGStore("")
		if err != nil {
			t.Fatal(err)
		}
		hub := NewHub()
		broker := NewAMQPBroker(uri, exchange, func(m Message) { hub.Deliver(m) })
		app := NewApp(store, broker, hub, name, 10)
		srv := httptest.NewServer(app.Handler(false))
		t.Cleanup(func() { srv.Close(); _ = broker.Close(); _ = store.Close() })
		return app, broker, srv
	}
	a, brokerA, srvA := start("a")
	b, _, srvB := start("b")
	deadline := time.Now().Add(20 * time.Second)
	for _, app := range []*App{a, b} {
		for {
			if _, ok := app.CheckHealth(context.Background()); ok {
				break
			}
			if time.Now().After(deadline) {
				h, _ := app.CheckHealth(context.Background())
				t.Fatalf("%s never healthy: %+v", app.Instance, h)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	room := fmt.Sprintf("it-%d", time.Now().UnixNano()%1000000)
	ann, bob := dial(t, srvA.URL, room, "ann"), dial(t, srvB.URL, room, "bob")
	next(t, ann)
	next(t, bob)
	send(t, ann, "across instances")
	env := next(t, bob)
	if env.Message == nil || env.Message.Body != "across instances" || env.Message.Instance != "a" {
		t.Fatalf("bob got %+v", env)
	}
	stored, err := b.Store.Recent(context.Background(), room, 10)
	if err != nil || len(stored) != 1 || stored[0].ID != env.Message.ID {
		t.Fatalf("stored: %+v %v", stored, err)
	}
	brokerA.mu.Lock()
	_ = brokerA.conn.Close()
	brokerA.mu.Unlock()
	if h, ok := a.CheckHealth(context.Background()); ok || h.Checks["rabbitmq"] == "ok" {
		t.Fatalf("healthy without a broker connection: %+v", h)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		if _, ok := a.CheckHealth(context.Background()); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("did not reconnect to the broker")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
