//! redis-move as a replica of a server (`PSYNC`): the keys of a full sync's RDB, then
//! the stream of write commands after it, with the replication offset acknowledged
//! (`REPLCONF ACK`) so that the server's own view of the lag is true, and a partial
//! resync from a saved replication id and offset when the server still has the backlog.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;

use super::entries::{RdbEntry, RdbReader};
use super::{Link, SILENCE, command, expect_ok, open_link, reply_line, write};
use crate::backend::BackendError;
use crate::backend::redis::RedisEndpoint;

/// How a sync started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncStart {
    /// From a full copy: the RDB comes first ([`ReplicaLink::read_rdb`]).
    Full,
    /// From where a previous link stopped: the command stream continues.
    Partial,
}

/// One write of the command stream, and the offset just after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCommand {
    /// The command and its arguments.
    pub args: Vec<Vec<u8>>,
    /// The replication offset after it.
    pub offset: i64,
}

/// A link to a server as its replica.
pub struct ReplicaLink {
    link: Option<Link>,
    /// The server's replication id.
    pub replid: String,
    /// The replication offset of the next byte of the stream.
    pub offset: i64,
    /// The RDB still to come (a full sync), before the command stream.
    rdb_len: Option<RdbLength>,
}

/// How often a link that waits for the stream acknowledges its offset.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// How a full sync's RDB is delimited.
#[derive(Clone, Copy, Debug)]
enum RdbLength {
    /// This many bytes (the server saved it to disk first).
    Bytes(u64),
    /// Until this 40-byte mark after its end (streamed straight from the server's fork:
    /// diskless, `capa eof`).
    UntilMark([u8; 40]),
}

fn unexpected(what: &str) -> BackendError {
    BackendError::Unexpected(format!("replication stream: {what}"))
}

