package main

import (
	"context"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait  = 10 * time.Second
	pongWait   = 60 * time.Second
	pingPeriod = 25 * time.Second
	sendBuffer = 256
)

// Client is one WebSocket connection in one room. Its reader stores and publishes what it sends;
// its writer sends it what the hub delivers.
type Client struct {
	app     *App
	conn    *websocket.Conn
	room    string
	name    string
	send    chan Envelope
	closing chan struct{}
	once    sync.Once
	code    int
}

func newClient(app *App, conn *websocket.Conn, room, name string) *Client {
	return &Client{app: app, conn: conn, room: room, name: name, send: make(chan Envelope, sendBuffer),
		closing: make(chan struct{}), code: websocket.CloseNormalClosure}
}

// enqueue hands env to the writer; a client whose buffer is full is disconnected.
func (c *Client) enqueue(env Envelope) bool {
	select {
	case <-c.closing:
		return false
	default:
	}
	select {
	case c.send <- env:
		return true
	default:
		c.stop(websocket.ClosePolicyViolation)
		return false
	}
}

func (c *Client) stop(code int) {
	c.once.Do(func() {
		c.code = code
		close(c.closing)
	})
}

func (c *Client) shutdown() { c.stop(websocket.CloseGoingAway) }

func (c *Client) readLoop() {
	defer c.stop(websocket.CloseNormalClosure)
	c.conn.SetReadLimit(maxBodyBytes * 2)
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { return c.conn.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		var in incoming
		if err := c.conn.ReadJSON(&in); err != nil {
			return
		}
		if err := validBody(in.Body); err != nil {
			c.enqueue(Envelope{Type: "error", Error: err.Error()})
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.app.post(ctx, Message{Room: c.room, Sender: c.name, Body: in.Body})
		cancel()
		if err != nil {
			c.enqueue(Envelope{Type: "error", Error: err.Error()})
		}
	}
}

func (c *Client) writeLoop() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
		_ = c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(c.code, ""))
		_ = c.conn.Close()
	}()
	for {
		select {
		case env := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteJSON(env); err != nil {
				c.stop(websocket.CloseAbnormalClosure)
				return
			}
		case <-ticker.C:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				c.stop(websocket.CloseAbnormalClosure)
				return
			}
		case <-c.closing:
			return
		}
	}
}
