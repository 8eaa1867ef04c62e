//! `notify:` webhooks: the run's events told to the people who are not at its terminal.
//!
//! Each webhook has its own queue and task: an event is queued the moment it happens and
//! delivered in order (POST, a 2xx answer counts), tried three times in all, each try
//! within the webhook's `timeout`. The run never waits for a delivery, and a delivery
//! never fails the run; every outcome is recorded in the journal
//! (`notifications`). When the run ends, what is still queued gets at most one
//! `timeout` more, once, and what is left then is recorded as not delivered. Bodies
//! and records pass through the run's redactor; a record names the webhook by its
//! scheme, host and port only (a webhook's path is often its secret).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::backend::net::{HttpRequest, http};
use crate::exec::engine::JournalHandle;
use crate::exec::event::RunEvent;
use crate::exec::journal::{NotificationRecord, RunStatus};
use crate::redact::Redactor;
use crate::runbook::spec::{NotifyEvent, NotifyFormat};

/// Tries of one delivery.
const ATTEMPTS: u32 = 3;

/// A webhook, its URL resolved.
pub struct Sink {
    /// The URL (may hold a secret).
    pub url: String,
    /// The body's format.
    pub format: NotifyFormat,
    /// Its events (every one when empty).
    pub events: Vec<NotifyEvent>,
    /// One try's time limit.
    pub timeout: Duration,
}

/// One event to deliver.
struct Message {
    event: NotifyEvent,
    body: String,
}

struct Queue {
    sender: mpsc::UnboundedSender<Message>,
    pending: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    label: String,
    timeout: Duration,
}

/// The webhooks of a run.
pub struct Notifier {
    queues: Vec<(Queue, NotifyFormat, Vec<NotifyEvent>)>,
    runbook: String,
    run_id: String,
    journal: Arc<JournalHandle>,
    redactor: Arc<Redactor>,
}

/// `scheme://host[:port]` of a URL: how a record names a webhook.
fn label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(an invalid URL)".into(),
    }
}

impl NotifyEvent {
    fn name(self) -> &'static str {
        match self {
            NotifyEvent::RunStarted => "run_started",
            NotifyEvent::GateWaiting => "gate_waiting",
            NotifyEvent::TriggerFired => "trigger_fired",
            NotifyEvent::RollbackStarted => "rollback_started",
            NotifyEvent::RollbackFinished => "rollback_finished",
            NotifyEvent::RunFinished => "run_finished",
        }
    }
}

impl Notifier {
    /// Starts a task per webhook.
    pub fn start(
        sinks: Vec<Sink>,
        runbook: &str,
        run_id: &str,
        journal: Arc<JournalHandle>,
        redactor: Arc<Redactor>,
    ) -> Notifier {
        let queues = sinks
            .into_iter()
            .map(|sink| {
                let (sender, receiver) = mpsc::unbounded_channel();
                let pending = Arc::new(AtomicUsize::new(0));
                let label = label(&sink.url);
                let task = tokio::spawn(deliver_all(
                    sink.url,
                    label.clone(),
                    sink.timeout,
                    receiver,
                    pending.clone(),
                    journal.clone(),
                    redactor.clone(),
                ));
                (
                    Queue {
                        sender,
                        pending,
                        task,
                        label,
                        timeout: sink.timeout,
                    },
                    sink.format,
                    sink.events,
                )
            })
            .collect();
        Notifier {
            queues,
            runbook: runbook.to_owned(),
            run_id: run_id.to_owned(),
            journal,
            redactor,
        }
    }

