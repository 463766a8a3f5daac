// Command chat is the platform's example Go service: chat rooms over WebSocket, messages stored
// in PostgreSQL and fanned out through RabbitMQ, so any number of instances share a room.
//
// Configuration is the environment (the role writes it to a 0600 file systemd reads):
//
//	CHAT_LISTEN        address to listen on (default :8080)
//	CHAT_METRICS_LISTEN  address of a listener of its own for /metrics (default: /metrics on CHAT_LISTEN)
//	PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE   libpq's own variables
//	CHAT_AMQP_HOST, CHAT_AMQP_PORT, CHAT_AMQP_VHOST, CHAT_AMQP_USER, CHAT_AMQP_PASSWORD
//	CHAT_EXCHANGE      the fanout exchange (default chat.messages)
//	CHAT_HISTORY       messages a client gets on joining (default 50)
//	CHAT_INSTANCE      this instance's name in stored messages (default host name and pid)
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// version is set at build time (-ldflags "-X main.version=<commit>").
var version = "dev"

func env(key, fallback string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return fallback
}

func amqpURI() (string, error) {
	port, err := strconv.Atoi(env("CHAT_AMQP_PORT", "5672"))
	if err != nil {
		return "", fmt.Errorf("CHAT_AMQP_PORT: %w", err)
	}
	return amqp.URI{Scheme: "amqp", Host: env("CHAT_AMQP_HOST", "localhost"), Port: port,
		Username: env("CHAT_AMQP_USER", "chat"), Password: os.Getenv("CHAT_AMQP_PASSWORD"),
		Vhost: env("CHAT_AMQP_VHOST", "/")}.String(), nil
}

func run() error {
	history, err := strconv.Atoi(env("CHAT_HISTORY", "50"))
	if err != nil || history < 0 {
		return fmt.Errorf("CHAT_HISTORY: expected a number of messages, got %q", os.Getenv("CHAT_HISTORY"))
	}
	uri, err := amqpURI()
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	instance := env("CHAT_INSTANCE", fmt.Sprintf("%s-%d", host, os.Getpid()))

	store, err := OpenPGStore("")
	if err != nil {
		return err
	}
	hub := NewHub()
	broker := NewAMQPBroker(uri, env("CHAT_EXCHANGE", "chat.messages"), func(m Message) { hub.Deliver(m) })
	app := NewApp(store, broker, hub, instance, history)

	metricsAddr := os.Getenv("CHAT_METRICS_LISTEN")
	servers := []*http.Server{{Addr: env("CHAT_LISTEN", ":8080"), Handler: app.Handler(metricsAddr == ""),
		ReadHeaderTimeout: 10 * time.Second}}
	if metricsAddr != "" {
		servers = append(servers, &http.Server{Addr: metricsAddr, Handler: MetricsHandler(), ReadHeaderTimeout: 10 * time.Second})
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	failed := make(chan error, len(servers))
	for _, srv := range servers {
		srv := srv
		go func() {
			log.Printf("chat %s (%s) listening on %s", version, instance, srv.Addr)
			if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		}()
	}
	select {
	case err := <-failed:
		return err
	case <-ctx.Done():
	}
	log.Printf("shutting down: closing the listener and telling clients")
	grace, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(grace); err != nil {
			log.Printf("http %s: %v", srv.Addr, err)
		}
	}
	if err := app.Shutdown(grace); err != nil {
		log.Printf("clients: %v", err)
	}
	_ = broker.Close()
	return store.Close()
}

func main() {
	log.SetFlags(0)
	if len(os.Args) > 1 && os.Args[1] == "-version" {
		fmt.Println(version)
		return
	}
	if err := run(); err != nil {
		log.Fatal(err)
	}
	log.Printf("stopped")
}
