package main

import (
	"errors"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one chat message as it is stored, published on the broker and sent to clients.
type Message struct {
	ID       int64     `json:"id"`
	Room     string    `json:"room"`
	Sender   string    `json:"sender"`
	Body     string    `json:"body"`
	SentAt   time.Time `json:"sent_at"`
	Instance string    `json:"instance,omitempty"`
}

// Envelope is what a client receives: a message, the room's recent history on joining, or an error.
type Envelope struct {
	Type     string    `json:"type"`
	Message  *Message  `json:"message,omitempty"`
	Messages []Message `json:"messages,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// incoming is what a client sends.
type incoming struct {
	Body string `json:"body"`
}

const (
	maxBodyBytes = 4096
	maxNameRunes = 64
)

var roomName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

var (
	errRoom   = errors.New("room: expected 1-64 lower-case letters, digits, '_' or '-'")
	errSender = errors.New("name: expected 1-64 printable characters")
	errBody   = errors.New("body: expected 1-4096 bytes of text")
)

func validRoom(room string) error {
	if !roomName.MatchString(room) {
		return errRoom
	}
	return nil
}

func validSender(name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 || n > maxNameRunes || strings.TrimSpace(name) == "" || strings.ContainsAny(name, "\r\n\t") {
		return errSender
	}
	return nil
}

func validBody(body string) error {
	if strings.TrimSpace(body) == "" || len(body) > maxBodyBytes || !utf8.ValidString(body) {
		return errBody
	}
	return nil
}
