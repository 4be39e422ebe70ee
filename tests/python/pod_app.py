"""A pod's app for the interception test: listens on 0.0.0.0 on each port given after its name
and answers every GET with JSON of what it saw — its name, the port, the peer's address and the
request headers — so a test can tell whether a sidecar stood in between. Prints `READY` once
listening on every port."""

import http.server
import json
import sys
import threading


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps(
            {
                "app": sys.argv[1],
                "port": self.server.server_address[1],
                "peer": self.client_address[0],
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


servers = [http.server.ThreadingHTTPServer(("0.0.0.0", int(p)), Echo) for p in sys.argv[2:]]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("READY", flush=True)
servers[0].serve_forever()
