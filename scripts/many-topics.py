#!/usr/bin/env python3
"""Creates N topics on a running broker over one pipelined connection (raw
protocol, see docs/protocol.md). Usage: many-topics.py N PORT [PREFIX]"""
import socket, struct, sys

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def frame(op, rid, body):
    return struct.pack('<IBBHQ', 12 + len(body), op, 0, 0, rid) + body

def main():
    n, port = int(sys.argv[1]), int(sys.argv[2])
    prefix = sys.argv[3] if len(sys.argv) > 3 else 'many'
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(frame(0x01, 1, bytes([1, 1, 1]) + b'x' + bytes([0, 0])))
    out = bytearray()
    for i in range(n):
        name = f'{prefix}-{i:05d}'.encode()
        # CreateTopic { name, config: TopicConfig { four None options } }
        out += frame(0x30, 2 + i, varint(len(name)) + name + bytes([0, 0, 0, 0]))
    s.sendall(out)
    want, buf, got = n + 1, b'', 0
    while got < want:
        chunk = s.recv(1 << 20)
        if not chunk:
            sys.exit('connection closed')
        buf += chunk
        while len(buf) >= 4:
            ln = struct.unpack_from('<I', buf)[0]
            if len(buf) < 4 + ln:
                break
            if buf[4] == 0x03:
                sys.exit('error reply: %r' % buf[16:4 + ln])
            buf = buf[4 + ln:]
            got += 1
    print(f'created {n} topics')

main()
