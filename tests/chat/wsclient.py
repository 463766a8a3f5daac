"""WebSocket clients of the chat service (aiohttp), for the lab tests and the benchmark: a name can be
pinned to an address (the lab's public names are not in any DNS the host asks), TLS verified against
a given CA file."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import uuid

import aiohttp
from aiohttp.abc import AbstractResolver


class PinnedResolver(AbstractResolver):
    """Resolves the names in ``pins`` to their addresses and nothing else."""

    def __init__(self, pins: dict[str, str]):
        self.pins = pins

    async def resolve(self, host, port=0, family=socket.AF_INET):
        if host not in self.pins:
            raise OSError(f"{host} is not pinned")
        return [{"hostname": host, "host": self.pins[host], "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        return None


def session(pins: dict[str, str] | None = None, cafile: str | None = None) -> aiohttp.ClientSession:
    ssl_ctx = ssl.create_default_context(cafile=cafile) if cafile else None
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(pins) if pins else None, ssl=ssl_ctx or True,
                                     force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def receive(ws, kind: str, timeout: float = 10) -> dict:
    """The next envelope of type ``kind`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"the service closed the connection: {msg.type} {msg.data} {msg.extra}")
        env = json.loads(msg.data)
        if env["type"] == kind:
            return env
        if env["type"] == "error":
            raise RuntimeError(env["error"])


async def exchange(base_a: str, base_b: str, room: str, pins=None, cafile=None) -> dict:
    """Ann joins through ``base_a`` and Bob through ``base_b`` (ws:// or wss:// URLs of the service);
    each sends one message and each receives the other's. Returns what they got and the history a
    late joiner sees."""
    async with session(pins, cafile) as http:
        ann = await http.ws_connect(f"{base_a}/ws?room={room}&name=ann")
        bob = await http.ws_connect(f"{base_b}/ws?room={room}&name=bob")
        await receive(ann, "history")
        await receive(bob, "history")
        tag = uuid.uuid4().hex[:8]
        await ann.send_json({"body": f"hello bob {tag}"})
        got = {"bob": (await receive(bob, "message"))["message"]}
        got["ann_echo"] = (await receive(ann, "message"))["message"]
        await bob.send_json({"body": f"hello ann {tag}"})
        got["ann"] = (await receive(ann, "message"))["message"]
        await receive(bob, "message")
        await ann.close()
        await bob.close()
        got["tag"] = tag
        return got


async def history(base: str, room: str, pins=None, cafile=None) -> list[dict]:
    async with session(pins, cafile) as http:
        ws = await http.ws_connect(f"{base}/ws?room={room}&name=reader")
        env = await receive(ws, "history")
        await ws.close()
        return env["messages"]


def run(coro):
    return asyncio.run(coro)


async def get_json(url: str, pins=None, cafile=None) -> tuple[int, dict]:
    """GET ``url``: its status and JSON body (the health check, through the proxy or directly); a body
    that is not JSON (the proxy's 502 page while the service restarts) comes back as ``{"text": ...}``."""
    async with session(pins, cafile) as http:
        async with http.get(url) as resp:
            text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, {"text": text}
