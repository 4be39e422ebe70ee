"""A WebSocket client for the tests: python ws_client.py PROXY_HOST PROXY_PORT HOST. Connects
through the proxy with Host: HOST, exchanges text and binary messages, exits 0 if all echo."""
import asyncio
import os
import socket
import sys

import websockets


async def main():
    proxy_host, proxy_port, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sock = socket.create_connection((proxy_host, proxy_port))
    async with websockets.connect(f"ws://{host}/chat", sock=sock, max_size=None) as ws:
        for i in range(20):
            text = f"hello {i}"
            await ws.send(text)
            assert await ws.recv() == text
        blob = os.urandom(1024 * 1024)
        await ws.send(blob)
        assert await ws.recv() == blob
    print("ok", flush=True)


asyncio.run(main())
