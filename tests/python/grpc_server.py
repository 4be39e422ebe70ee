"""A gRPC app for the tests: service echo.Echo, raw-bytes messages (no codegen needed).

- Unary: answers b"echo:" + request, with trailing metadata x-trailer=kept; the request b"fail"
  aborts with UNAVAILABLE.
- Chat (bidirectional streaming): answers every message with b"re:" + message.
With --unavailable, every call fails with UNAVAILABLE (an instance that is down).
With --fail-in-trailers, the response headers go out before the status, so it comes in the
trailers (not a trailers-only answer): b"fail" fails there, and b"slow" succeeds 250 ms after its
headers.
Prints "PORT <n>" once listening on 127.0.0.1."""
import sys
import time
from concurrent import futures

import grpc


UNAVAILABLE_ALWAYS = "--unavailable" in sys.argv[1:]
FAIL_IN_TRAILERS = "--fail-in-trailers" in sys.argv[1:]


def unary(request, context):
    if UNAVAILABLE_ALWAYS:
        context.abort(grpc.StatusCode.UNAVAILABLE, "this instance is down")
    if FAIL_IN_TRAILERS:
        context.send_initial_metadata((("x-headers", "first"),))
        if request == b"slow":
            time.sleep(0.25)
    if request == b"fail":
        context.abort(grpc.StatusCode.UNAVAILABLE, "backend says no")
    context.set_trailing_metadata((("x-trailer", "kept"),))
    return b"echo:" + request


def chat(requests, context):
    for message in requests:
        yield b"re:" + message


handler = grpc.method_handlers_generic_handler(
    "echo.Echo",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print("PORT", port, flush=True)
server.wait_for_termination()
