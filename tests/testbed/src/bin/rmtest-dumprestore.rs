//! The DUMP/RESTORE ceiling of `scripts/bench-copy`: a client that does nothing but the
//! copy's own commands, so that what limits it is the servers' cost. One thread SCANs the
//! source (COUNT 1000); CONNECTIONS threads, each with its own source and target
//! connection, read a batch with one pipeline of PTTL + DUMP and write it with one
//! pipeline of RESTORE (several batches in flight on both servers, as in redis-move).
//! No ledger, no checks, no size test.
//!
//! `rmtest-dumprestore SOURCE_URL TARGET_URL CONNECTIONS` prints the keys copied.

use std::sync::{Arc, Mutex, mpsc};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(source), Some(target), Some(Ok(connections))) = (
        args.get(1),
        args.get(2),
        args.get(3).map(|c| c.parse::<usize>()),
    ) else {
        eprintln!("usage: rmtest-dumprestore SOURCE_URL TARGET_URL CONNECTIONS");
        std::process::exit(2);
    };
    let (batches, receiver) = mpsc::sync_channel::<Vec<Vec<u8>>>(connections * 2);
    let receiver = Arc::new(Mutex::new(receiver));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let receiver = receiver.clone();
            let mut from = redis_move_testbed::dataset::connect(source);
            let mut to = redis_move_testbed::dataset::connect(target);
            std::thread::spawn(move || {
                let mut copied = 0usize;
                loop {
                    let Ok(keys) = receiver.lock().unwrap().recv() else {
                        return copied;
                    };
                    let mut read = redis::pipe();
                    for key in &keys {
                        read.cmd("PTTL").arg(key).cmd("DUMP").arg(key);
                    }
                    let replies: Vec<redis::Value> = read.query(&mut from).expect("PTTL + DUMP");
                    let mut write = redis::pipe();
                    let mut writes = 0;
                    for (key, pair) in keys.iter().zip(replies.chunks(2)) {
                        let (redis::Value::Int(ttl), redis::Value::BulkString(payload)) =
                            (&pair[0], &pair[1])
                        else {
                            continue; // vanished meanwhile
                        };
                        write
                            .cmd("RESTORE")
                            .arg(key)
                            .arg((*ttl).max(0))
                            .arg(payload.as_slice())
                            .arg("REPLACE")
                            .ignore();
                        writes += 1;
                    }
                    let () = write.query(&mut to).expect("RESTORE");
                    copied += writes;
                }
            })
        })
        .collect();
    let mut scanner = redis_move_testbed::dataset::connect(source);
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut scanner)
            .expect("SCAN");
        if !keys.is_empty() {
            batches.send(keys).expect("a worker");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    drop(batches);
    let copied: usize = workers
        .into_iter()
        .map(|w| w.join().expect("a worker"))
        .sum();
    println!("{copied}");
}
