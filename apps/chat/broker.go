package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Broker fans a message out to every instance of the service (each delivers it to its own clients).
type Broker interface {
	Publish(ctx context.Context, m Message) error
	Healthy() error
	Close() error
}

var errBrokerDown = errors.New("not connected to the message broker")

// AMQPBroker publishes to a fanout exchange on the service's vhost and consumes through an
// exclusive queue of its own bound to it. When the broker goes away it reconnects by itself
// (every second, up to every 5 s) and is unhealthy until it is consuming again.
type AMQPBroker struct {
	uri      string
	exchange string
	deliver  func(Message)

	mu      sync.Mutex
	conn    *amqp.Connection
	pub     *amqp.Channel
	lastErr error

	stop chan struct{}
	done chan struct{}
}

func NewAMQPBroker(uri, exchange string, deliver func(Message)) *AMQPBroker {
	b := &AMQPBroker{uri: uri, exchange: exchange, deliver: deliver, lastErr: errBrokerDown,
		stop: make(chan struct{}), done: make(chan struct{})}
	go b.run()
	return b
}

func (b *AMQPBroker) run() {
	defer close(b.done)
	backoff := time.Second
	for {
		closed, err := b.connect()
		if err != nil {
			b.setState(nil, nil, err)
			log.Printf("broker: %v (retrying in %s)", err, backoff)
			select {
			case <-b.stop:
				return
			case <-time.After(backoff):
			}
			if backoff < 5*time.Second {
				backoff += time.Second
			}
			continue
		}
		backoff = time.Second
		brokerUp.Set(1)
		log.Printf("broker: consuming from exchange %s", b.exchange)
		select {
		case <-b.stop:
			b.mu.Lock()
			if b.conn != nil {
				_ = b.conn.Close()
			}
			b.mu.Unlock()
			return
		case cerr := <-closed:
			reason := errBrokerDown
			if cerr != nil {
				reason = cerr
			}
			b.setState(nil, nil, reason)
			log.Printf("broker: connection lost: %v", reason)
		}
	}
}

func (b *AMQPBroker) setState(conn *amqp.Connection, pub *amqp.Channel, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.conn, b.pub, b.lastErr = conn, pub, err
	if err != nil {
		brokerUp.Set(0)
	}
}

func (b *AMQPBroker) connect() (chan *amqp.Error, error) {
	conn, err := amqp.DialConfig(b.uri, amqp.Config{Heartbeat: 10 * time.Second, Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (chan *amqp.Error, error) {
		_ = conn.Close()
		return nil, err
	}
	sub, err := conn.Channel()
	if err != nil {
		return fail(err)
	}
	if err := sub.ExchangeDeclare(b.exchange, "fanout", true, false, false, false, nil); err != nil {
		return fail(err)
	}
	q, err := sub.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fail(err)
	}
	if err := sub.QueueBind(q.Name, "", b.exchange, false, nil); err != nil {
		return fail(err)
	}
	deliveries, err := sub.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return fail(err)
	}
	pub, err := conn.Channel()
	if err != nil {
		return fail(err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		for d := range deliveries {
			var m Message
			if err := json.Unmarshal(d.Body, &m); err != nil {
				log.Printf("broker: dropped a message that is not JSON: %v", err)
				continue
			}
			b.deliver(m)
		}
	}()
	b.setState(conn, pub, nil)
	return closed, nil
}

func (b *AMQPBroker) Publish(ctx context.Context, m Message) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	b.mu.Lock()
	pub, state := b.pub, b.lastErr
	b.mu.Unlock()
	if pub == nil {
		return state
	}
	return pub.PublishWithContext(ctx, b.exchange, m.Room, false, false,
		amqp.Publishing{ContentType: "application/json", Body: body, Timestamp: m.SentAt})
}

func (b *AMQPBroker) Healthy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastErr != nil {
		return b.lastErr
	}
	if b.conn == nil || b.conn.IsClosed() || b.pub == nil || b.pub.IsClosed() {
		return errBrokerDown
	}
	return nil
}

func (b *AMQPBroker) Close() error {
	close(b.stop)
	<-b.done
	return nil
}
