"""A WebSocket echo server for the tests. Prints "PORT <n>" once listening on 127.0.0.1."""
import asyncio

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main():
    async with websockets.serve(echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print("PORT", port, flush=True)
        await asyncio.Future()


asyncio.run(main())
