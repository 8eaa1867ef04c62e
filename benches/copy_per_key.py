"""Baseline: the per-key migration of seed 004 (TYPE, then HGETALL and HSET of each hash
key, one round trip each, no pipelining), on the first LIMIT keys SCAN returns.

usage: copy_per_key.py SOURCE_PORT TARGET_PORT LIMIT  -> prints the keys copied
"""
import sys

from resp import Connection

source = Connection("127.0.0.1", int(sys.argv[1]))
target = Connection("127.0.0.1", int(sys.argv[2]))
limit = int(sys.argv[3])
cursor, copied = b"0", 0
while copied < limit:
    cursor, keys = source.call("SCAN", cursor, "COUNT", "1000")
    for key in keys:
        if copied >= limit:
            break
        kind = source.call("TYPE", key)
        if kind == "hash":
            fields = source.call("HGETALL", key)
            target.call("HSET", key, *fields)
        else:
            payload = source.call("DUMP", key)
            if payload is not None:
                target.call("RESTORE", key, "0", payload, "REPLACE")
        copied += 1
    if cursor == b"0":
        break
print(copied)
