"""Python's own http.server — a listen backlog of 5, HTTP/1.0 (a connection per request), a
thread per connection — serving a directory on an ephemeral port: the kind of small upstream a
burst of requests must not overflow. Prints `PORT <n>` once listening."""

import functools
import http.server
import sys


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=sys.argv[1]))
assert server.request_queue_size == 5
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
