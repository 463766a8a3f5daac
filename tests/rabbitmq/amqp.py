"""Python run inside a client guest to check a broker as an application would: pika over AMQP,
the password on stdin, one JSON line of result. Used by the rabbitmq role test and the whole-site lab."""

AMQP_PROBE = r'''
import json, sys, uuid
import pika
host, vhost, user, queue = sys.argv[1:5]
password = sys.stdin.read()
try:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host=host, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=10, blocked_connection_timeout=10))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    body = uuid.uuid4().hex
    ch.basic_publish(exchange="", routing_key=queue, body=body)
    got = None
    for _ in range(50):
        method, _props, got = ch.basic_get(queue=queue, auto_ack=True)
        if method:
            break
        conn.sleep(0.1)
    conn.close()
    print(json.dumps({"ok": got is not None and got.decode() == body}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "detail": repr(exc)}))
'''

# A client that stays connected: publishes and gets once, waits for /root/hold.go while serving
# heartbeats, then does it again on the same connection and reports.
AMQP_HOLD = r'''
import json, os, sys, time, uuid
import pika
host, vhost, user, queue = sys.argv[1:5]
password = sys.stdin.read()
conn = pika.BlockingConnection(pika.ConnectionParameters(
    host=host, virtual_host=vhost, credentials=pika.PlainCredentials(user, password), heartbeat=10))
ch = conn.channel()
ch.queue_declare(queue=queue)

def roundtrip():
    body = uuid.uuid4().hex
    ch.basic_publish(exchange="", routing_key=queue, body=body)
    for _ in range(50):
        method, _props, got = ch.basic_get(queue=queue, auto_ack=True)
        if method:
            return got.decode() == body
        conn.sleep(0.1)
    return False

first = roundtrip()
open("/root/hold.ready", "w").close()
deadline = time.monotonic() + 240
while not os.path.exists("/root/hold.go") and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.5)
try:
    second = roundtrip()
    conn.close()
    print(json.dumps({"first": first, "second": second}))
except Exception as exc:
    print(json.dumps({"first": first, "second": False, "error": repr(exc)}))
'''
