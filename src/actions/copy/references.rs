//! Key names stored inside values, renamed with the keys they name. BullMQ keeps them in
//! a flow: a child's job hash names its parent (`parentKey`: the parent's key;
//! `parent`: JSON with `queueKey`; `opts`: JSON with `parent.queue`), and a parent keeps
//! its children's keys in `PARENT:dependencies` (set), `:processed` and `:failed`
//! (hashes, the child key as the field) and `:unsuccessful` (sorted set). A renaming
//! copy that leaves them as they are moves every job, and a flow parent never finishes:
//! its children report to a parent key that no longer exists.

use crate::backend::rdb::values::Decoded;

/// Keys of a parent job that hold its children's key names, and the type they have.
const CHILD_LISTS: &[(&[u8], &str)] = &[
    (b":dependencies", "set"),
    (b":processed", "hash"),
    (b":failed", "hash"),
    (b":unsuccessful", "zset"),
];

/// Whether the value of `key` (its DUMP `payload`) may hold key names: worth decoding.
/// Field names of job hashes are short and so never compressed in a DUMP: `parent`
/// appears in the bytes of every hash that has `parentKey` or `parent`.
pub fn may_refer(key: &[u8], payload: &[u8]) -> bool {
    CHILD_LISTS.iter().any(|(suffix, _)| key.ends_with(suffix))
        || payload.windows(6).any(|w| w == b"parent")
}

/// `value` of `key` with the key names in it renamed by `rename` (a key's new name);
/// `None` when it names no key the rename changes.
pub fn rewrite(key: &[u8], value: &Decoded, rename: &dyn Fn(&[u8]) -> Vec<u8>) -> Option<Decoded> {
    let renamed = |name: &[u8]| {
        let new = rename(name);
        (new != name).then_some(new)
    };
    let rewritten = match value {
        Decoded::Set(members) if is_child_list(key, "set") => {
            let new: Vec<Vec<u8>> = members
                .iter()
                .map(|m| renamed(m).unwrap_or_else(|| m.clone()))
                .collect();
            Decoded::Set(new)
        }
        Decoded::SortedSet(members) if is_child_list(key, "zset") => Decoded::SortedSet(
            members
                .iter()
                .map(|(m, score)| (renamed(m).unwrap_or_else(|| m.clone()), *score))
                .collect(),
        ),
        Decoded::Hash(fields) if is_child_list(key, "hash") => Decoded::Hash(
            fields
                .iter()
                .map(|(f, v)| (renamed(f).unwrap_or_else(|| f.clone()), v.clone()))
                .collect(),
        ),
        Decoded::Hash(fields) => {
            let parent_key = fields
                .iter()
                .find(|(f, _)| f == b"parentKey")
                .map(|(_, v)| v.clone());
            let parent_json = fields
                .iter()
                .find(|(f, _)| f == b"parent")
                .and_then(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).ok());
            // The parent's queue key: its key without `:ID`.
            let (queue, id) = match (&parent_key, &parent_json) {
                (_, Some(json)) => (
                    json.get("queueKey")?.as_str()?.as_bytes().to_vec(),
                    json.get("id")?.as_str()?.as_bytes().to_vec(),
                ),
                (Some(key), None) => {
                    let colon = key.iter().rposition(|&b| b == b':')?;
                    (key[..colon].to_vec(), key[colon + 1..].to_vec())
                }
                (None, None) => return None,
            };
            let full = [queue.as_slice(), b":", id.as_slice()].concat();
            let new_full = renamed(&full)?;
            let new_queue = new_full.strip_suffix([b":", id.as_slice()].concat().as_slice())?;
            let new_queue = String::from_utf8(new_queue.to_vec()).ok()?;
            let old_queue = String::from_utf8(queue).ok()?;
            Decoded::Hash(
                fields
                    .iter()
                    .map(|(f, v)| {
                        let v = match f.as_slice() {
                            b"parentKey" => renamed(v).unwrap_or_else(|| v.clone()),
                            b"parent" => json_with(v, &["queueKey"], &old_queue, &new_queue),
                            b"opts" => json_with(v, &["parent", "queue"], &old_queue, &new_queue),
                            _ => v.clone(),
                        };
                        (f.clone(), v)
                    })
                    .collect(),
            )
        }
        _ => return None,
    };
    (rewritten != *value).then_some(rewritten)
}

fn is_child_list(key: &[u8], key_type: &str) -> bool {
    CHILD_LISTS
        .iter()
        .any(|(suffix, t)| *t == key_type && key.ends_with(suffix))
}

