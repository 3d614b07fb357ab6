#!/usr/bin/env python3
"""A throwaway Segment-ish endpoint for developing the client scripts without Spoor.

Usage: capture_server.py PORT [STATUS]
Logs every request (method, path, headers, decoded body) to stdout as JSON lines and answers
STATUS (default 200) with {"success": true}. Not used by the test itself.
"""

import gzip
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = body.decode("utf-8", "replace")
        print(json.dumps({"path": self.path, "headers": dict(self.headers), "body": decoded}), flush=True)
        out = json.dumps({"success": True}).encode() if self.status < 400 else b'{"code":"x","message":"refused"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    Handler.status = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
