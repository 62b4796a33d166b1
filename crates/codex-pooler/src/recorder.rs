//! The request recorder: one writer task that takes record events from a
//! bounded channel and writes them in batched transactions, in order. Senders
//! wait when the channel is full (backpressure, never dropping), failed batches
//! are retried, and on shutdown the channel is drained before the task ends.
//! On SQLite each batch is written under the runtime's write gate, which key
//! reservations take too: writers queue fairly in the process instead of
//! spinning in SQLite's busy handler.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::store::{RecordEvent, Store};

/// One process-wide, fair turn at SQLite's single write lock (`None` on
/// PostgreSQL, which has row locks).
pub type WriteGate = Option<std::sync::Arc<tokio::sync::Mutex<()>>>;

const CHANNEL_CAPACITY: usize = 16_384;
const MAX_BATCH: usize = 512;
/// After the first event of a batch, wait this long for more before writing:
/// one transaction then carries many requests, which keeps the writer's cost
/// per request low under load.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

enum Message {
    Event(RecordEvent),
    Flush(oneshot::Sender<()>),
}

/// A cheap handle for sending record events.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    /// Starts the writer task on `tasks`. It ends when every `Recorder` clone is
    /// dropped and the channel is drained.
    pub fn start(
        store: Store,
        tasks: &TaskTracker,
        instance_id: String,
        gate: WriteGate,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tasks.spawn(write_loop(
            Writer {
                store,
                gate,
                instance_id,
            },
            rx,
        ));
        Recorder {
            tx,
            tasks: tasks.clone(),
        }
    }

    /// Queues an event, waiting while the queue is full.
    pub async fn send(&self, event: RecordEvent) {
        if self.tx.send(Message::Event(event)).await.is_err() {
            tracing::error!("request recorder is gone; a record event was not written");
        }
    }

    /// Queues an event from synchronous code (such as a `Drop`): immediately when
    /// there is room, otherwise from a tracked task that waits for room.
    pub fn send_now(&self, event: RecordEvent) {
        match self.tx.try_send(Message::Event(event)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                let tx = self.tx.clone();
                self.tasks.spawn(async move {
                    let _ = tx.send(message).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("request recorder is gone; a record event was not written");
            }
        }
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// What the writer task writes with.
struct Writer {
    store: Store,
    gate: WriteGate,
    instance_id: String,
}

impl Writer {
    async fn apply(&self, events: &[RecordEvent]) -> crate::store::StoreResult<()> {
        let _turn = match &self.gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        self.store
            .apply_record_batch(events, &self.instance_id)
            .await
    }
}

async fn write_loop(writer: Writer, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + BATCH_LINGER;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let flush = matches!(message, Message::Flush(_));
            match message {
                Message::Event(e) => batch.push(e),
                Message::Flush(done) => waiters.push(done),
            }
            if batch.len() >= MAX_BATCH || flush {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten(),
            };
        }
        if !batch.is_empty() {
            write_with_retry(&writer, &batch, rx.is_closed()).await;
            batch.clear();
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_with_retry(writer: &Writer, batch: &[RecordEvent], closing: bool) {
    if retry(writer, batch, closing, 3).await {
        return;
    }
    // A batch that keeps failing may hold one event the database refuses (for
    // example a row whose Pool was deleted meanwhile): write the events one by
    // one so only that event is given up, and say so.
    for event in batch {
        if !retry(writer, std::slice::from_ref(event), closing, 20).await {
            tracing::error!(event = ?event_kind(event), "a request record could not be written and was skipped");
        }
    }
}

async fn retry(writer: &Writer, events: &[RecordEvent], closing: bool, max_tries: u32) -> bool {
    let mut delay = Duration::from_millis(50);
    for tries in 1..=max_tries {
        match writer.apply(events).await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(error = %err, tries, events = events.len(), "writing request records failed");
                if closing && tries >= 3 {
                    return false;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    false
}

fn event_kind(event: &RecordEvent) -> &'static str {
    match event {
        RecordEvent::Request(_) => "request",
        RecordEvent::AttemptStarted(_) => "attempt_started",
        RecordEvent::AttemptEnded(_) => "attempt_ended",
        RecordEvent::RequestEnded(_) => "request_ended",
        RecordEvent::Quota(_) => "quota",
        RecordEvent::KeyUsed { .. } => "key_used",
    }
}
