//! WhatsApp Web's `index.html`: serving a cached copy (version pinning) and reading the live one
//! a session was served (to cache it).
//!
//! * **Pinning** ([`pin_index_html`]): `Fetch` interception with one pattern, documents under
//!   the WhatsApp Web URL, each answered with `Fetch.fulfillRequest` and the cached body (as
//!   whatsapp-web.js's `webVersionCache` does); nothing else is paused.
//! * **Capture** ([`DocumentTracker`]): chromiumoxide enables the `Network` domain on every
//!   page, so Chromium already keeps response bodies for DevTools. The tracker only remembers
//!   the request id of the last top-level WhatsApp Web document (`Network.responseReceived`);
//!   [`DocumentTracker::read`] asks for that body (`Network.getResponseBody`) once, when the
//!   session has proved the version good. Nothing is copied for sessions that never ask.

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use chromiumoxide::cdp::browser_protocol::network::{
    EventResponseReceived, GetResponseBodyParams, RequestId, ResourceType,
};
use chromiumoxide::page::Page;
use futures::StreamExt;
use tokio_util::task::TaskTracker;

use super::driver::EngineError;

/// Largest `index.html` served from or read into the cache.
pub const MAX_INDEX_HTML_BYTES: u64 = 8 << 20;

/// The URL without its query and fragment (`?post_logout=1` is the same document).
pub fn strip_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Serves the cached `index.html` at `path` for every top-level document load of `wa_url`
/// (query strings included, e.g. `?post_logout=1`) through `Fetch` interception; nothing else is
/// paused (the pattern matches documents under `wa_url` only).
pub async fn pin_index_html(
    page: &Page,
    wa_url: &str,
    path: &Path,
    tracker: &TaskTracker,
) -> Result<(), EngineError> {
    use chromiumoxide::cdp::browser_protocol::fetch::{
        ContinueRequestParams, EnableParams as FetchEnable, EventRequestPaused,
        FulfillRequestParams, HeaderEntry, RequestPattern, RequestStage,
    };

    let unreadable = |e: std::io::Error| {
        EngineError::Launch(format!("pinned index.html {}: {e}", path.display()))
    };
    let meta = tokio::fs::metadata(path).await.map_err(unreadable)?;
    if meta.len() > MAX_INDEX_HTML_BYTES {
        return Err(EngineError::Launch(format!(
            "pinned index.html {} is larger than {MAX_INDEX_HTML_BYTES} bytes",
            path.display()
        )));
    }
    let html = tokio::fs::read(path).await.map_err(unreadable)?;
    let body = base64::engine::general_purpose::STANDARD.encode(&html);
    let base = strip_query(wa_url).to_string();

    let mut paused = page.event_listener::<EventRequestPaused>().await?;
    let pattern = RequestPattern {
        url_pattern: Some(format!("{base}*")),
        resource_type: Some(ResourceType::Document),
        request_stage: Some(RequestStage::Request),
    };
    page.execute(FetchEnable {
        patterns: Some(vec![pattern]),
        handle_auth_requests: None,
    })
    .await?;
    let page = page.clone();
    tracker.spawn(async move {
        while let Some(event) = paused.next().await {
            let result = if strip_query(&event.request.url) == base {
                let mut fulfill = FulfillRequestParams::new(event.request_id.clone(), 200);
                fulfill.response_headers = Some(vec![
                    HeaderEntry::new("Content-Type", "text/html; charset=utf-8"),
                    HeaderEntry::new("Cache-Control", "no-store"),
                ]);
                fulfill.body = Some(body.clone().into());
                page.execute(fulfill).await.map(|_| ())
            } else {
                page.execute(ContinueRequestParams::new(event.request_id.clone()))
                    .await
                    .map(|_| ())
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "pinned index.html interception failed");
            }
        }
    });
    Ok(())
}

/// Remembers the last top-level WhatsApp Web document a page received, to read its body later.
#[derive(Debug, Clone)]
pub struct DocumentTracker {
    page: Page,
    last: Arc<Mutex<Option<RequestId>>>,
}

impl DocumentTracker {
    /// Starts tracking on `page` (before it navigates) the documents under `wa_url` answered
    /// with 200; the listener task ends with the page.
    pub async fn start(
        page: &Page,
        wa_url: &str,
        tracker: &TaskTracker,
    ) -> Result<DocumentTracker, EngineError> {
        let mut responses = page.event_listener::<EventResponseReceived>().await?;
        let last = Arc::new(Mutex::new(None));
        let base = strip_query(wa_url).to_string();
        let slot = last.clone();
        tracker.spawn(async move {
            while let Some(ev) = responses.next().await {
                if ev.r#type == ResourceType::Document
                    && ev.response.status == 200
                    && strip_query(&ev.response.url) == base
                    && let Ok(mut g) = slot.lock()
                {
                    *g = Some(ev.request_id.clone());
                }
            }
        });
        Ok(DocumentTracker {
            page: page.clone(),
            last,
        })
    }

    /// The body of the last WhatsApp Web document, if Chromium still has it (its DevTools
    /// buffer may have dropped it on a page that loaded a lot since).
    pub async fn read(&self) -> Result<Option<Vec<u8>>, EngineError> {
        let id = self.last.lock().ok().and_then(|g| g.clone());
        let Some(id) = id else { return Ok(None) };
        let body = self.page.execute(GetResponseBodyParams::new(id)).await?;
        let bytes = if body.result.base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(&body.result.body)
                .map_err(|e| EngineError::Page(format!("document body: {e}")))?
        } else {
            body.result.body.clone().into_bytes()
        };
        if bytes.is_empty() || bytes.len() as u64 > MAX_INDEX_HTML_BYTES {
            return Ok(None);
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_urls_ignore_queries() {
        assert_eq!(
            strip_query("https://web.whatsapp.com/?post_logout=1"),
            "https://web.whatsapp.com/"
        );
        assert_eq!(strip_query("http://127.0.0.1:1/#x"), "http://127.0.0.1:1/");
        assert_eq!(strip_query("http://a/b"), "http://a/b");
    }
}
