#!/usr/bin/env python3
"""Static file server for the device tests, on loopback only.

    httpd.py DIR PORTFILE

Serves DIR on 127.0.0.1 at a free port, writes the port to PORTFILE, logs
nothing. The guests reach it through QEMU's guestfwd (10.0.2.100:80).
Stops on SIGTERM, or by itself after 4 hours.
"""
import functools
import http.server
import os
import signal
import sys
import threading


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def main():
    directory, portfile = sys.argv[1], sys.argv[2]
    handler = functools.partial(Handler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(tmp, portfile)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    timer = threading.Timer(4 * 3600, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
