"""Baseline: a copy as a Python user would write it with redis-py and hiredis (Debian's
python3-redis and python3-hiredis), set up as fairly as redis-move: one process SCANs the
source (COUNT 1000) and hands batches to WORKERS processes, each with its own source and
target connection, that read a batch with one pipeline of PTTL + DUMP and write it with
one pipeline of RESTORE (as many connections and batches in flight as redis-move's
defaults). With --cluster, TARGET_PORT is a node of a Redis Cluster and each worker writes
through redis-py's RedisCluster, whose pipeline sends each node its part.

usage: copy_pipelined.py SOURCE_PORT TARGET_PORT WORKERS [--cluster]  -> prints the keys copied
"""
import multiprocessing
import sys

import redis
from redis.utils import HIREDIS_AVAILABLE


def worker(source_port, target_port, cluster, batches, results):
    source = redis.Redis(port=source_port)
    if cluster:
        from redis.cluster import RedisCluster

        target = RedisCluster(host="127.0.0.1", port=target_port)
    else:
        target = redis.Redis(port=target_port)
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
        write = target.pipeline() if cluster else target.pipeline(transaction=False)
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
        sys.exit("copy_pipelined.py: hiredis is not available to redis-py")
    source_port, target_port, workers = (int(a) for a in sys.argv[1:4])
    cluster = "--cluster" in sys.argv[4:]
    batches = multiprocessing.Queue(maxsize=2 * workers)
    results = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=worker, args=(source_port, target_port, cluster, batches, results))
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