    /// Queues what `event` tells (nothing for events no webhook is told of).
    pub fn observe(&self, event: &RunEvent) {
        for (kind, fields) in self.describe(event) {
            for (queue, format, events) in &self.queues {
                if !events.is_empty() && !events.contains(&kind) {
                    continue;
                }
                let body = self.redactor.redact(&self.body(kind, &fields, *format));
                queue.pending.fetch_add(1, Ordering::SeqCst);
                if queue.sender.send(Message { event: kind, body }).is_err() {
                    queue.pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// The events `event` is, each with its fields (`step`, `text`, ...).
    fn describe(&self, event: &RunEvent) -> Vec<(NotifyEvent, Vec<(&'static str, String)>)> {
        match event {
            RunEvent::RunStarted { resumed, steps, .. } => vec![(
                NotifyEvent::RunStarted,
                vec![(
                    "text",
                    format!(
                        "{} ({steps} steps)",
                        if *resumed { "resumed" } else { "started" }
                    ),
                )],
            )],
            RunEvent::GateOpened {
                gate,
                question,
                evidence,
            } => {
                let mut text = format!("`{gate}` waits for a decision: {question}");
                if !evidence.is_empty() {
                    text.push_str("\nEvidence:");
                    for line in evidence.iter().rev().take(10).rev() {
                        text.push_str(&format!("\n- {line}"));
                    }
                }
                let approve = format!("redis-move approve {} {gate}", self.run_id);
                text.push_str(&format!("\nApprove: {approve}"));
                vec![(
                    NotifyEvent::GateWaiting,
                    vec![("step", gate.clone()), ("text", text), ("approve", approve)],
                )]
            }
            RunEvent::TriggerFired {
                trigger,
                condition,
                reason,
                outcome,
            } => vec![(
                NotifyEvent::TriggerFired,
                vec![
                    ("step", trigger.clone()),
                    (
                        "text",
                        format!("trigger `{trigger}` fired ({condition}): {reason}; {outcome}"),
                    ),
                ],
            )],
            RunEvent::RollbackStarted { reason } => vec![(
                NotifyEvent::RollbackStarted,
                vec![("text", format!("rollback started: {reason}"))],
            )],
            RunEvent::RunFinished { status, reason, .. } => {
                let mut events = Vec::new();
                if matches!(status, RunStatus::RolledBack | RunStatus::RollbackFailed) {
                    events.push((
                        NotifyEvent::RollbackFinished,
                        vec![(
                            "text",
                            if *status == RunStatus::RolledBack {
                                "rollback finished: everything undone".to_owned()
                            } else {
                                "rollback finished with changes left: manual action needed"
                                    .to_owned()
                            },
                        )],
                    ));
                }
                events.push((
                    NotifyEvent::RunFinished,
                    vec![
                        ("status", format!("{status:?}")),
                        ("text", format!("run finished: {status:?} ({reason})")),
                    ],
                ));
                events
            }
            _ => Vec::new(),
        }
    }

    fn body(&self, kind: NotifyEvent, fields: &[(&str, String)], format: NotifyFormat) -> String {
        let text = fields
            .iter()
            .find(|(k, _)| *k == "text")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        match format {
            NotifyFormat::Slack => serde_json::json!({
                "text": format!("redis-move `{}` run {}: {text}", self.runbook, self.run_id)
            })
            .to_string(),
            NotifyFormat::Json => {
                let mut object = serde_json::Map::new();
                object.insert("event".into(), kind.name().into());
                object.insert("runbook".into(), self.runbook.clone().into());
                object.insert("run_id".into(), self.run_id.clone().into());
                object.insert("at".into(), jiff::Timestamp::now().to_string().into());
                for (k, v) in fields {
                    object.insert((*k).into(), v.clone().into());
                }
                serde_json::Value::Object(object).to_string()
            }
        }
    }

    /// Gives what is still queued at most one `timeout` more (the longest of the
    /// webhooks'), then records what is left as not delivered.
    pub async fn finish(self) {
        let wait = self
            .queues
            .iter()
            .map(|(q, _, _)| q.timeout)
            .max()
            .unwrap_or_default();
        let mut tasks = Vec::new();
        let mut left = Vec::new();
        for (queue, _, _) in self.queues {
            drop(queue.sender);
            left.push((queue.label, queue.pending));
            tasks.push(queue.task);
        }
        let all = futures_util::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(wait, all).await.is_err() {
            for task in &tasks {
                task.abort();
            }
        }
        for (label, pending) in left {
            let n = pending.load(Ordering::SeqCst);
            if n > 0 {
                let record = NotificationRecord {
                    event: format!("{n} more"),
                    webhook: label,
                    delivered: false,
                    attempts: 0,
                    detail: "the run ended before they could be delivered".into(),
                    at: jiff::Timestamp::now(),
                };
                self.journal
                    .update(|j| j.notifications.push(record.clone()));
            }
        }
    }
}

/// `text` with the webhook's URL (and its path, which may be a secret, as Slack's is)
/// replaced by its label.
fn scrub(text: &str, url: &str, label: &str) -> String {
    let mut out = text.replace(url, label);
    if let Ok(parsed) = url::Url::parse(url) {
        let rest = &url[url.find(parsed.path()).unwrap_or(url.len())..];
        if rest.len() > 1 {
            out = out.replace(rest, "/...");
        }
        let path = parsed.path();
        if path.len() > 1 {
            out = out.replace(path, "/...");
        }
    }
    out
}

/// A webhook's task: delivers its queue in order, each message tried [`ATTEMPTS`] times.
async fn deliver_all(
    url: String,
    label: String,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Message>,
    pending: Arc<AtomicUsize>,
    journal: Arc<JournalHandle>,
    redactor: Arc<Redactor>,
) {
    while let Some(message) = queue.recv().await {
        let request = HttpRequest {
            method: "POST".into(),
            url: url.clone(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(message.body),
            status: None,
            ca: None,
            insecure: false,
            timeout,
        };
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            match http(&request).await {
                Ok(value) => {
                    break Ok(value
                        .field("status")
                        .map(|s| s.to_string())
                        .unwrap_or_default());
                }
                Err(e) if attempts >= ATTEMPTS => break Err(e.to_string()),
                Err(_) => tokio::time::sleep(Duration::from_millis(500) * attempts).await,
            }
        };
        let (delivered, detail) = match outcome {
            Ok(status) => (true, format!("HTTP {status}")),
            Err(e) => (false, redactor.redact(&scrub(&e, &url, &label))),
        };
        let record = NotificationRecord {
            event: message.event.name().into(),
            webhook: label.clone(),
            delivered,
            attempts,
            detail,
            at: jiff::Timestamp::now(),
        };
        if !delivered {
            tracing::warn!(
                "notification `{}` to {label} not delivered: {}",
                record.event,
                record.detail
            );
        }
        journal.update(|j| j.notifications.push(record.clone()));
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}
