package main

import "sync"

// Hub knows the clients connected to this instance, by room, and delivers a message to those of
// its room. Messages reach it from the broker, so every instance delivers every message.
type Hub struct {
	mu    sync.RWMutex
	rooms map[string]map[*Client]struct{}
}

func NewHub() *Hub {
	return &Hub{rooms: make(map[string]map[*Client]struct{})}
}

func (h *Hub) Join(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.rooms[c.room]
	if members == nil {
		members = make(map[*Client]struct{})
		h.rooms[c.room] = members
	}
	members[c] = struct{}{}
	connectedClients.Inc()
}

func (h *Hub) Leave(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	members := h.rooms[c.room]
	if _, ok := members[c]; !ok {
		return
	}
	delete(members, c)
	if len(members) == 0 {
		delete(h.rooms, c.room)
	}
	connectedClients.Dec()
}

// Deliver queues m for every client in its room; a client too slow to keep up is dropped rather
// than holding the others back.
func (h *Hub) Deliver(m Message) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	sent := 0
	for c := range h.rooms[m.Room] {
		if c.enqueue(Envelope{Type: "message", Message: &m}) {
			sent++
		}
	}
	messagesDelivered.Add(float64(sent))
	return sent
}

// Clients is how many clients are in room.
func (h *Hub) Clients(room string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms[room])
}

// CloseAll tells every client the service is going away (graceful shutdown).
func (h *Hub) CloseAll() {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, members := range h.rooms {
		for c := range members {
			c.shutdown()
		}
	}
}
