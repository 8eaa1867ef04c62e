//! A producer like an application's, for the write-loss tests and benchmarks: it
//! pushes sequence-numbered job ids and records the ones a server acknowledged, with
//! when. A refused write (`READONLY`, `NOREPLICAS`) or a connection that fails sends it
//! to the next server of its list, as an application following the primary would; those
//! writes are counted as rejected, never as acknowledged.
//!
//! The invariant the tests check: every acknowledged id is, at the end, on the server
//! that is primary (queued, being worked on, or done).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Acked {
    /// The job id.
    pub id: String,
    /// When the server acknowledged it.
    pub at: Instant,
}

/// A running producer; stopped on drop.
pub struct Producer {
    running: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    rejected: Arc<AtomicU64>,
    unconfirmed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    /// Pushes ids `<prefix><n>` onto the list `key` of the first of `urls` that takes
    /// writes, at most `rate` a second (`None`: as fast as acknowledgements come).
    pub fn start(urls: Vec<String>, key: &str, prefix: &str, rate: Option<u32>) -> Producer {
        Producer::start_with(urls, key, prefix, rate, false)
    }

    /// [`Producer::start`]; with `confirmed`, a write counts as acknowledged only once a
    /// replica has it too (`WAIT 1 500`), as an application that must survive the loss
    /// of its primary writes: Redis replicates asynchronously, so a primary killed
    /// outright can take its last acknowledged writes with it whatever redis-move does.
    /// The others are counted as unconfirmed.
    pub fn start_with(
        urls: Vec<String>,
        key: &str,
        prefix: &str,
        rate: Option<u32>,
        confirmed: bool,
    ) -> Producer {
        let running = Arc::new(AtomicBool::new(true));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(AtomicU64::new(0));
        let unconfirmed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (running, acked, rejected, unconfirmed) = (
                running.clone(),
                acked.clone(),
                rejected.clone(),
                unconfirmed.clone(),
            );
            let (key, prefix) = (key.to_owned(), prefix.to_owned());
            std::thread::spawn(move || {
                let pace = rate.map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
                let mut connections: Vec<Option<redis::Connection>> =
                    urls.iter().map(|_| None).collect();
                let mut current = 0;
                let mut seq = 0u64;
                while running.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    if connections[current].is_none() {
                        connections[current] = redis::Client::open(urls[current].as_str())
                            .ok()
                            .and_then(|c| {
                                c.get_connection_with_timeout(Duration::from_secs(1)).ok()
                            })
                            .inspect(|c| {
                                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                            });
                    }
                    let Some(connection) = connections[current].as_mut() else {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        current = (current + 1) % urls.len();
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    seq += 1;
                    let id = format!("{prefix}{seq}");
                    let pushed: redis::RedisResult<i64> =
                        redis::cmd("RPUSH").arg(&key).arg(&id).query(connection);
                    // Confirmed by a replica when the server has one (a lone primary's
                    // acknowledgement is all there is).
                    let replicas: redis::RedisResult<i64> = match (&pushed, confirmed) {
                        (Ok(_), true) => {
                            let role: redis::RedisResult<Vec<redis::Value>> =
                                redis::cmd("ROLE").query(connection);
                            let has_replicas = role.as_ref().is_ok_and(|r| {
                                matches!(r.get(2), Some(redis::Value::Array(list)) if !list.is_empty())
                            });
                            if has_replicas {
                                redis::cmd("WAIT").arg(1).arg(500).query(connection)
                            } else {
                                Ok(1)
                            }
                        }
                        _ => Ok(1),
                    };
                    match pushed {
                        Ok(_) if replicas.as_ref().is_ok_and(|n| *n >= 1) => {
                            acked.lock().unwrap().push(Acked {
                                id,
                                at: Instant::now(),
                            })
                        }
                        Ok(_) => {
                            unconfirmed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let text = e.to_string().to_uppercase();
                            if !(text.contains("READONLY") || text.contains("NOREPLICAS")) {
                                // The connection is broken: open a new one next time.
                                connections[current] = None;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            rejected.fetch_add(1, Ordering::Relaxed);
                            current = (current + 1) % urls.len();
                        }
                    }
                    if let Some(pace) = pace {
                        std::thread::sleep(pace.saturating_sub(started.elapsed()));
                    }
                }
            })
        };
        Producer {
            running,
            acked,
            rejected,
            unconfirmed,
            thread: Some(thread),
        }
    }

    /// Writes a server took that no replica confirmed (with `confirmed`).
    pub fn unconfirmed(&self) -> u64 {
        self.unconfirmed.load(Ordering::Relaxed)
    }

    /// The writes acknowledged so far.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    /// How many were acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Writes refused (or not sent: no connection) so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Waits (up to `limit`) until `more` further writes were acknowledged.
    pub fn wait_for_more(&self, more: usize, limit: Duration) {
        let target = self.acked_count() + more;
        let start = Instant::now();
        while self.acked_count() < target {
            assert!(start.elapsed() < limit, "the producer stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it; the writes acknowledged.
    pub fn stop(&mut self) -> Vec<Acked> {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the producer thread");
        }
        self.acked()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// The acknowledged writes of `acked` missing from `server`'s list `key`: what a
/// cutover lost (empty when it lost none).
pub fn missing_from(acked: &[Acked], server: &crate::RedisServer, key: &str) -> Vec<String> {
    let there: std::collections::HashSet<String> = server
        .cli(&["LRANGE", key, "0", "-1"])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    acked
        .iter()
        .filter(|a| !there.contains(&a.id))
        .map(|a| a.id.clone())
        .collect()
}
