"""A minimal RESP2 client for the copy benchmarks (redis-py cannot be installed offline).

Pipelining: `send(commands)` writes many commands in one go, `replies(n)` reads n replies.
Errors come back as `RespError` values, not exceptions, like a pipeline that ignores them.
"""
import socket


class RespError(str):
    """A server error reply."""


class Connection:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb", buffering=1 << 20)

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)

    def send(self, commands):
        self.sock.sendall(b"".join(self.encode(c) for c in commands))

    def reply(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.reply() for _ in range(n)]
        raise ValueError("bad reply %r" % line)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def call(self, *args):
        self.send([args])
        return self.reply()
