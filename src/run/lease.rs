//! The run lock shared across machines (`lock:` in a runbook): a lease in Redis.
//!
//! The lock file in the state directory keeps apart only the runs that share that
//! directory; two operators on two laptops (or one with two `--state-dir`s) do not. A
//! runbook that names a lock Redis makes every run take a lease there first:
//!
//! - **Taken** with `SET key holder NX PX ttl`, the holder being who (operator, host,
//!   pid), which run, since when, and a **fencing token** from `INCR key:fence` (a
//!   number every taker gets a larger one of). A lease held by another run refuses the
//!   run with that holder's identity.
//! - **Renewed** every third of its ttl while the run lives (`PEXPIRE` only while the
//!   key still holds this run's holder). A run killed with `kill -9` renews nothing: its
//!   lease expires, and the next run or `resume` takes it.
//! - **Checked** before every change (each mutating step, each rollback action): the key
//!   must still hold this run's token. A run that was stalled past its ttl (a laptop
//!   lid closed, a process stopped) and whose lease another run took finds a larger
//!   token there and stops before changing anything more. When the lease merely
//!   expired and nobody took it (the fence counter still holds this run's token), the
//!   run takes it again.
//! - **Released** when the run ends (deleted only while it holds this run's holder).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backend::BackendError;
use crate::backend::redis::RedisBackend;
use crate::exec::engine::Fence;

/// Who holds a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// `user@host`, or the name given with `--operator`.
    pub operator: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// The run.
    pub run_id: String,
    /// Since when.
    pub since: jiff::Timestamp,
    /// The fencing token: larger for every later taker.
    pub token: u64,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} by {} (pid {} on {}) since {}, fencing token {}",
            self.run_id, self.operator, self.pid, self.host, self.since, self.token
        )
    }
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds it.
    #[error(
        "another run of this runbook holds its lock in Redis: {holder} (it expires {expires} unless renewed)"
    )]
    Held {
        /// The holder.
        holder: Box<LeaseHolder>,
        /// When, in words.
        expires: String,
    },
    /// The lock Redis failed.
    #[error("the lock Redis: {0}")]
    Backend(#[from] BackendError),
    /// The lock Redis cannot be reached.
    #[error("cannot reach the lock Redis: {0}")]
    Connect(String),
}

/// What a lease key holds, as seen without taking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Nobody holds it.
    Free,
    /// Held, for this long unless renewed.
    Held(LeaseHolder, Duration),
}

/// Deletes the key only while it holds the given holder.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Extends the key's life only while it holds the given holder.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// A lease this run holds.
pub struct Lease {
    redis: RedisBackend,
    key: String,
    ttl: Duration,
    holder: LeaseHolder,
    /// The holder as stored (the exact bytes compared on renew and release).
    stored: String,
}

/// Reads the lease at `key`.
pub async fn status(redis: &RedisBackend, key: &str) -> Result<LeaseState, BackendError> {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
    let replies = redis.pipeline(pipe).await?;
    let holder = match replies.first() {
        Some(redis::Value::BulkString(bytes)) => serde_json::from_slice::<LeaseHolder>(bytes).ok(),
        _ => None,
    };
    let ttl = match replies.get(1) {
        Some(redis::Value::Int(ms)) if *ms > 0 => Duration::from_millis(*ms as u64),
        _ => Duration::ZERO,
    };
    Ok(match holder {
        Some(holder) => LeaseState::Held(holder, ttl),
        None => LeaseState::Free,
    })
}

/// A lease's time left, in whole seconds (rounded up).
pub fn whole_seconds(left: Duration) -> String {
    crate::runbook::units::format_duration(Duration::from_secs(
        left.as_millis().div_ceil(1000) as u64
    ))
}

/// The key of the fencing counter of lease `key`.
fn fence_key(key: &str) -> String {
    format!("{key}:fence")
}

