package main

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"

	_ "github.com/lib/pq"
)

// Store keeps the messages.
type Store interface {
	Save(ctx context.Context, m Message) (Message, error)
	Recent(ctx context.Context, room string, limit int) ([]Message, error)
	Ping(ctx context.Context) error
	Close() error
}

const schema = `
CREATE TABLE IF NOT EXISTS messages (
    id       bigserial PRIMARY KEY,
    room     text NOT NULL,
    sender   text NOT NULL,
    body     text NOT NULL,
    instance text NOT NULL DEFAULT '',
    sent_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id);
`

var errSchema = errors.New("the messages table is not there yet")

// PGStore is the store in PostgreSQL. The connection comes from libpq's environment variables
// (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE), so no secret is on a command line.
type PGStore struct {
	db    *sql.DB
	ready atomic.Bool
}

func OpenPGStore(dsn string) (*PGStore, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(8)
	return &PGStore{db: db}, nil
}

// Migrate creates the table once the database answers; the service starts without it and keeps
// trying, so it comes up before its database does.
func (s *PGStore) Migrate(ctx context.Context) error {
	if s.ready.Load() {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return err
	}
	s.ready.Store(true)
	return nil
}

func (s *PGStore) Save(ctx context.Context, m Message) (Message, error) {
	if err := s.Migrate(ctx); err != nil {
		return m, err
	}
	err := s.db.QueryRowContext(ctx,
		`INSERT INTO messages (room, sender, body, instance) VALUES ($1, $2, $3, $4) RETURNING id, sent_at`,
		m.Room, m.Sender, m.Body, m.Instance).Scan(&m.ID, &m.SentAt)
	return m, err
}

func (s *PGStore) Recent(ctx context.Context, room string, limit int) ([]Message, error) {
	if err := s.Migrate(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, room, sender, body, instance, sent_at FROM
		(SELECT * FROM messages WHERE room = $1 ORDER BY id DESC LIMIT $2) AS recent ORDER BY id`, room, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Message{}
	for rows.Next() {
		var m Message
		if err := rows.Scan(&m.ID, &m.Room, &m.Sender, &m.Body, &m.Instance, &m.SentAt); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Ping is healthy only when the database answers a query and the table exists.
func (s *PGStore) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return err
	}
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	var one int
	if err := s.db.QueryRowContext(ctx, `SELECT 1 FROM messages LIMIT 1`).Scan(&one); err != nil && !errors.Is(err, sql.ErrNoRows) {
		s.ready.Store(false)
		return errSchema
	}
	return nil
}

func (s *PGStore) Close() error { return s.db.Close() }
