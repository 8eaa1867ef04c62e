"""The replication floor, timed from the servers' own signal over one persistent
connection: REPLICAOF, then INFO replication every 5 ms until the link is up and no sync
is in progress. Prints nanoseconds.

usage: replicaof_floor.py SOURCE_PORT TARGET_PORT
"""
import sys
import time

import redis

target = redis.Redis(port=int(sys.argv[2]))
target.ping()
start = time.monotonic_ns()
target.replicaof("127.0.0.1", int(sys.argv[1]))
while True:
    info = target.info("replication")
    if info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == 0:
        break
    time.sleep(0.005)
print(time.monotonic_ns() - start)