/// The JSON text `text` with the string at `path` set to `new` when it is `old`
/// (anything else, or text that is not JSON, unchanged).
fn json_with(text: &[u8], path: &[&str], old: &str, new: &str) -> Vec<u8> {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(text) else {
        return text.to_vec();
    };
    let mut at = &mut json;
    for step in path {
        match at.get_mut(*step) {
            Some(next) => at = next,
            None => return text.to_vec(),
        }
    }
    if at.as_str() != Some(old) {
        return text.to_vec();
    }
    *at = serde_json::Value::String(new.to_owned());
    serde_json::to_vec(&json).unwrap_or_else(|_| text.to_vec())
}

/// A decoded value as the reply [`read_command`](crate::backend::keyspace::read_command)
/// would give for it (to digest it as a value read from a server).
pub fn as_reply(value: &Decoded) -> redis::Value {
    let bulk = |b: &[u8]| redis::Value::BulkString(b.to_vec());
    match value {
        Decoded::String(s) => bulk(s),
        Decoded::List(items) | Decoded::Set(items) => {
            redis::Value::Array(items.iter().map(|i| bulk(i)).collect())
        }
        Decoded::Hash(pairs) => {
            redis::Value::Array(pairs.iter().flat_map(|(f, v)| [bulk(f), bulk(v)]).collect())
        }
        Decoded::SortedSet(members) => {
            let mut sorted = members.clone();
            sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            redis::Value::Array(
                sorted
                    .iter()
                    .flat_map(|(m, score)| [bulk(m), bulk(score.to_string().as_bytes())])
                    .collect(),
            )
        }
        Decoded::Stream(_) => redis::Value::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bullv2() -> impl Fn(&[u8]) -> Vec<u8> {
        |key: &[u8]| match key.strip_prefix(b"bull:") {
            Some(rest) => [b"{bull}:".as_slice(), rest].concat(),
            None => key.to_vec(),
        }
    }

    fn hash(pairs: &[(&str, &str)]) -> Decoded {
        Decoded::Hash(
            pairs
                .iter()
                .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn a_flow_child_names_its_renamed_parent() {
        let child = hash(&[
            ("parentKey", "bull:reports:p1"),
            ("name", "part"),
            ("data", r#"{"queue":"bull:reports"}"#),
            (
                "opts",
                r#"{"parent":{"id":"p1","queue":"bull:reports"},"delay":0}"#,
            ),
            ("parent", r#"{"id":"p1","queueKey":"bull:reports"}"#),
        ]);
        let rewritten = rewrite(b"bull:parts:c1", &child, &bullv2()).unwrap();
        assert_eq!(
            rewritten,
            hash(&[
                ("parentKey", "{bull}:reports:p1"),
                ("name", "part"),
                // The job's own data is the application's: never touched.
                ("data", r#"{"queue":"bull:reports"}"#),
                (
                    "opts",
                    r#"{"parent":{"id":"p1","queue":"{bull}:reports"},"delay":0}"#
                ),
                ("parent", r#"{"id":"p1","queueKey":"{bull}:reports"}"#),
            ])
        );
    }

    #[test]
    fn a_parent_names_its_renamed_children() {
        let deps = Decoded::Set(vec![b"bull:parts:c1".to_vec(), b"other:parts:c2".to_vec()]);
        assert_eq!(
            rewrite(b"bull:reports:p1:dependencies", &deps, &bullv2()),
            Some(Decoded::Set(vec![
                b"{bull}:parts:c1".to_vec(),
                b"other:parts:c2".to_vec()
            ]))
        );
        let processed = hash(&[("bull:parts:c1", "\"done\"")]);
        assert_eq!(
            rewrite(b"bull:reports:p1:processed", &processed, &bullv2()),
            Some(hash(&[("{bull}:parts:c1", "\"done\"")]))
        );
        let unsuccessful = Decoded::SortedSet(vec![(b"bull:parts:c3".to_vec(), 1.0)]);
        assert_eq!(
            rewrite(b"bull:reports:p1:unsuccessful", &unsuccessful, &bullv2()),
            Some(Decoded::SortedSet(vec![(b"{bull}:parts:c3".to_vec(), 1.0)]))
        );
    }

    #[test]
    fn values_without_renamed_names_are_left_alone() {
        // A queue's own `failed` is a sorted set of job ids, not of keys.
        let failed = Decoded::SortedSet(vec![(b"7".to_vec(), 1.0)]);
        assert_eq!(rewrite(b"bull:mail:failed", &failed, &bullv2()), None);
        let plain = hash(&[("name", "send"), ("data", "{}")]);
        assert_eq!(rewrite(b"bull:mail:1", &plain, &bullv2()), None);
        // A parent outside the renamed keys keeps its name.
        let child = hash(&[("parentKey", "other:reports:p1")]);
        assert_eq!(rewrite(b"bull:parts:c1", &child, &bullv2()), None);
        assert!(may_refer(b"bull:r:p1:dependencies", b""));
        assert!(may_refer(b"bull:r:c1", b"..\x09parentKey.."));
        assert!(!may_refer(b"bull:r:c1", b"..name.."));
    }
}
