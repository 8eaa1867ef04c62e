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
    /// Bytes of the RDB still to come (a full sync), before the command stream.
    rdb_len: Option<u64>,
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
        write(&mut link, &command(&[b"REPLCONF", b"capa", b"psync2"])).await?;
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

    /// Reads the RDB of a full sync, handing its keys to `apply` in order, in batches of
    /// those that arrived meanwhile (at most 256, so that they can be pipelined). The RDB
    /// is parsed on a blocking thread as it arrives; at most 256 keys wait in between, so
    /// memory stays flat whatever the dataset's size. The RDB format version.
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
        let (tx, mut rx) = mpsc::channel::<Result<(RdbEntry, u16), String>>(256);
        let parser = tokio::task::spawn_blocking(move || {
            let mut bridge = tokio_util::io::SyncIoBridge::new(link.take(len));
            let outcome = (|| -> Result<(), String> {
                let reader =
                    RdbReader::new(std::io::BufReader::with_capacity(1 << 16, &mut bridge))
                        .map_err(|e| e.to_string())?;
                let version = reader.version();
                for entry in reader {
                    let entry = entry.map_err(|e| e.to_string())?;
                    if tx.blocking_send(Ok((entry, version))).is_err() {
                        return Err("stopped".into());
                    }
                }
                Ok(())
            })();
            if let Err(e) = outcome {
                let _ = tx.blocking_send(Err(e));
            }
            // The rest of the RDB (its checksum), so that the command stream comes next.
            let _ = std::io::copy(&mut bridge, &mut std::io::sink());
            bridge.into_inner().into_inner()
        });
        let mut version = 0;
        let mut failure = None;
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::new();
            let mut item = Some(first);
            while let Some(next) = item.take() {
                match next {
                    Ok((entry, v)) => {
                        version = v;
                        batch.push(entry);
                    }
                    Err(e) if failure.is_none() => failure = Some(unexpected(&e)),
                    Err(_) => {}
                }
                if batch.len() < 256 {
                    item = rx.try_recv().ok();
                }
            }
            if failure.is_none()
                && !batch.is_empty()
                && let Err(e) = apply(batch, version).await
            {
                failure = Some(e);
                rx.close();
            }
        }
        let link = parser
            .await
            .map_err(|e| BackendError::Local(format!("the RDB reader stopped: {e}")))?;
        self.link = Some(link);
        match failure {
            Some(e) => Err(e),
            None => Ok(version),
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
        loop {
            let link = self
                .link
                .as_mut()
                .ok_or_else(|| unexpected("the link is closed"))?;
            match tokio::time::timeout(wait, link.fill_buf()).await {
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
            let (args, used) = read_array(link).await?;
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

/// The `$<length>` line before a full sync's RDB (after the newlines the server sends
/// while it prepares).
async fn read_rdb_header(link: &mut Link) -> Result<u64, BackendError> {
    loop {
        let line = tokio::time::timeout(SILENCE, reply_line(link))
            .await
            .map_err(|_| BackendError::Timeout("no RDB came".into()))??;
        if line.is_empty() {
            continue;
        }
        let len = line
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| unexpected(&format!("`{line}` instead of an RDB")))?;
        return Ok(len);
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
