"""An OTLP/HTTP trace receiver for the tests: decodes each `POST /v1/traces` body as an
ExportTraceServiceRequest with the official OpenTelemetry protobuf definitions (the
`opentelemetry-proto` package), keeps its spans, and answers with an ExportTraceServiceResponse.

`GET /spans` answers every span received so far as a JSON list: ids as lowercase hex (the
parent's empty for a root), the kind's name (`SPAN_KIND_CLIENT`...), attributes as a flat object,
the status code's name, and the resource's `service.name`. A body that does not decode answers 400
and is counted in `GET /spans`'s `X-Bad-Requests` header.

With `--tls CERT KEY` it serves https with that certificate chain and key.
Prints "PORT <n>" once listening on 127.0.0.1."""
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

LOCK = threading.Lock()
SPANS = []
BAD = [0]


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def span_json(span, service):
    return {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "parentSpanId": span.parent_span_id.hex(),
        "name": span.name,
        "kind": Span.SpanKind.Name(span.kind),
        "startNanos": span.start_time_unix_nano,
        "endNanos": span.end_time_unix_nano,
        "attributes": {a.key: any_value(a.value) for a in span.attributes},
        "status": Status.StatusCode.Name(span.status.code),
        "service": service,
    }


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            return self.answer(404, b"", "text/plain")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError:
            with LOCK:
                BAD[0] += 1
            return self.answer(400, b"", "text/plain")
        spans = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: any_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans.extend(span_json(s, attrs.get("service.name")) for s in scope_spans.spans)
        with LOCK:
            SPANS.extend(spans)
        self.answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

    def do_GET(self):
        with LOCK:
            body, bad = json.dumps(SPANS).encode(), BAD[0]
        self.answer(200, body, "application/json", {"X-Bad-Requests": str(bad)})

    def answer(self, status, body, content_type, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if sys.argv[1:2] == ["--tls"]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
