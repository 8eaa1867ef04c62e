//! A sync into a Redis Cluster: a transaction cannot span slots there, so each batch of
//! the stream is applied as one `MULTI`/`EXEC` per slot, each with a marker of its own
//! slot (`{tag}<marker>`, the replication position the batch reached). The sync's
//! marker (the base) says how far every slot is applied; it is written only once the
//! writes before it are acknowledged by a replica of each primary (`WAIT 1`), so that a
//! failover of the target cannot keep the base and lose the writes under it.
//!
//! A sync that starts again continues from the base, and skips a write of slot `s` at
//! offset `o` when `s`'s marker on the target is at `o` or past it: that write was
//! applied, in the same transaction as the marker. A write a dying primary had
//! acknowledged but its replica never received went with its marker, and is applied
//! again. Each write is applied exactly once, slot by slot; a source transaction whose
//! keys span slots is applied slot by slot (a cluster cannot do it at once), and a
//! single command whose keys land in different slots is split where it can be (`DEL`,
//! `UNLINK`, `MSET`) and stops the sync otherwise.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::{Applied, marker_value, parse_marker};
use crate::backend::BackendError;
use crate::backend::cluster::{key_slot, slot_tag};
use crate::backend::command_keys::CommandKeys;
use crate::backend::keyspace::display_key;
use crate::backend::rdb::values;
use crate::backend::redis::RedisBackend;

/// How long a primary is given to have its writes acknowledged by a replica before the
/// base marker moves (it moves at a later round otherwise).
const CONFIRM_WAIT: Duration = Duration::from_millis(200);
/// How often the base marker is moved at most (each move waits for the replicas).
const CONFIRM_EVERY: Duration = Duration::from_secs(1);
/// The same, after a full sync's keys were written.
pub(super) const LOAD_CONFIRM_WAIT: Duration = Duration::from_secs(10);

/// The marker of `slot`: the sync's marker behind that slot's hash tag.
pub(super) fn slot_marker(marker: &[u8], slot: u16) -> Vec<u8> {
    [b"{", slot_tag(slot).as_bytes(), b"}", marker].concat()
}

/// The SCAN pattern of every slot marker of `marker`.
fn slot_marker_pattern(marker: &[u8]) -> String {
    let mut pattern = String::from("{*}");
    for c in String::from_utf8_lossy(marker).chars() {
        if "*?[]\\".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// Every slot marker of `marker` on the cluster, with what it holds.
async fn read_slot_markers(
    target: &RedisBackend,
    marker: &[u8],
) -> Result<Vec<(u16, Applied)>, BackendError> {
    let pattern = slot_marker_pattern(marker);
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, page) = target.scan_page(cursor, &pattern, None, 1000).await?;
        keys.extend(page);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // SCAN may name a key twice (a shard walked again after a failover).
    keys.sort();
    keys.dedup();
    let mut found = Vec::new();
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("GET").arg(key);
        }
        for (key, reply) in chunk.iter().zip(target.pipeline(pipe).await?) {
            if let redis::Value::BulkString(bytes) = reply
                && slot_marker(marker, key_slot(key)) == *key
            {
                found.push((key_slot(key), parse_marker(&bytes, key)?));
            }
        }
    }
    Ok(found)
}

/// Removes the sync's marker and, on a cluster, every slot marker it left.
pub async fn remove_markers(target: &RedisBackend, marker: &[u8]) -> Result<(), BackendError> {
    target.raw(redis::cmd("DEL").arg(marker)).await?;
    if target.cluster().is_some() {
        let slots: Vec<Vec<u8>> = read_slot_markers(target, marker)
            .await?
            .into_iter()
            .map(|(slot, _)| slot_marker(marker, slot))
            .collect();
        target.unlink(&slots).await?;
    }
    Ok(())
}

/// Where a sync into a cluster stands, slot by slot.
pub(super) struct SlotMarkers {
    marker: Vec<u8>,
    /// Slots whose marker is past the base: their writes up to it were applied.
    ahead: HashMap<u16, i64>,
    /// Slots that may hold a marker (removed when the sync finishes).
    marked: BTreeSet<u16>,
    /// Writes were sent since the base was last written (a replica must acknowledge
    /// them before it moves).
    unconfirmed: bool,
    /// The offset the base holds.
    base: i64,
    /// When the base was last moved (or tried).
    confirmed_at: Option<tokio::time::Instant>,
}

