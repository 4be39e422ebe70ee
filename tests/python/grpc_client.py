"""A gRPC client for the tests: python grpc_client.py TARGET AUTHORITY [--unary-only | --expect-code
CODE | --mix N]. Exits 0 only if unary calls (ok and failing), trailers and bidirectional streaming all
behave; with --unary-only, only if 20 plain unary calls all succeed; with --expect-code, only if a
unary call fails with that status (e.g. PERMISSION_DENIED), whose details it prints; with --mix N,
only if N unary calls alternating b"slow" (succeeds) and b"fail" (UNAVAILABLE) behave so."""
import sys

import grpc

target, authority = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(target, options=[("grpc.default_authority", authority)])
unary = channel.unary_unary("/echo.Echo/Unary")
chat = channel.stream_stream("/echo.Echo/Chat")

if sys.argv[3:4] == ["--expect-code"]:
    expected = grpc.StatusCode[sys.argv[4]]
    try:
        unary(b"hello", timeout=10)
        raise SystemExit("expected %s, the call succeeded" % expected)
    except grpc.RpcError as e:
        assert e.code() == expected, (e.code(), e.details())
        print("ok", e.details(), flush=True)
    raise SystemExit(0)

if sys.argv[3:4] == ["--mix"]:
    for i in range(int(sys.argv[4])):
        if i % 2 == 0:
            assert unary(b"slow", timeout=10) == b"echo:slow"
            continue
        try:
            unary(b"fail", timeout=10)
            raise SystemExit("expected UNAVAILABLE")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
    print("ok", flush=True)
    raise SystemExit(0)

if "--unary-only" in sys.argv[3:]:
    for i in range(20):
        assert unary(b"n%d" % i, timeout=10) == b"echo:n%d" % i
    print("ok", flush=True)
    raise SystemExit(0)

reply, call = unary.with_call(b"hello", timeout=10)
assert reply == b"echo:hello", reply
trailers = dict(call.trailing_metadata())
assert trailers.get("x-trailer") == "kept", trailers

try:
    unary(b"fail", timeout=10)
    raise SystemExit("expected UNAVAILABLE")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
    assert e.details() == "backend says no", e.details()

messages = [b"m%d" % i for i in range(50)]
replies = list(chat(iter(messages), timeout=10))
assert replies == [b"re:" + m for m in messages], replies

big = b"x" * (3 * 1024 * 1024)
reply = unary(big, timeout=30)
assert reply == b"echo:" + big

print("ok", flush=True)
