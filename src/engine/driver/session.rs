//! A running browser of a session as the engine's callers see it (BrowserSession): its events, its
//! pid, closing it, and the adapter calls made through it: send text and media, purge memory,
//! pairing code, the page's HTML, logout; with the recipient and result checks those calls share.

use super::*;

/// One running browser of a session. Cheap to clone; the browser is closed by
/// [`close`](Self::close), or cleanly in the background once every clone is dropped.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) page: Page,
    pub(super) pid: Option<u32>,
    /// The live document's tracker, when the launch asked for capture.
    pub(super) document: Option<DocumentTracker>,
    pub(super) close_tx: Mutex<Option<oneshot::Sender<()>>>,
    pub(super) exited: watch::Receiver<bool>,
    pub(super) events: Mutex<Option<EventReceiver>>,
    pub(super) closing: Arc<AtomicBool>,
    pub(super) request_timeout: Duration,
    pub(super) close_timeout: Duration,
}

// === impl BrowserSession ===

impl BrowserSession {
    /// The event stream; `Some` once, for the one consumer (the supervisor).
    pub fn take_events(&self) -> Option<EventReceiver> {
        self.inner.events.lock().ok()?.take()
    }

    /// The Chromium browser process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        if self.is_closed() {
            None
        } else {
            self.inner.pid
        }
    }

    /// Whether the browser process is gone (closed, crashed or killed) and reaped.
    pub fn is_closed(&self) -> bool {
        *self.inner.exited.borrow()
    }

    /// Waits until the browser process is gone and reaped.
    pub async fn wait_closed(&self) {
        let mut exited = self.inner.exited.clone();
        let _ = exited.wait_for(|e| *e).await;
    }

    /// Closes the browser cleanly (profile flushed) and waits for the process to be reaped.
    /// Idempotent; also fine after a crash.
    pub async fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let tx = self.inner.close_tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        // close_cleanly takes at most two close timeouts, reap one more.
        let limit = self.inner.close_timeout * 3 + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.wait_closed())
            .await
            .is_err()
        {
            tracing::error!(pid = ?self.inner.pid, "browser did not close in time");
        }
    }

    /// Sends a text message; `to` is a phone number (digits) or a Wid (`<digits>@c.us`).
    pub async fn send_text(&self, to: &str, text: &str) -> Result<SentMessage, EngineError> {
        check_recipient(to)?;
        let started = Instant::now();
        let expr = format!(
            "window.__wafleetAdapter.sendText({}, {})",
            js_string(to),
            js_string(text)
        );
        let value = self.call(expr, "send").await?;
        super::super::metrics::send_latency(started.elapsed());
        sent_id(&value)
    }

    /// Sends media (bytes, mimetype, filename, caption).
    pub async fn send_media(&self, to: &str, media: &Media) -> Result<SentMessage, EngineError> {
        check_recipient(to)?;
        if media.data.is_empty() || media.data.len() > MAX_MEDIA_BYTES {
            return Err(EngineError::Invalid(format!(
                "media must be 1 to {MAX_MEDIA_BYTES} bytes"
            )));
        }
        if !media.mimetype.contains('/') || media.mimetype.len() > 255 {
            return Err(EngineError::Invalid(
                "mimetype must look like type/subtype".into(),
            ));
        }
        let started = Instant::now();
        let payload = serde_json::json!({
            "data": base64::engine::general_purpose::STANDARD.encode(&media.data),
            "mimetype": media.mimetype,
            "filename": media.filename,
            "caption": media.caption,
            "size": media.data.len(),
        });
        let expr = format!(
            "window.__wafleetAdapter.sendMedia({}, {})",
            js_string(to),
            payload
        );
        let value = self.call(expr, "send").await?;
        super::super::metrics::send_latency(started.elapsed());
        sent_id(&value)
    }

    /// Frees what the browser can spare without touching the page's state: a critical
    /// memory-pressure notification to every process, then a full GC of the page's heap
    /// (the engine's periodic purge, docs/engine.md §9). Never
    /// `Memory.forciblyPurgeJavaScriptMemory`, which destroys the page's JavaScript context.
    pub async fn purge_memory(&self) -> Result<(), EngineError> {
        use chromiumoxide::cdp::browser_protocol::memory::{
            PressureLevel, SimulatePressureNotificationParams,
        };
        use chromiumoxide::cdp::js_protocol::heap_profiler::CollectGarbageParams;
        let page = &self.inner.page;
        let purge = async {
            page.execute(SimulatePressureNotificationParams::new(
                PressureLevel::Critical,
            ))
            .await?;
            page.execute(CollectGarbageParams::default()).await?;
            Ok::<_, EngineError>(())
        };
        tokio::time::timeout(self.inner.request_timeout, purge)
            .await
            .map_err(|_| EngineError::Timeout("memory purge"))?
    }

    /// Asks WhatsApp Web for a pairing code for `phone` (digits, international format). The
    /// code is returned and also arrives as [`EngineEvent::PairingCode`], again every three
    /// minutes while unpaired.
    pub async fn request_pairing_code(&self, phone: &str) -> Result<String, EngineError> {
        let digits: String = phone.chars().filter(|c| c.is_ascii_digit()).collect();
        if !(5..=20).contains(&digits.len()) {
            return Err(EngineError::Invalid(
                "phone must have 5 to 20 digits".into(),
            ));
        }
        let expr = format!(
            "window.__wafleetAdapter.requestPairingCode({}, 180000)",
            js_string(&digits)
        );
        let value = self.call(expr, "pairing code").await?;
        value
            .get("code")
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .ok_or_else(|| EngineError::Adapter("no code in answer".into()))
    }

    /// The `index.html` WhatsApp Web was served live in this browser (for the version cache);
    /// `None` for a pinned launch, a launch without capture, or when Chromium no longer has it.
    pub async fn document_html(&self) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(doc) = &self.inner.document else {
            return Ok(None);
        };
        if self.is_closed() {
            return Err(EngineError::Closed);
        }
        tokio::time::timeout(self.inner.request_timeout, doc.read())
            .await
            .map_err(|_| EngineError::Timeout("document body"))?
    }

    /// Unlinks this device from the phone (WhatsApp Web then reloads logged out). The caller
    /// closes the browser and deletes the profile afterwards.
    pub async fn logout(&self) -> Result<(), EngineError> {
        self.call("window.__wafleetAdapter.logout()".into(), "logout")
            .await
            .map(|_| ())
    }

    /// Runs an adapter command and returns its `{ok: true, …}` answer.
    pub(crate) async fn call(
        &self,
        expr: String,
        what: &'static str,
    ) -> Result<serde_json::Value, EngineError> {
        if self.is_closed() || self.inner.closing.load(Ordering::SeqCst) {
            return Err(EngineError::Closed);
        }
        // Guarded: before the adapter is loaded the command answers instead of throwing.
        let expr = format!(
            "(window.__wafleetAdapter ? {expr} : Promise.resolve({{ok: false, error: 'WhatsApp Web is not loaded'}}))"
        );
        let params = EvaluateParams::builder()
            .expression(expr)
            .await_promise(true)
            .return_by_value(true)
            .build()
            .map_err(EngineError::Page)?;
        let resp =
            tokio::time::timeout(self.inner.request_timeout, self.inner.page.execute(params))
                .await
                .map_err(|_| EngineError::Timeout(what))??;
        if let Some(ex) = &resp.result.exception_details {
            let detail = ex
                .exception
                .as_ref()
                .and_then(|e| e.description.clone())
                .unwrap_or_else(|| ex.text.clone());
            return Err(EngineError::Page(detail));
        }
        let value = resp.result.result.value.clone().unwrap_or_default();
        if value.get("ok").and_then(|v| v.as_bool()) == Some(true) {
            Ok(value)
        } else {
            let error = value
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("command failed")
                .to_string();
            Err(EngineError::Adapter(error))
        }
    }
}

pub(crate) fn check_recipient(to: &str) -> Result<(), EngineError> {
    let user = to.split('@').next().unwrap_or_default();
    let digits = user.chars().filter(|c| c.is_ascii_digit()).count();
    if to.is_empty() || to.len() > 128 || !(5..=32).contains(&digits) {
        return Err(EngineError::Invalid(format!("bad recipient {to:?}")));
    }
    Ok(())
}

pub(crate) fn sent_id(value: &serde_json::Value) -> Result<SentMessage, EngineError> {
    value
        .get("id")
        .and_then(|v| v.as_str())
        .map(|id| SentMessage { id: id.to_string() })
        .ok_or_else(|| EngineError::Adapter("no message id in answer".into()))
}

/// A JavaScript string literal for `s` (JSON strings are valid JS literals).
pub(crate) fn js_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
