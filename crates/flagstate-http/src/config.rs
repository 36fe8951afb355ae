//! [`HttpConfig`]: everything the HTTP layer needs to know that is not in the store.

use std::path::PathBuf;
use std::time::Duration;

/// How the HTTP API behaves. Built by the binary from its configuration file. New fields
/// may come in any release: start from [`HttpConfig::default`] and set the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpConfig {
    /// The `Registry` field of every index response: the public URL clients resolve
    /// manifests against. May be relative, e.g. `/` when the registry is served from the
    /// same origin.
    pub public_registry_url: String,
    /// `Cache-Control: max-age` of `/index/static` responses. The default, 60 s, is the
    /// binary's too: notifications make changes visible within milliseconds, so a client
    /// should not keep a stale answer for long, and its revalidation costs a `304`.
    pub max_age_index: Duration,
    /// `Cache-Control: max-age` of web UI pages (used by a merged UI router).
    pub max_age_html: Duration,
    /// The Flatpak remote name the web UI's apps page uses in its `flatpak remote-add`
    /// and `flatpak install` commands.
    pub ui_remote_name: String,
    /// Bearer token `POST /events` requires. `None` refuses every notification unless
    /// [`events_allow_anonymous`](Self::events_allow_anonymous) is set. `Some("")` is a
    /// token nobody can present (fail closed), so an empty setting never opens the
    /// endpoint by accident.
    pub events_token: Option<String>,
    /// Accept notifications without a token when no `events_token` is set. Off by
    /// default: an anonymous `/events` lets anyone who can reach the server delete tags
    /// from the index until the next scan and make it send registry requests.
    pub events_allow_anonymous: bool,
    /// Whether `POST /assert` (wait until a query's answer satisfies assertions) is served.
    pub assert_endpoint: bool,
    /// Largest `POST /events` body accepted, in bytes; larger ones get `413`.
    pub max_event_body: usize,
    /// Where extracted icons live (`<dir>/<hh>/<rest>.png`); `None` serves no icons and
    /// leaves `data:` icons inline in index answers. When set, every index answer has its
    /// `org.freedesktop.appstream.icon-*` `data:` values written to this directory and
    /// replaced by URLs under [`icons_uri`](Self::icons_uri).
    pub icons_dir: Option<PathBuf>,
    /// URL prefix of the rewritten icon values; `/icons/` is where this router serves
    /// them. Clients resolve it against the index URL.
    pub icons_uri: String,
    /// Most distinct queries whose answers are kept in the response cache.
    pub index_cache_entries: usize,
    /// Budget of the response cache in bytes (uncompressed bodies counted twice, to leave
    /// room for their compressed variants).
    pub index_cache_bytes: usize,
    /// Most distinct web UI pages (host and URL) kept rendered in the page cache, which
    /// is separate from the index cache so that browsing cannot evict index answers;
    /// `0` turns the page cache off (every page is rendered from the store).
    pub page_cache_entries: usize,
    /// Budget of the page cache in bytes (counted like
    /// [`index_cache_bytes`](Self::index_cache_bytes)).
    pub page_cache_bytes: usize,
    /// Longest wait `POST /assert?timeout=N` may ask for; larger values are capped.
    pub max_assert_timeout: Duration,
    /// Event ids remembered to acknowledge redelivered notifications without re-applying.
    pub recent_event_ids: usize,
    /// Limits on index queries: glob size and wildcards (a longer one is a `400`), and
    /// the glob-matching work one answer may cost (a query needing more is a `400`).
    pub query_limits: flagstate_core::query::QueryLimits,
    /// Longest time a request may take to produce its response head; slower ones get
    /// `503` with `Retry-After`. `POST /assert` is bounded by its own `timeout` instead.
    pub request_timeout: Duration,
    /// Most requests served at once; more are shed with `503` and `Retry-After` rather
    /// than queued. `/healthz` and `/readyz` are never shed.
    pub max_in_flight: usize,
    /// Most clients following the change feed at once (`GET /v2/_flagstate/changes`
    /// waiting with `wait=` or streaming events), counted apart from `max_in_flight`
    /// (they wait rather than work); more are answered `503` with `Retry-After`.
    pub max_change_watchers: usize,
    /// Newest change records the server keeps in memory for the change feed's
    /// followers (core's `ChangeHub`): one read of the store per change serves every
    /// follower inside this window; one further behind reads the store itself.
    pub change_buffer_records: usize,
    /// Most index answers built from the store at once (distinct uncached queries);
    /// further builds wait their turn (within `request_timeout`). Requests for the same
    /// answer always share one build.
    pub max_concurrent_builds: usize,
    /// Longest time one answer (or page) may take to build. A build runs on its own, not
    /// inside the request that started it: a request that reaches `request_timeout`
    /// gets `503` and `Retry-After` while the build goes on, and a later request gets
    /// the answer (a whole index of a million images takes longer to build than a
    /// request waits). A build running longer than this is abandoned (`503`, nothing
    /// cached).
    pub build_timeout: Duration,
    /// Where index answers larger than [`answer_memory_max`](Self::answer_memory_max) are
    /// written (content-addressed files, removed once superseded); `None` makes a private
    /// temporary directory, removed at exit. Files an earlier run left are removed.
    pub answer_dir: Option<PathBuf>,
    /// Index answers up to this many bytes are kept in memory; larger ones are written
    /// to a file while they are built and served from it, so memory stays flat however
    /// large the index.
    pub answer_memory_max: usize,
    /// Budget of the file-backed answers in bytes (counted like
    /// [`index_cache_bytes`](Self::index_cache_bytes)).
    pub answer_disk_bytes: usize,
    /// What `/metrics` reports as `flagstate_build_info{version, commit}`. Default: this
    /// crate's version and no commit; a binary passes its own (see
    /// [`BuildInfo::new`]).
    pub build_info: BuildInfo,
}

/// The build a server runs, for the `flagstate_build_info` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// Version of the program.
    pub version: String,
    /// Source commit it was built from, when known.
    pub commit: Option<String>,
}

impl BuildInfo {
    /// A build of `version` from `commit`.
    pub fn new(version: impl Into<String>, commit: Option<impl Into<String>>) -> Self {
        BuildInfo {
            version: version.into(),
            commit: commit.map(Into::into),
        }
    }
}

impl Default for BuildInfo {
    /// This crate's version (the workspace shares one), commit unknown.
    fn default() -> Self {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            public_registry_url: "/".to_owned(),
            max_age_index: Duration::from_secs(60),
            max_age_html: Duration::from_secs(60),
            ui_remote_name: crate::ui::DEFAULT_REMOTE_NAME.to_owned(),
            events_token: None,
            events_allow_anonymous: false,
            assert_endpoint: false,
            max_event_body: 1024 * 1024,
            icons_dir: None,
            icons_uri: "/icons/".to_owned(),
            index_cache_entries: 1024,
            index_cache_bytes: 256 * 1024 * 1024,
            page_cache_entries: 1024,
            page_cache_bytes: 32 * 1024 * 1024,
            max_assert_timeout: Duration::from_secs(300),
            recent_event_ids: 10_000,
            query_limits: flagstate_core::query::QueryLimits::default(),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 512,
            max_change_watchers: 256,
            change_buffer_records: flagstate_core::changes::DEFAULT_HUB_RECORDS,
            max_concurrent_builds: 4,
            build_timeout: crate::cache::DEFAULT_BUILD_TIMEOUT,
            answer_dir: None,
            answer_memory_max: 8 * 1024 * 1024,
            answer_disk_bytes: 4 * 1024 * 1024 * 1024,
            build_info: BuildInfo::default(),
        }
    }
}
