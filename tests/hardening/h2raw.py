"""h2raw.py — a bare HTTP/2 client for the hardening tests: gRPC requests
written frame by frame, so a test controls the timing grpcio hides (a
RST_STREAM a millisecond after the request's DATA, a client that never
grants the server a send window). Uncompressed HPACK literals only."""
import socket
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, DATA, RST, SETTINGS = 1, 0, 3, 4
END_STREAM, END_HEADERS = 1, 4


def _hint(v, prefix, first=0):
    m = (1 << prefix) - 1
    if v < m:
        return bytes([first | v])
    out = [first | m]
    v -= m
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def _literal(name, value):
    name, value = name.encode(), value.encode()
    return b"\x00" + _hint(len(name), 7) + name + _hint(len(value), 7) + value


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def grpc_msg(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Conn:
    def __init__(self, addr, window=None):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = struct.pack(">HI", 4, window) if window is not None else b""  # INITIAL_WINDOW_SIZE
        self.s.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.next = 1

    def open(self, path, msg, end=False):
        """HEADERS then one DATA message on a new stream; -> its id"""
        sid, self.next = self.next, self.next + 2
        hb = (_literal(":method", "POST") + _literal(":scheme", "http") + _literal(":path", path) +
              _literal(":authority", "x") + _literal("content-type", "application/grpc") + _literal("te", "trailers"))
        self.s.sendall(frame(HEADERS, END_HEADERS, sid, hb) + frame(DATA, END_STREAM if end else 0, sid, grpc_msg(msg)))
        return sid

    def send_data(self, sid, msgs):
        self.s.sendall(b"".join(frame(DATA, 0, sid, grpc_msg(m)) for m in msgs))

    def rst(self, sid):
        self.s.sendall(frame(RST, 0, sid, struct.pack(">I", 8)))  # CANCEL

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass
