package main

import "github.com/prometheus/client_golang/prometheus"

var (
	connectedClients = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "chat_clients_connected", Help: "WebSocket clients connected to this instance."})
	messagesReceived = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chat_messages_received_total", Help: "Messages sent by this instance's clients and stored."})
	messagesDelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "chat_messages_delivered_total", Help: "Messages written to this instance's clients."})
	postErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_post_errors_total", Help: "Messages that could not be stored or published, by step."},
		[]string{"step"})
	storeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "chat_message_store_seconds", Help: "Time to store one message in PostgreSQL.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	brokerUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "chat_broker_connected", Help: "1 when this instance consumes from RabbitMQ."})
	dependencyUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chat_dependency_up", Help: "The last health check of each dependency (1 up, 0 down)."},
		[]string{"dependency"})
)

func init() {
	prometheus.MustRegister(connectedClients, messagesReceived, messagesDelivered, postErrors, storeSeconds,
		brokerUp, dependencyUp)
}
