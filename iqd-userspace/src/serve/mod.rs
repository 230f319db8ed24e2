//! `iqd serve`: the fabric configured through the IBM Cloud VPC API (the subset that describes
//! LinuxONE bare metal servers, their HiperSockets interfaces and security groups).
//!
//! Requests change the desired state ([`model::Doc`]); one writer task applies each change (or
//! a batch of changes that arrived together) by rendering the fabric file, validating it as
//! `iqd check` does and applying it with `iqd up`'s engine under the fabric's lock. Only an
//! applied change is committed to the store ([`store`]) and acknowledged: nothing is
//! half-applied, and an acknowledged change survives a crash.
pub mod api;
pub mod model;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::Fabric;
use crate::lock::Wait;
use crate::state::{LparState, State};
use model::Doc;

/// An error as the VPC API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The VPC error body: `errors` [{code, message, more_info}], `trace`, `status_code`.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "errors": [{
                "code": self.code,
                "message": self.message,
                "more_info": format!("docs/vpc-api.md#{}", self.code),
            }],
            "trace": random_hex(16),
            "status_code": self.status,
        })
    }
}

/// A change of the desired state: modifies the document and returns the response (status and
/// body, computed from the changed document), or refuses.
pub type Change = Box<dyn Fn(&mut Doc) -> Result<(u16, Value), ApiError> + Send>;

type Reply = oneshot::Sender<Result<(u16, Value), ApiError>>;

/// What the writer task does: a change, or a scrape of the fabric's metrics (`iqd metrics`'s
/// text), which reads the pinned maps on the writer's thread like a change.
enum Job {
    Change(Change, Reply),
    Metrics(oneshot::Sender<Result<String, ApiError>>),
}

/// What the HTTP side shares.
pub struct App {
    pub token: String,
    /// `http://ADDR/v1`, the prefix of every href.
    pub base: String,
    /// The committed state.
    pub doc: RwLock<Doc>,
    writer: mpsc::UnboundedSender<Job>,
}

impl App {
    /// The committed state, to read.
    pub fn read(&self) -> Doc {
        self.doc.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `change` to the writer and waits until it is applied and committed, or refused.
    pub async fn change(&self, change: Change) -> Result<(u16, Value), ApiError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Change(change, tx))
            .map_err(|_| ApiError::new(503, "service_unavailable", "iqd serve is stopping"))?;
        rx.await
            .map_err(|_| ApiError::new(503, "service_unavailable", "iqd serve is stopping"))?
    }

    /// The served fabric's metrics in Prometheus' text format, as `iqd metrics` has them.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Metrics(tx))
            .map_err(|_| ApiError::new(503, "service_unavailable", "iqd serve is stopping"))?;
        rx.await
            .map_err(|_| ApiError::new(503, "service_unavailable", "iqd serve is stopping"))?
    }
}

/// Applies changes one batch at a time: the changes waiting when the writer is free are
/// applied together (one `up`); if that fails, each is applied alone, so one refused change
/// never takes the others with it.
pub struct Writer {
    pub config: PathBuf,
    pub store: store::Store,
    pub app: Arc<App>,
    rx: mpsc::UnboundedReceiver<Job>,
}

pub fn channel(
    token: String,
    base: String,
    doc: Doc,
    config: PathBuf,
    store: store::Store,
) -> (Arc<App>, Writer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        token,
        base,
        doc: RwLock::new(doc),
        writer: tx,
    });
    let writer = Writer {
        config,
        store,
        app: app.clone(),
        rx,
    };
    (app, writer)
}

/// Most changes applied in one `up`.
const MAX_BATCH: usize = 256;

