"""A loopback TCP proxy whose connections a test can cut: a real network loss between
the browser and the gateway (the browser's own offline switch leaves open streams be)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

CHUNK_BYTES = 65536


@dataclass
class CuttableProxy:
    """Listens on a free loopback port and forwards each connection to `target_port`."""

    target_port: int
    listener: socket.socket = field(default_factory=socket.socket)
    sockets: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cuts: int = 0
    heads: list[bytes] = field(default_factory=list)  # what browsers sent, chunk by chunk

    def start(self) -> CuttableProxy:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def cut(self) -> None:
        """Close every connection open now; new ones are forwarded as before."""
        with self.lock:
            doomed, self.sockets = self.sockets, []
            self.cuts += 1
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=_pump, args=(client, upstream, self.heads), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client, None), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket, heads: list[bytes] | None) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK_BYTES):
            if heads is not None:
                heads.append(data)  # HTTP/1.1 requests of a connection, as sent
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
