"""A local HTTP server in a thread, for the tests of the OpenAI-compatible clients (teacher and backend)."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LocalHTTPServer:
    """``with Subclass(...) as server:`` serves ``handler`` on 127.0.0.1 (a free port) at ``server.url``."""

    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
