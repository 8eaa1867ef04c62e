"""Baseline: a pipelined copy as one would script it by hand. SCAN COUNT 1000, then one
pipeline of PTTL + DUMP for the batch, then one pipeline of RESTORE; sequential.

usage: copy_pipelined.py SOURCE_PORT TARGET_PORT  -> prints the keys copied
"""
import sys

from resp import Connection, RespError

source = Connection("127.0.0.1", int(sys.argv[1]))
target = Connection("127.0.0.1", int(sys.argv[2]))
cursor, copied = b"0", 0
while True:
    cursor, keys = source.call("SCAN", cursor, "COUNT", "1000")
    if keys:
        source.send([c for k in keys for c in (("PTTL", k), ("DUMP", k))])
        replies = source.replies(2 * len(keys))
        restores = []
        for i, key in enumerate(keys):
            ttl, payload = replies[2 * i], replies[2 * i + 1]
            if payload is None or ttl == -2:
                continue
            restores.append(("RESTORE", key, str(max(ttl, 0)), payload, "REPLACE"))
        target.send(restores)
        for reply in target.replies(len(restores)):
            if isinstance(reply, RespError):
                sys.exit("RESTORE failed: %s" % reply)
        copied += len(restores)
    if cursor == b"0":
        break
print(copied)
