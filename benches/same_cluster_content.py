"""Checks a copy from one server into a Redis Cluster by content: every key of the
source is on the primary that serves its slot, with the same value (DEBUG DIGEST-VALUE)
and TTL presence, and the cluster's primaries hold as many keys as the source.

usage: same_cluster_content.py SOURCE_PORT CLUSTER_NODE_PORT  -> prints what it checked
"""
import sys

import redis
from redis.crc import key_slot

source = redis.Redis(port=int(sys.argv[1]))
seed = redis.Redis(port=int(sys.argv[2]))
owner = {}
nodes = {}
for start, end, primary, *_ in seed.execute_command("CLUSTER SLOTS"):
    host, port = (primary[0].decode() or "127.0.0.1"), int(primary[1])
    nodes.setdefault(port, redis.Redis(host=host, port=port))
    for slot in range(start, end + 1):
        owner[slot] = port
if len(owner) != 16384:
    sys.exit(f"the cluster serves {len(owner)} slots of 16384")

checked, cursor = 0, 0
while True:
    cursor, keys = source.scan(cursor, count=1000)
    if keys:
        pipe = source.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command("DEBUG", "DIGEST-VALUE", key)
            pipe.pttl(key)
        ours = pipe.execute()
        by_node = {}
        for i, key in enumerate(keys):
            by_node.setdefault(owner[key_slot(key)], []).append(i)
        for port, indexes in by_node.items():
            pipe = nodes[port].pipeline(transaction=False)
            for i in indexes:
                pipe.execute_command("DEBUG", "DIGEST-VALUE", keys[i])
                pipe.pttl(keys[i])
            theirs = pipe.execute()
            for j, i in enumerate(indexes):
                mine, copy = ours[2 * i : 2 * i + 2], theirs[2 * j : 2 * j + 2]
                if mine[0] != copy[0] or (mine[1] < 0) != (copy[1] < 0):
                    sys.exit(f"`{keys[i]!r}` differs: {mine} / {copy}")
        checked += len(keys)
    if cursor == 0:
        break
total = sum(node.dbsize() for node in nodes.values())
if total != source.dbsize():
    sys.exit(f"{total} keys in the cluster, {source.dbsize()} on the source")
print(f"{checked} keys identical to the source's, on {len(nodes)} primaries")