impl ReplicaLink {
    /// Connects to the server of `endpoint` as a replica: continues from `resume`
    /// (replication id, and the offset of the last byte applied) when the server still
    /// has the rest in its backlog, else starts a full sync.
    pub async fn open(
        endpoint: &RedisEndpoint,
        resume: Option<(&str, i64)>,
    ) -> Result<(ReplicaLink, SyncStart), BackendError> {
        let mut link = open_link(endpoint).await?;
        // `eof`: the server may stream the RDB from its fork without writing it to disk.
        write(
            &mut link,
            &command(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"]),
        )
        .await?;
        expect_ok(&mut link, endpoint.timeout, "REPLCONF capa").await?;
        // PSYNC names the first byte wanted: the one after the last byte applied.
        let (replid, offset) = match resume {
            Some((id, offset)) => (id.to_owned(), (offset + 1).to_string()),
            None => ("?".to_owned(), "-1".to_owned()),
        };
        write(
            &mut link,
            &command(&[b"PSYNC", replid.as_bytes(), offset.as_bytes()]),
        )
        .await?;
        // The server may send newlines while it prepares.
        let answer = loop {
            let line = tokio::time::timeout(SILENCE, reply_line(&mut link))
                .await
                .map_err(|_| BackendError::Timeout("PSYNC got no answer".into()))??;
            if !line.is_empty() {
                break line;
            }
        };
        let words: Vec<&str> = answer.split_whitespace().collect();
        match words.as_slice() {
            ["+FULLRESYNC", id, offset] => {
                let offset = offset.parse().map_err(|_| unexpected(&answer))?;
                let len = read_rdb_header(&mut link).await?;
                Ok((
                    ReplicaLink {
                        link: Some(link),
                        replid: (*id).to_owned(),
                        offset,
                        rdb_len: Some(len),
                    },
                    SyncStart::Full,
                ))
            }
            ["+CONTINUE", rest @ ..] => {
                let (id, offset) =
                    resume.ok_or_else(|| unexpected("CONTINUE without a resume point"))?;
                Ok((
                    ReplicaLink {
                        link: Some(link),
                        replid: rest.first().map_or(id, |new| *new).to_owned(),
                        offset,
                        rdb_len: None,
                    },
                    SyncStart::Partial,
                ))
            }
            _ => Err(BackendError::Command(format!(
                "PSYNC refused: {} (a managed service may not allow replicas: use redis.copy)",
                answer.trim_start_matches('-')
            ))),
        }
    }

    /// Reads the RDB of a full sync, handing its keys to `apply` in order, in batches (of
    /// at most [`BATCH_KEYS`] keys and about [`BATCH_BYTES`], so that they can be
    /// pipelined). The RDB is parsed on a blocking thread as it arrives; at most four
    /// batches wait in between, so memory stays flat whatever the dataset's size. The
    /// RDB format version.
    pub async fn read_rdb<F, Fut>(&mut self, mut apply: F) -> Result<u16, BackendError>
    where
        F: FnMut(Vec<RdbEntry>, u16) -> Fut,
        Fut: std::future::Future<Output = Result<(), BackendError>>,
    {
        let Some(len) = self.rdb_len.take() else {
            return Err(unexpected("no RDB to read: the sync was partial"));
        };
        let link = self
            .link
            .take()
            .ok_or_else(|| unexpected("the link is closed"))?;
        // Batches, not keys, cross between the threads: a hand-over costs a wake-up.
        let (tx, mut rx) = mpsc::channel::<Result<(Vec<RdbEntry>, u16), String>>(4);
        let parser = tokio::task::spawn_blocking(move || {
            let limit = match len {
                RdbLength::Bytes(n) => n,
                RdbLength::UntilMark(_) => u64::MAX,
            };
            let mut bridge = tokio_util::io::SyncIoBridge::new(link.take(limit));
            let mut buffered = std::io::BufReader::with_capacity(1 << 16, &mut bridge);
            let outcome = (|| -> Result<(), String> {
                let reader = RdbReader::new(&mut buffered).map_err(|e| e.to_string())?;
                let version = reader.version();
                let mut batch = Vec::new();
                let mut bytes = 0;
                for entry in reader {
                    let entry = entry.map_err(|e| e.to_string())?;
                    bytes += entry.key.len() + entry.value.len();
                    batch.push(entry);
                    if batch.len() >= BATCH_KEYS || bytes >= BATCH_BYTES {
                        bytes = 0;
                        if tx
                            .blocking_send(Ok((std::mem::take(&mut batch), version)))
                            .is_err()
                        {
                            return Err("stopped".into());
                        }
                    }
                }
                if !batch.is_empty() && tx.blocking_send(Ok((batch, version))).is_err() {
                    return Err("stopped".into());
                }
                Ok(())
            })();
            let outcome = outcome.and_then(|()| match len {
                // The rest of the RDB (its checksum), so that the command stream comes next.
                RdbLength::Bytes(_) => {
                    let _ = std::io::copy(&mut buffered, &mut std::io::sink());
                    Ok(())
                }
                // The checksum, then the mark; what was read beyond belongs to the stream.
                RdbLength::UntilMark(mark) => {
                    let mut tail = [0u8; 48];
                    std::io::Read::read_exact(&mut buffered, &mut tail)
                        .map_err(|e| format!("the end of the RDB: {e}"))?;
                    if tail[8..] != mark {
                        return Err("the RDB did not end with the server's mark".into());
                    }
                    Ok(())
                }
            });
            if let Err(e) = outcome {
                let _ = tx.blocking_send(Err(e));
            }
            let ahead = buffered.buffer().to_vec();
            drop(buffered);
            let link = bridge.into_inner().into_inner();
            if ahead.is_empty() {
                link
            } else {
                super::unread(link, ahead)
            }
        });
        let mut version = 0;
        let mut failure = None;
        while let Some(next) = rx.recv().await {
            match next {
                Ok((batch, v)) if failure.is_none() => {
                    version = v;
                    if let Err(e) = apply(batch, version).await {
                        failure = Some(e);
                        rx.close();
                    }
                }
                Ok(_) => {}
                Err(e) if failure.is_none() => failure = Some(unexpected(&e)),
                Err(_) => {}
            }
        }
        let link = parser
            .await
            .map_err(|e| BackendError::Local(format!("the RDB reader stopped: {e}")))?;
        self.link = Some(link);
        match failure {
            Some(e) => Err(e),
            // After a diskless RDB the server starts the command stream at the first
            // acknowledgement (the replica has loaded it).
            None => self.ack().await.map(|()| version),
        }
    }

    /// The next write of the command stream (answering the server's `REPLCONF GETACK`
    /// itself), or `None` when nothing came within `wait`.
    pub async fn next_command(
        &mut self,
        wait: Duration,
    ) -> Result<Option<StreamCommand>, BackendError> {
        if self.rdb_len.is_some() {
            return Err(unexpected("the RDB of the full sync was not read"));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let link = self
                .link
                .as_mut()
                .ok_or_else(|| unexpected("the link is closed"))?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left.min(ACK_EVERY), link.fill_buf()).await {
                // Acknowledged while waiting, as a replica does every second: after a
                // diskless full sync the server starts the stream at an acknowledgement
                // that finds the sync done.
                Err(_) if left > ACK_EVERY => {
                    self.ack().await?;
                    continue;
                }
                Err(_) => return Ok(None),
                Ok(Err(e)) => {
                    return Err(BackendError::Unreachable(format!(
                        "replication stream: {e}"
                    )));
                }
                Ok(Ok([])) => {
                    return Err(BackendError::Unreachable(
                        "the server closed the replication link".into(),
                    ));
                }
                // A keepalive newline (sent around a full sync): not part of the stream,
                // nor of its offset.
                Ok(Ok([b'\n', ..])) => {
                    link.consume(1);
                    continue;
                }
                Ok(Ok(_)) => {}
            }
            // A command begun is complete within SILENCE, or the link is dead.
            let (args, used) = tokio::time::timeout(SILENCE, read_array(link))
                .await
                .map_err(|_| {
                    BackendError::Unreachable(format!(
                        "the server stopped in the middle of a command for {}s",
                        SILENCE.as_secs()
                    ))
                })??;
            self.offset += used as i64;
            let name = args
                .first()
                .map(|a| a.to_ascii_uppercase())
                .unwrap_or_default();
            if name == b"REPLCONF"
                && args
                    .get(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"))
            {
                self.ack().await?;
                continue;
            }
            return Ok(Some(StreamCommand {
                args,
                offset: self.offset,
            }));
        }
    }

    /// Waits until the stream has bytes to read; nothing is consumed, so that it can be
    /// abandoned at any point (in a `select!`).
    pub async fn readable(&mut self) -> Result<(), BackendError> {
        let link = self
            .link
            .as_mut()
            .ok_or_else(|| unexpected("the link is closed"))?;
        match link.fill_buf().await {
            Ok([]) => Err(BackendError::Unreachable(
                "the server closed the replication link".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(BackendError::Unreachable(format!(
                "replication stream: {e}"
            ))),
        }
    }

    /// Tells the server how far the stream has been read (`REPLCONF ACK offset`).
    pub async fn ack(&mut self) -> Result<(), BackendError> {
        let offset = self.offset.to_string();
        let link = self
            .link
            .as_mut()
            .ok_or_else(|| unexpected("the link is closed"))?;
        write(link, &command(&[b"REPLCONF", b"ACK", offset.as_bytes()])).await
    }
}

/// A batch of RDB keys ends at this many keys...
const BATCH_KEYS: usize = 512;
/// ...or once it holds this many bytes of keys and values.
const BATCH_BYTES: usize = 4 << 20;

/// The `$<length>` line before a full sync's RDB (after the newlines the server sends
/// while it prepares).
async fn read_rdb_header(link: &mut Link) -> Result<RdbLength, BackendError> {
    loop {
        let line = tokio::time::timeout(SILENCE, reply_line(link))
            .await
            .map_err(|_| BackendError::Timeout("no RDB came".into()))??;
        if line.is_empty() {
            continue;
        }
        if let Some(mark) = line.strip_prefix("$EOF:") {
            let mark: [u8; 40] = mark
                .as_bytes()
                .try_into()
                .map_err(|_| unexpected(&format!("`{line}`: an end mark of 40 bytes")))?;
            return Ok(RdbLength::UntilMark(mark));
        }
        let len = line
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| unexpected(&format!("`{line}` instead of an RDB")))?;
        return Ok(RdbLength::Bytes(len));
    }
}

/// One RESP array of bulk strings; its items and the bytes it took.
async fn read_array(link: &mut Link) -> Result<(Vec<Vec<u8>>, usize), BackendError> {
    let io = |e: std::io::Error| BackendError::Unreachable(format!("replication stream: {e}"));
    let mut used = 0;
    let mut line = Vec::new();
    used += link.read_until(b'\n', &mut line).await.map_err(io)?;
    let count: usize = std::str::from_utf8(line.strip_prefix(b"*").unwrap_or_default())
        .ok()
        .and_then(|t| t.trim_end().parse().ok())
        .ok_or_else(|| {
            unexpected(&format!(
                "`{}` is not a command",
                String::from_utf8_lossy(&line).trim_end()
            ))
        })?;
    if count == 0 {
        return Err(unexpected("an empty command"));
    }
    let mut args = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        line.clear();
        used += link.read_until(b'\n', &mut line).await.map_err(io)?;
        let len: usize = std::str::from_utf8(line.strip_prefix(b"$").unwrap_or_default())
            .ok()
            .and_then(|t| t.trim_end().parse().ok())
            .ok_or_else(|| unexpected("an argument without a length"))?;
        // Read as it arrives: a corrupt length fails on the data it does not find,
        // instead of allocating what it claims.
        if len > 512 * 1024 * 1024 {
            return Err(unexpected("an argument longer than Redis allows"));
        }
        let mut arg = Vec::new();
        (&mut *link)
            .take(len as u64 + 2)
            .read_to_end(&mut arg)
            .await
            .map_err(io)?;
        if arg.len() != len + 2 {
            return Err(BackendError::Unreachable(
                "the server closed the replication link in the middle of a command".into(),
            ));
        }
        used += len + 2;
        arg.truncate(len);
        args.push(arg);
    }
    Ok((args, used))
}
