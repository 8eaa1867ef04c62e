"""Checks a copy by content: every key on the target has the same value (DEBUG
DIGEST-VALUE) and the same TTL presence as on the source; with --all, the two datasets
are identical (DEBUG DIGEST, which covers every key, value and TTL presence, and DBSIZE).

usage: same_content.py SOURCE_PORT TARGET_PORT [--all]  -> prints what it checked
"""
import sys

import redis

source = redis.Redis(port=int(sys.argv[1]))
target = redis.Redis(port=int(sys.argv[2]))
if "--all" in sys.argv:
    ours, theirs = source.execute_command("DEBUG", "DIGEST"), target.execute_command("DEBUG", "DIGEST")
    keys = source.dbsize()
    if ours != theirs or keys != target.dbsize():
        sys.exit(f"different datasets: digest {ours} / {theirs}, keys {keys} / {target.dbsize()}")
    print(f"identical datasets: {keys} keys, digest {ours.decode() if isinstance(ours, bytes) else ours}")
    sys.exit(0)
checked, cursor = 0, 0
while True:
    cursor, keys = target.scan(cursor, count=1000)
    if keys:
        pipes = []
        for server in (source, target):
            pipe = server.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("DEBUG", "DIGEST-VALUE", key)
                pipe.pttl(key)
            pipes.append(pipe.execute())
        for i, key in enumerate(keys):
            ours, theirs = pipes[0][2 * i : 2 * i + 2], pipes[1][2 * i : 2 * i + 2]
            if ours[0] != theirs[0] or (ours[1] < 0) != (theirs[1] < 0):
                sys.exit(f"`{key!r}` differs: {ours} / {theirs}")
        checked += len(keys)
    if cursor == 0:
        break
print(f"{checked} keys identical to the source's")
