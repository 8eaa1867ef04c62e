"""Peer for a copy into a Redis Cluster: what a Python user would write with redis-py and
hiredis (Debian's python3-redis and python3-hiredis), set up as the one-server baseline
(benches/copy_pipelined.py): one process SCANs the source (COUNT 1000) and hands batches
to WORKERS processes, each reading a batch with one pipeline of PTTL + DUMP on its own
source connection and writing it with one RedisCluster pipeline of RESTORE (redis-py
splits it per node and sends each node its part).

usage: copy_cluster_pipelined.py SOURCE_PORT CLUSTER_NODE_PORT WORKERS  -> prints the keys copied
"""
import multiprocessing
import sys

import redis
from redis.cluster import RedisCluster
from redis.utils import HIREDIS_AVAILABLE


def worker(source_port, cluster_port, batches, results):
    source = redis.Redis(port=source_port)
    target = RedisCluster(host="127.0.0.1", port=cluster_port)
    copied = 0
    while True:
        keys = batches.get()
        if keys is None:
            break
        read = source.pipeline(transaction=False)
        for key in keys:
            read.pttl(key)
            read.dump(key)
        replies = read.execute()
        write = target.pipeline()
        for i, key in enumerate(keys):
            ttl, payload = replies[2 * i], replies[2 * i + 1]
            if payload is None or ttl == -2:
                continue  # vanished meanwhile
            write.restore(key, max(ttl, 0), payload, replace=True)
            copied += 1
        write.execute()
    results.put(copied)


def main():
    if not HIREDIS_AVAILABLE:
        sys.exit("copy_cluster_pipelined.py: hiredis is not available to redis-py")
    source_port, cluster_port, workers = (int(a) for a in sys.argv[1:4])
    batches = multiprocessing.Queue(maxsize=2 * workers)
    results = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=worker, args=(source_port, cluster_port, batches, results))
        for _ in range(workers)
    ]
    for p in processes:
        p.start()
    source = redis.Redis(port=source_port)
    cursor = 0
    while True:
        cursor, keys = source.scan(cursor, count=1000)
        if keys:
            batches.put(keys)
        if cursor == 0:
            break
    for _ in processes:
        batches.put(None)
    copied = sum(results.get() for _ in processes)
    for p in processes:
        p.join()
    print(copied)


if __name__ == "__main__":
    main()
