"""Checks a copy by content: every key on the target has the same value (DEBUG
DIGEST-VALUE) and the same TTL presence as on the source; with --all, the two datasets
are identical (DEBUG DIGEST, which covers every key, value and TTL presence, and DBSIZE).

With --rename FROM TO (a sync or copy that renamed every key of the source), each
target key TO<rest> is compared with the source's FROM<rest>, every target key must
start with TO, and both hold as many keys.

usage: same_content.py SOURCE_PORT TARGET_PORT [--all | --rename FROM TO]  -> prints what it checked
"""
import sys

import redis

source = redis.Redis(port=int(sys.argv[1]))
target = redis.Redis(port=int(sys.argv[2]))
rename = None
if "--rename" in sys.argv:
    i = sys.argv.index("--rename")
    rename = (sys.argv[i + 1].encode(), sys.argv[i + 2].encode())


def source_key(key):
    if rename is None:
        return key
    if not key.startswith(rename[1]):
        sys.exit(f"`{key!r}` on the target is not under `{rename[1]!r}`")
    return rename[0] + key[len(rename[1]):]

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
        for server, names in ((source, [source_key(k) for k in keys]), (target, keys)):
            pipe = server.pipeline(transaction=False)
            for key in names:
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
if rename is not None and checked != source.dbsize():
    sys.exit(f"{checked} keys on the target, {source.dbsize()} on the source")
print(f"{checked} keys identical to the source's" + (" under their new names" if rename else ""))