impl SlotMarkers {
    /// Reads the slot markers on the target; those of the same stream as the base and
    /// past it tell which writes after the base were applied.
    pub(super) async fn read(
        target: &RedisBackend,
        marker: &[u8],
        base: Option<&Applied>,
    ) -> Result<SlotMarkers, BackendError> {
        let mut markers = SlotMarkers {
            marker: marker.to_vec(),
            ahead: HashMap::new(),
            marked: BTreeSet::new(),
            unconfirmed: false,
            base: base.map_or(0, |b| b.offset),
            confirmed_at: None,
        };
        for (slot, applied) in read_slot_markers(target, marker).await? {
            markers.marked.insert(slot);
            if let Some(base) = base
                && applied.replid == base.replid
                && applied.offset > base.offset
            {
                markers.ahead.insert(slot, applied.offset);
            }
        }
        Ok(markers)
    }

    /// A full sync starts over: the slot markers of the earlier stream are removed.
    pub(super) async fn start_over(&mut self, target: &RedisBackend) -> Result<(), BackendError> {
        let stale: Vec<Vec<u8>> = self
            .marked
            .iter()
            .map(|&slot| slot_marker(&self.marker, slot))
            .collect();
        target.unlink(&stale).await?;
        self.marked.clear();
        self.ahead.clear();
        Ok(())
    }

    /// Whether the write of `slot` at stream offset `offset` was applied before.
    pub(super) fn applied_already(&self, slot: u16, offset: i64) -> bool {
        self.ahead.get(&slot).is_some_and(|&at| offset <= at)
    }

    /// Applies `writes` (each with its slot) as one transaction per slot, each ending
    /// with that slot's marker set to `position`; the reply of each `EXEC`.
    pub(super) async fn apply(
        &mut self,
        target: &RedisBackend,
        writes: Vec<SlotWrite>,
        position: &Applied,
    ) -> Result<Vec<redis::Value>, BackendError> {
        let cluster = target
            .cluster()
            .ok_or_else(|| BackendError::Unexpected("slot markers on one server".into()))?;
        let mut groups: BTreeMap<u16, Vec<redis::Cmd>> = BTreeMap::new();
        for (slot, args) in &writes {
            groups.entry(*slot).or_default().push(values::to_cmd(args));
        }
        let value = marker_value(&position.replid, position.offset, position.db);
        let transactions: Vec<(u16, Vec<redis::Cmd>)> = groups
            .into_iter()
            .map(|(slot, mut cmds)| {
                let mut set = redis::cmd("SET");
                set.arg(slot_marker(&self.marker, slot)).arg(&value);
                cmds.push(set);
                (slot, cmds)
            })
            .collect();
        // Before sending: a call that fails may have applied some of them.
        self.unconfirmed = true;
        self.marked
            .extend(transactions.iter().map(|(slot, _)| *slot));
        cluster.transactions(&transactions).await
    }

    /// Moves the base to `position` once every primary's writes are on a replica (or
    /// leaves it for a later round), at most every [`CONFIRM_EVERY`]; forgets slots the
    /// stream has passed.
    pub(super) async fn confirm(
        &mut self,
        target: &RedisBackend,
        position: &Applied,
    ) -> Result<(), BackendError> {
        self.ahead.retain(|_, at| *at > position.offset);
        if position.offset <= self.base
            || self
                .confirmed_at
                .is_some_and(|at| at.elapsed() < CONFIRM_EVERY)
        {
            return Ok(());
        }
        self.confirmed_at = Some(tokio::time::Instant::now());
        let cluster = target
            .cluster()
            .ok_or_else(|| BackendError::Unexpected("slot markers on one server".into()))?;
        if self.unconfirmed && !cluster.wait_replicated(CONFIRM_WAIT).await? {
            return Ok(());
        }
        target
            .raw(redis::cmd("SET").arg(&self.marker).arg(marker_value(
                &position.replid,
                position.offset,
                position.db,
            )))
            .await?;
        self.base = position.offset;
        self.unconfirmed = false;
        Ok(())
    }
}

