"""A tiny HTTP file server with Range support, for test_download.

usage: range_server.py DIR PORT_FILE LOG_FILE
Serves DIR on 127.0.0.1 (a free port, written to PORT_FILE once listening). Each request
appends "<path> <Range header or ->" to LOG_FILE. Supports "Range: bytes=START-"
(206 with Content-Range; 416 past the end); missing files: 404.
"""
import http.server
import os
import sys
import urllib.parse

root, port_file, log_file = sys.argv[1:4]


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        with open(log_file, "a") as log:
            log.write(f"{self.path} {rng or '-'}\n")
        name = urllib.parse.urlsplit(self.path).path.lstrip("/")
        path = os.path.join(root, name)
        if not name or not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            data = f.read()
        start = 0
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
tmp = port_file + ".tmp"
with open(tmp, "w") as f:
    f.write(str(server.server_address[1]))
os.rename(tmp, port_file)
server.serve_forever()
