//! The single-server `redis.*` actions: ping, info, dbsize, scan_count, queues,
//! config_get, command, and config_set with the previous value kept for its rollback.
//! Moving data between servers is [`super::replication`], [`super::copy`],
//! [`super::verify`] and [`super::delete`].

use super::act::Act;
use super::captured::Captured;
use super::probe::ProbeContext;
use super::runner::ActionError;
use crate::backend::BackendError;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::runbook::action::{Action, ClientsParams, Nodes};
use crate::runbook::expect::compile_regex;
use crate::value::Value;

/// Runs a read-only single-server Redis action on `target`.
pub async fn probe(
    action: &Action,
    target: Option<&str>,
    ctx: &ProbeContext<'_>,
) -> Result<Value, ActionError> {
    let r = &ctx.resolver;
    let target = target
        .ok_or_else(|| ActionError::config(format!("`{}` has no redis target", action.name())))?;
    let redis = ctx.connections.redis(target, r).await?;
    Ok(match action {
        Action::RedisPing(_) => Value::Duration(redis.ping().await?),
        Action::RedisInfo(p) => {
            let (section, field) = p.section_and_field();
            combine_nodes(
                &p.field,
                redis.info_of_nodes(section, field).await?,
                p.nodes,
            )?
        }
        Action::RedisDbsize(p) => {
            let sizes = redis.dbsize_of_nodes().await?;
            combine_nodes(
                "keys",
                sizes
                    .into_iter()
                    .map(|(node, n)| (node, Value::Number(n as f64)))
                    .collect(),
                p.nodes,
            )?
        }
        Action::RedisClusterCheck(_) => cluster_check(&redis).await?,
        Action::RedisScanCount(p) => {
            let pattern = r.resolve(&p.pattern)?;
            let key_type = p.key_type.map(|t| t.to_string());
            let count = redis
                .scan_count(&pattern, key_type.as_deref(), p.count.unwrap_or(1000))
                .await?;
            Value::Number(count as f64)
        }
        Action::RedisCommand(p) => redis.command(&r.resolve_all(&p.args)?).await?,
        Action::RedisConfigGet(p) => redis.config_get(&p.parameter).await?,
        Action::RedisQueues(p) => {
            redis
                .queues(p.prefix.as_deref().unwrap_or("bull"), &p.queues)
                .await?
        }
        Action::RedisClients(p) => clients(&redis, p, r).await?,
        other => {
            return Err(ActionError::config(format!(
                "`{}` is not a read-only redis action",
                other.name()
            )));
        }
    })
}

/// The values of a cluster's primaries (or one server's) as one value, as `nodes` says.
fn combine_nodes(
    field: &str,
    values: Vec<(String, Value)>,
    nodes: Nodes,
) -> Result<Value, ActionError> {
    let numbers = || -> Result<Vec<f64>, ActionError> {
        values
            .iter()
            .map(|(node, value)| match value {
                Value::Number(n) => Ok(*n),
                other => Err(ActionError::config(format!(
                    "`nodes: {}` needs numbers, and `{field}` of {node} is {} `{other}`",
                    if nodes == Nodes::Max { "max" } else { "min" },
                    other.kind_name()
                ))),
            })
            .collect()
    };
    Ok(match nodes {
        Nodes::Sum => crate::backend::redis::aggregate_over_nodes(field, values)?,
        Nodes::Max => Value::Number(numbers()?.into_iter().fold(f64::MIN, f64::max)),
        Nodes::Min => Value::Number(numbers()?.into_iter().fold(f64::MAX, f64::min)),
        Nodes::Each => Value::Object(values.into_iter().collect()),
    })
}