/// A write (its arguments) and the slot of its keys.
pub(super) type SlotWrite = (u16, Vec<Vec<u8>>);

/// A write whose keys are in several slots, as one write per slot (keys in their
/// order): `DEL`, `UNLINK` and `MSET` split; any other refuses, since a cluster runs a
/// command in one slot only.
pub(super) fn split_by_slot(
    keys: &CommandKeys,
    args: Vec<Vec<u8>>,
) -> Result<Vec<SlotWrite>, BackendError> {
    let positions = keys
        .positions(&args)
        .map_err(|e| BackendError::Command(format!("the source's stream: {e}")))?;
    let slots: Vec<u16> = positions.iter().map(|&p| key_slot(&args[p])).collect();
    let Some(&first) = slots.first() else {
        return Err(BackendError::Command(format!(
            "the source's stream has a {} without keys",
            String::from_utf8_lossy(&args[0])
        )));
    };
    if slots.iter().all(|&s| s == first) {
        return Ok(vec![(first, args)]);
    }
    let name = args[0].to_ascii_uppercase();
    let per_key = match name.as_slice() {
        b"DEL" | b"UNLINK" => 1,
        b"MSET" => 2,
        _ => {
            let other = positions
                .iter()
                .find(|&&p| key_slot(&args[p]) != first)
                .copied()
                .unwrap_or(0);
            return Err(BackendError::Command(format!(
                "the source's stream has a {} of `{}` and `{}`, which are in different slots of the target cluster ({first} and {}): a cluster runs a command in one slot; give such keys a common hash tag (`{{tag}}` in the new names)",
                String::from_utf8_lossy(&name),
                display_key(&args[positions[0]]),
                display_key(&args[other]),
                key_slot(&args[other]),
            )));
        }
    };
    let mut parts: Vec<SlotWrite> = Vec::new();
    for pair in args[1..].chunks(per_key) {
        let slot = key_slot(&pair[0]);
        match parts.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, part)) => part.extend_from_slice(pair),
            None => parts.push((slot, [vec![args[0].clone()], pair.to_vec()].concat())),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    fn keys() -> CommandKeys {
        CommandKeys::ranges(&[("del", 1, -1, 1), ("mset", 1, -1, 2), ("rename", 1, 1, 1)])
    }

    #[test]
    fn a_slot_marker_lands_in_its_slot_and_is_found_by_the_pattern() {
        let marker = b"redis-move:sync:run-1:s";
        for slot in [0, 1, 5000, 16383] {
            let key = slot_marker(marker, slot);
            assert_eq!(key_slot(&key), slot);
            assert!(crate::backend::keyspace::glob_match(
                slot_marker_pattern(marker).as_bytes(),
                &key
            ));
        }
        assert_eq!(slot_marker_pattern(b"a*b"), "{*}a\\*b");
    }

    #[test]
    fn multi_key_writes_are_split_per_slot_where_they_can_be() {
        let same = split_by_slot(&keys(), args(&["DEL", "{t}a", "{t}b"])).unwrap();
        assert_eq!(same.len(), 1);
        let del = split_by_slot(&keys(), args(&["DEL", "a", "b", "{a}c"])).unwrap();
        assert_eq!(del.len(), 2);
        assert_eq!(del[0].1, args(&["DEL", "a", "{a}c"]));
        assert_eq!(del[1].1, args(&["DEL", "b"]));
        let mset = split_by_slot(&keys(), args(&["MSET", "a", "1", "b", "2", "a", "3"])).unwrap();
        assert_eq!(mset[0].1, args(&["MSET", "a", "1", "a", "3"]));
        assert_eq!(mset[1].1, args(&["MSET", "b", "2"]));
        let rename = split_by_slot(&keys(), args(&["RENAME", "a", "b"])).unwrap_err();
        assert!(rename.to_string().contains("different slots"), "{rename}");
    }
}