impl Writer {
    pub async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut batch = Vec::new();
            let mut scrapes = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Change(change, reply) => batch.push((change, reply)),
                    Job::Metrics(reply) => scrapes.push(reply),
                }
                if batch.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.apply_batch(batch).await;
            }
            for reply in scrapes {
                let _ = reply.send(self.scrape().await);
            }
        }
    }

    async fn apply_batch(&mut self, batch: Vec<(Change, Reply)>) {
        if batch.len() > 1 {
            // Every change on top of the one before, applied in one `up`.
            let old = self.app.read();
            let mut doc = old.clone();
            let mut results = Vec::new();
            for (change, _) in &batch {
                let mut next = doc.clone();
                let result = change(&mut next);
                if result.is_ok() {
                    doc = next;
                }
                results.push(result);
            }
            if self.commit(&old, &doc).await.is_ok() {
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
                return;
            }
            // One of them cannot be applied: each alone, so it takes no other with it.
        }
        for (change, reply) in batch {
            let old = self.app.read();
            let mut doc = old.clone();
            let result = match change(&mut doc) {
                Ok(response) => self.commit(&old, &doc).await.map(|()| response),
                Err(e) => Err(e),
            };
            let _ = reply.send(result);
        }
    }

    async fn scrape(&self) -> Result<String, ApiError> {
        let Some(text) = self.app.read().render() else {
            return Err(ApiError::new(
                404,
                "not_found",
                "no fabric yet: the VPC has no subnet or no server",
            ));
        };
        let fabric = Fabric::parse(&text, &self.config).map_err(invalid)?;
        crate::metrics::gather(&fabric).await.map_err(failed)
    }

    /// Applies `new` (the fabric, then LPAR states), then commits it and publishes it.
    async fn commit(&mut self, old: &Doc, new: &Doc) -> Result<(), ApiError> {
        if old == new {
            return Ok(());
        }
        apply(&self.config, old, new).await?;
        self.store
            .commit(new)
            .map_err(|e| ApiError::new(500, "store_failed", e.to_string()))?;
        *self.app.doc.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(())
    }
}

/// Makes the fabric match `new`, coming from `old`: the fabric file through `iqd up`'s engine
/// (or `down` when the last subnet goes), then every server whose status changed through the
/// lifecycle code. A refused or failed `up` leaves the fabric and the file as they were.
pub async fn apply(config: &Path, old: &Doc, new: &Doc) -> Result<(), ApiError> {
    let old_text = old.render();
    let new_text = new.render();
    if old_text != new_text {
        match &new_text {
            Some(text) => up(config, text, old_text.as_deref()).await?,
            None => {
                if let Some(text) = &old_text {
                    let fabric = Fabric::parse(text, config).map_err(invalid)?;
                    crate::fabric::down(&fabric, Wait::Yes)
                        .await
                        .map_err(failed)?;
                    let _ = std::fs::remove_file(config);
                }
            }
        }
    }
    if let Some(text) = &new_text {
        set_states(config, text, new).await?;
    }
    Ok(())
}

/// Brings the fabric to the stored state at start: `up` is idempotent, so a running fabric
/// that already matches keeps every NIC and connection.
pub async fn restore(config: &Path, doc: &Doc) -> Result<(), ApiError> {
    let Some(text) = doc.render() else {
        return Ok(());
    };
    up(config, &text, None).await?;
    set_states(config, &text, doc).await
}

async fn up(config: &Path, text: &str, previous: Option<&str>) -> Result<(), ApiError> {
    // The same validator as `iqd check`, before anything changes.
    Fabric::parse(text, config).map_err(invalid)?;
    let before = std::fs::read_to_string(config).ok();
    crate::state::write_atomically(config, text.as_bytes()).map_err(failed)?;
    let result = async {
        let fabric = crate::fabric::load(config)?;
        crate::fabric::up(&fabric, config, Wait::Yes).await
    }
    .await;
    if let Err(e) = result {
        // The file says what runs: the last applied state.
        match previous.map(str::to_string).or(before) {
            Some(t) => {
                let _ = crate::state::write_atomically(config, t.as_bytes());
            }
            None => {
                let _ = std::fs::remove_file(config);
            }
        }
        return Err(match e {
            crate::Error::Refused { .. } => {
                ApiError::new(409, "fabric_change_refused", e.to_string())
            }
            crate::Error::Config(_) => invalid(e),
            e => failed(e),
        });
    }
    Ok(())
}

/// Stops and starts the LPARs whose status in `doc` is not the one they have.
async fn set_states(config: &Path, text: &str, doc: &Doc) -> Result<(), ApiError> {
    let fabric = Fabric::parse(text, config).map_err(invalid)?;
    let running = State::load(&fabric.name).map_err(failed)?;
    for server in &doc.servers {
        let stop = server.status == "stopped";
        let is_stopped = running.as_ref().is_some_and(|s| s.is_stopped(&server.lpar));
        if stop == is_stopped {
            continue;
        }
        let to = if stop {
            LparState::Stopped
        } else {
            LparState::Running
        };
        crate::fabric::set_lpar_state(&fabric, config, &server.lpar, to, Wait::Yes)
            .await
            .map_err(failed)?;
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(400, "fabric_invalid", e.to_string())
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, "fabric_apply_failed", e.to_string())
}

/// `n` random bytes as hex (tokens, traces).
pub fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    assert!(ok, "/dev/urandom must be readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
