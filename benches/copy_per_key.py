"""Baseline: the per-key migration of seed 004 (TYPE, then HGETALL and HSET of each hash
key, DUMP and RESTORE of anything else; one round trip each, no pipelining), with
redis-py and hiredis, on the first LIMIT keys SCAN returns.

usage: copy_per_key.py SOURCE_PORT TARGET_PORT LIMIT  -> prints the keys copied
"""
import sys

import redis

source = redis.Redis(port=int(sys.argv[1]))
target = redis.Redis(port=int(sys.argv[2]))
limit = int(sys.argv[3])
cursor, copied = 0, 0
while copied < limit:
    cursor, keys = source.scan(cursor, count=1000)
    for key in keys:
        if copied >= limit:
            break
        kind = source.type(key)
        ttl = source.pttl(key)
        if kind == b"hash":
            target.hset(key, mapping=source.hgetall(key))
            if ttl > 0:
                target.pexpire(key, ttl)
        else:
            payload = source.dump(key)
            if payload is not None:
                target.restore(key, max(ttl, 0), payload, replace=True)
        copied += 1
    if cursor == 0:
        break
print(copied)