impl Lease {
    /// Takes the lease at `key` for run `run_id`, or says who holds it.
    pub async fn acquire(
        redis: RedisBackend,
        key: &str,
        ttl: Duration,
        operator: &str,
        run_id: &str,
    ) -> Result<Arc<Lease>, LeaseError> {
        let token = match redis.raw(redis::cmd("INCR").arg(fence_key(key))).await? {
            redis::Value::Int(n) => n.max(0) as u64,
            other => {
                return Err(BackendError::Unexpected(format!(
                    "INCR of the fencing counter answered {other:?}"
                ))
                .into());
            }
        };
        let holder = LeaseHolder {
            operator: operator.to_owned(),
            host: crate::exec::journal::hostname(),
            pid: std::process::id(),
            run_id: run_id.to_owned(),
            since: jiff::Timestamp::now(),
            token,
        };
        let stored = serde_json::to_string(&holder).unwrap_or_default();
        let taken = redis
            .raw(
                redis::cmd("SET")
                    .arg(key)
                    .arg(&stored)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        if taken == redis::Value::Nil {
            return Err(match status(&redis, key).await? {
                LeaseState::Held(holder, left) => LeaseError::Held {
                    holder: Box::new(holder),
                    expires: format!("in {}", whole_seconds(left)),
                },
                // Released between the two commands: the caller may try again.
                LeaseState::Free => LeaseError::Backend(BackendError::Command(
                    "the lease was released while it was being taken; run again".into(),
                )),
            });
        }
        Ok(Arc::new(Lease {
            redis,
            key: key.to_owned(),
            ttl,
            holder,
            stored,
        }))
    }

    /// The holder this run is.
    pub fn holder(&self) -> &LeaseHolder {
        &self.holder
    }

    /// Renews the lease every third of its ttl until `stop` is cancelled (a lease found
    /// taken is refused by the next check).
    pub async fn keep(self: Arc<Lease>, stop: CancellationToken) {
        let every = self.ttl / 3;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.renew().await {
                Ok(true) => {}
                // Expired (a stall longer than the ttl): the next check decides.
                Ok(false) => {}
                Err(e) => tracing::warn!("renewing the run's lease: {e}"),
            }
        }
    }

    async fn renew(&self) -> Result<bool, BackendError> {
        let reply = self
            .redis
            .raw(
                redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(&self.key)
                    .arg(&self.stored)
                    .arg(self.ttl.as_millis() as u64),
            )
            .await?;
        Ok(reply == redis::Value::Int(1))
    }

    /// Whether this run still holds the lease: `Err(why)` when another run took it (or
    /// it cannot be told). A lease that expired and nobody took is taken again.
    pub async fn check(&self) -> Result<(), String> {
        let unknown = |e: BackendError| format!("the run's lock in Redis cannot be read ({e})");
        if self.renew().await.map_err(unknown)? {
            return Ok(());
        }
        match status(&self.redis, &self.key).await.map_err(unknown)? {
            LeaseState::Held(holder, _) => Err(format!(
                "the run's lock in Redis is held by another run now: {holder}; this run (fencing token {}) stalled past its lease",
                self.holder.token
            )),
            LeaseState::Free => {
                // Expired. Nobody took it since when the counter still holds our token.
                let counter = self
                    .redis
                    .raw(redis::cmd("GET").arg(fence_key(&self.key)))
                    .await
                    .map_err(unknown)?;
                if counter == redis::Value::Nil {
                    return Err(format!(
                        "the run's lease and its fencing counter are gone from the lock Redis (emptied, or restarted without its data): another run may hold the lock now; this run (fencing token {}) stops",
                        self.holder.token
                    ));
                }
                let ours = crate::backend::redis::to_value(counter).as_text()
                    == self.holder.token.to_string();
                let again = ours
                    && self
                        .redis
                        .raw(
                            redis::cmd("SET")
                                .arg(&self.key)
                                .arg(&self.stored)
                                .arg("NX")
                                .arg("PX")
                                .arg(self.ttl.as_millis() as u64),
                        )
                        .await
                        .map_err(unknown)?
                        != redis::Value::Nil;
                if again {
                    Ok(())
                } else {
                    Err(format!(
                        "the run's lock in Redis expired and was taken since (by another run, or broken with `lock break --force`): fencing token beyond {}",
                        self.holder.token
                    ))
                }
            }
        }
    }

    /// Gives the lease up (only while it is still this run's).
    pub async fn release(&self) {
        let released = self
            .redis
            .raw(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(&self.key)
                    .arg(&self.stored),
            )
            .await;
        if let Err(e) = released {
            tracing::warn!("releasing the run's lease (it expires on its own): {e}");
        }
    }
}

/// The lease as the engine's fence.
pub struct LeaseFence(pub Arc<Lease>);

impl Fence for LeaseFence {
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.0.check())
    }
}

/// Removes a lease whose holder is gone: refused while it is held (it expires on its
/// own within its ttl once its holder stopped renewing it). With `force`, removed
/// anyway (the holder's next change is then refused by its fencing check).
pub async fn break_lease(
    redis: &RedisBackend,
    key: &str,
    force: bool,
) -> Result<LeaseState, BackendError> {
    let state = status(redis, key).await?;
    if matches!(state, LeaseState::Held(..)) && force {
        // The counter moves past the holder's token first: its next check finds the
        // lease gone and the counter not its own, and stops.
        redis.raw(redis::cmd("INCR").arg(fence_key(key))).await?;
        redis.raw(redis::cmd("DEL").arg(key)).await?;
    }
    Ok(state)
}
