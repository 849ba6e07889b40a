//! The seam between the engine and the worker's WhatsApp Web version control
//! (`crate::webver`): before every launch the supervisor asks how to load WhatsApp Web, and
//! after a live launch reaches WORKING it reports the version as proven good, handing over the
//! `index.html` it was served when the version control wants a copy.

use std::path::PathBuf;

use futures::future::BoxFuture;

/// A cached WhatsApp Web version to serve instead of the live page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedVersion {
    /// The version (`Debug.VERSION` of the page it was recorded from).
    pub version: String,
    /// Its cached `index.html`.
    pub index_html: PathBuf,
}

/// How one launch loads WhatsApp Web.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// `Some`: serve this cached version; `None`: load live.
    pub pinned: Option<PinnedVersion>,
    /// Why the launch differs from what the setting asks for (e.g. the pinned version is not in
    /// this worker's cache, so it loads live), logged and shown in the session status.
    pub note: Option<String>,
}

/// The worker's WhatsApp Web version control, as the supervisor sees it.
pub trait WebVersions: Send + Sync + 'static {
    /// How the next launch loads WhatsApp Web (called before every launch; may wait briefly
    /// for the fleet setting to load).
    fn plan(&self) -> BoxFuture<'_, LaunchPlan>;

    /// A live launch reached WORKING on `version`: whether its `index.html` should be read and
    /// handed to [`WebVersions::proven`] (false when the version is cached already or another
    /// session is saving it). Claims the version when it answers true.
    fn wants_copy(&self, version: &str) -> bool;

    /// Records `version` as proven good on a live load and stores `html` as its `index.html`
    /// when given (a claimed version whose copy could not be read is released for the next
    /// session). Blocking file I/O: called on a blocking thread.
    fn proven(&self, version: &str, html: Option<Vec<u8>>);
}