/// The cluster's health; an error naming what is wrong unless it is all well.
async fn cluster_check(redis: &crate::backend::redis::RedisBackend) -> Result<Value, ActionError> {
    let cluster = redis.cluster().ok_or_else(|| {
        ActionError::config("`redis.cluster_check` needs a cluster target (`cluster: true`)")
    })?;
    let health = cluster.health().await?;
    let mut wrong = Vec::new();
    let text = |field: &str| health.field(field).map(Value::as_text).unwrap_or_default();
    let number = |field: &str| match health.field(field) {
        Some(Value::Number(n)) => *n,
        _ => 0.0,
    };
    let list = |field: &str| match health.field(field) {
        Some(Value::List(items)) => items.iter().map(Value::as_text).collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    if text("state") != "ok" {
        wrong.push(format!("cluster_state is {}", text("state")));
    }
    let uncovered = number("slots_uncovered").max(16384.0 - number("slots_ok"));
    if uncovered > 0.0 {
        wrong.push(format!("{uncovered} of 16384 slots are not served"));
    }
    if !list("failing").is_empty() {
        wrong.push(format!("failing: {}", list("failing").join(", ")));
    }
    if !list("migrating").is_empty() {
        wrong.push(format!("slots migrating: {}", list("migrating").join(", ")));
    }
    if wrong.is_empty() {
        Ok(health)
    } else {
        Err(ActionError::Backend(BackendError::Command(format!(
            "the cluster is not healthy: {}",
            wrong.join("; ")
        ))))
    }
}

/// The clients of `redis` that `p` selects, as records.
async fn clients(
    redis: &crate::backend::redis::RedisBackend,
    p: &ClientsParams,
    r: &crate::actions::resolve::Resolver<'_>,
) -> Result<Value, ActionError> {
    let regex = |t: Option<&crate::runbook::template::Template>| -> Result<Option<regex::Regex>, ActionError> {
        match r.resolve_opt(t)? {
            Some(text) => Ok(Some(compile_regex(&text).map_err(ActionError::config)?)),
            None => Ok(None),
        }
    };
    let (name, lib, addr) = (
        regex(p.name.as_ref())?,
        regex(p.lib.as_ref())?,
        regex(p.addr.as_ref())?,
    );
    let (list, own_id) = redis.clients().await?;
    let matches =
        |re: &Option<regex::Regex>, text: &str| re.as_ref().is_none_or(|re| re.is_match(text));
    let selected = list.into_iter().filter(|c| {
        (p.replicas || !c.is_replica())
            && (p.include_self || (c.get("id") != own_id && !c.is_redis_move()))
            && matches(&name, c.get("name"))
            && matches(&lib, c.get("lib-name"))
            && matches(&addr, c.get("addr"))
    });
    let seconds = |text: &str| Value::Duration(Duration::from_secs(text.parse().unwrap_or(0)));
    Ok(Value::List(
        selected
            .map(|c| {
                let mut record = BTreeMap::new();
                let addr = c.get("addr").to_owned();
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr.as_str(), |(h, _)| h)
                    .to_owned();
                record.insert(
                    "id".into(),
                    Value::Number(c.get("id").parse().unwrap_or(0.0)),
                );
                record.insert("host".into(), Value::Text(host));
                record.insert("addr".into(), Value::Text(addr));
                for field in ["laddr", "name", "flags", "cmd"] {
                    record.insert(field.into(), Value::Text(c.get(field).to_owned()));
                }
                record.insert("lib_name".into(), Value::Text(c.get("lib-name").to_owned()));
                record.insert("lib_ver".into(), Value::Text(c.get("lib-ver").to_owned()));
                record.insert(
                    "db".into(),
                    Value::Number(c.get("db").parse().unwrap_or(0.0)),
                );
                record.insert("age".into(), seconds(c.get("age")));
                record.insert("idle".into(), seconds(c.get("idle")));
                record.insert("replica".into(), Value::Bool(c.is_replica()));
                // The node it is connected to: a cluster's `host:port`, else this server.
                let node = match c.get("node") {
                    "" => redis.label(),
                    node => node.to_owned(),
                };
                record.insert("node".into(), Value::Text(node));
                Value::Object(record)
            })
            .collect(),
    ))
}

/// What `redis.config_set` captures: the parameter's value before.
pub async fn capture(act: &Act<'_>) -> Result<Option<Captured>, ActionError> {
    let Action::RedisConfigSet(p) = &act.step.action else {
        return Ok(None);
    };
    let previous = act
        .target_redis()
        .await?
        .config_get(&p.parameter)
        .await?
        .as_text();
    // A password (or a value equal to a secret) is kept out of the journal, so that
    // the rollback can put the true value back.
    let previous = super::vault::keep_if_secret(
        act.ctx.run_dir,
        act.ctx.redactor,
        &format!("{}/{}", act.step.id, p.parameter),
        &previous,
        super::vault::sensitive_parameter(&p.parameter),
    )?;
    Ok(Some(Captured::ConfigValue {
        parameter: p.parameter.clone(),
        previous,
    }))
}

/// Performs `redis.command` (one that writes) or `redis.config_set`.
pub async fn perform(act: &Act<'_>) -> Result<Value, ActionError> {
    let r = act.resolver();
    let redis = act.target_redis().await?;
    match &act.step.action {
        Action::RedisCommand(p) => Ok(redis.command(&r.resolve_all(&p.args)?).await?),
        Action::RedisConfigSet(p) => {
            redis
                .config_set(&p.parameter, &r.resolve(&p.value)?)
                .await?;
            Ok(redis.config_get(&p.parameter).await?)
        }
        other => Err(ActionError::config(format!(
            "`{}` is not a redis command",
            other.name()
        ))),
    }
}

/// Puts back the value `redis.config_set` replaced.
pub async fn undo(act: &Act<'_>) -> Result<Value, ActionError> {
    let Some(Captured::ConfigValue {
        parameter,
        previous,
    }) = act.captured
    else {
        return Err(BackendError::Unexpected("the previous value was not captured".into()).into());
    };
    let previous = super::vault::reveal(act.ctx.run_dir, previous)?;
    if previous == crate::redact::MASK {
        return Err(ActionError::config(format!(
            "the value of `{parameter}` before was not kept (a journal written before redis-move kept such values): set it back by hand"
        )));
    }
    let redis = act.target_redis().await?;
    Ok(redis
        .command(&["CONFIG".into(), "SET".into(), parameter.clone(), previous])
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<(String, Value)> {
        vec![
            ("10.0.0.1:7000".into(), Value::Number(3.0)),
            ("10.0.0.2:7000".into(), Value::Number(7.0)),
            ("10.0.0.3:7000".into(), Value::Number(5.0)),
        ]
    }

    #[test]
    fn a_cluster_s_nodes_make_one_value_as_asked() {
        let combine = |how| combine_nodes("used_memory", nodes(), how).unwrap();
        assert_eq!(combine(Nodes::Sum), Value::Number(15.0));
        assert_eq!(combine(Nodes::Max), Value::Number(7.0));
        assert_eq!(combine(Nodes::Min), Value::Number(3.0));
        let each = combine(Nodes::Each);
        assert_eq!(each.field("10.0.0.2:7000"), Some(&Value::Number(7.0)));
        let text = vec![("a:1".into(), Value::Text("noeviction".into()))];
        let refused = combine_nodes("maxmemory_policy", text, Nodes::Max).unwrap_err();
        assert!(refused.to_string().contains("needs numbers"), "{refused}");
    }
}
