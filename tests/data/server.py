"""A real HTTP server on 127.0.0.1, in a thread, serving a folder (a dataset mirror) for the
download tests, with per-path misbehaviour: ``cut`` (announce the full Content-Length, send half,
close), ``stall`` (send half, then go silent), ``slow`` (send in small timed chunks)."""

import contextlib
import functools
import http.server
import threading
import time


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
        mode = srv.modes.get(self.path)
        if mode is None:
            return super().do_GET()
        path = self.translate_path(self.path)
        with open(path, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "slow":
            step = max(1, len(data) // 16)
            for i in range(0, len(data), step):
                self.wfile.write(data[i : i + step])
                self.wfile.flush()
                time.sleep(0.02)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if mode == "stall":
            time.sleep(2.0)
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def serve(folder):
    """``(server, base_url)``; ``server.hits`` counts GETs per path, ``server.modes`` sets a
    path's misbehaviour."""
    srv = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    srv.hits, srv.modes, srv.lock = {}, {}, threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
