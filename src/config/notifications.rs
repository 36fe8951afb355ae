//! `notifications.*`: the outgoing webhooks of the change log
//! (`flagstate_core::webhooks`). Only `name` and `url` of an endpoint are required;
//! every limit has a default.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flagstate_core::RepositoryName;
use flagstate_core::changes::ChangeKind;
use flagstate_core::webhooks::{self, Backoff, Subscription, WebhookEndpoint};
use serde::Deserialize;

use super::{ConfigError, duration};

/// `notifications.*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// Where the change log is delivered, each endpoint on its own.
    pub endpoints: Vec<EndpointSettings>,
}

/// One entry of `notifications.endpoints`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// Unique; names the endpoint's delivery state in the store and its metrics.
    pub name: String,
    /// Where batches are `POST`ed.
    pub url: String,
    /// Extra request headers; a list value (the registry's own notation,
    /// `Authorization: [Bearer TOKEN]`) is joined with `, `.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    /// Change types delivered (`tag.created`, …, with or without `io.flagstate.`);
    /// empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Only repositories under one of these namespaces; empty: all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Longest wait for one delivery's answer.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Retry delays after a failed delivery.
    #[serde(default)]
    pub backoff: BackoffSettings,
    /// Most records in one batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

/// A header value: one string, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    /// `X-Token: abc`.
    One(String),
    /// `Authorization: [Bearer abc]`.
    Many(Vec<String>),
}

impl HeaderValue {
    fn joined(&self) -> String {
        match self {
            HeaderValue::One(v) => v.clone(),
            HeaderValue::Many(vs) => vs.join(", "),
        }
    }
}

/// `notifications.endpoints[].backoff`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSettings {
    /// The delay after the first failure (doubling per failure).
    #[serde(with = "duration")]
    pub initial: Duration,
    /// The longest delay.
    #[serde(with = "duration")]
    pub max: Duration,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        let backoff = Backoff::default();
        BackoffSettings {
            initial: backoff.initial,
            max: backoff.max,
        }
    }
}

fn default_timeout() -> Duration {
    webhooks::DEFAULT_TIMEOUT
}

fn default_batch_size() -> usize {
    webhooks::DEFAULT_BATCH_SIZE
}

impl NotificationSettings {
    /// The endpoints as the deliverer takes them, each checked; errors name the key
    /// (`notifications.endpoints[1].url`).
    pub fn endpoints(&self) -> Result<Vec<WebhookEndpoint>, ConfigError> {
        let mut names = BTreeSet::new();
        let mut endpoints = Vec::new();
        for (i, settings) in self.endpoints.iter().enumerate() {
            let key = |field: &str| format!("notifications.endpoints[{i}].{field}");
            if settings.name.trim().is_empty() {
                return Err(ConfigError::invalid(key("name"), "must not be empty"));
            }
            if !names.insert(settings.name.as_str()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!(
                        "{:?} is the name of an earlier endpoint; names must be unique",
                        settings.name
                    ),
                ));
            }
            let url = super::parse_registry_url(&settings.url)
                .map_err(|message| ConfigError::invalid(key("url"), message))?;
            let mut kinds = BTreeSet::new();
            for name in &settings.types {
                let kind = ChangeKind::parse(name.strip_prefix("io.flagstate.").unwrap_or(name))
                    .ok_or_else(|| {
                        let known: Vec<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                        ConfigError::invalid(
                            key("types"),
                            format!("unknown change type {name:?} (known: {})", known.join(", ")),
                        )
                    })?;
                kinds.insert(kind);
            }
            let namespaces = settings
                .namespaces
                .iter()
                .map(|ns| {
                    RepositoryName::parse(ns).map_err(|e| {
                        ConfigError::invalid(key("namespaces"), format!("{ns:?}: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if settings.timeout.is_zero() {
                return Err(ConfigError::invalid(key("timeout"), "must not be 0"));
            }
            if settings.batch_size == 0 {
                return Err(ConfigError::invalid(
                    key("batch_size"),
                    "must be at least 1",
                ));
            }
            if settings.backoff.initial.is_zero() {
                return Err(ConfigError::invalid(
                    key("backoff.initial"),
                    "must not be 0",
                ));
            }
            if settings.backoff.max < settings.backoff.initial {
                return Err(ConfigError::invalid(
                    key("backoff.max"),
                    "must not be less than backoff.initial",
                ));
            }
            let endpoint = WebhookEndpoint {
                name: settings.name.clone(),
                url,
                headers: settings
                    .headers
                    .iter()
                    .map(|(name, value)| (name.clone(), value.joined()))
                    .collect(),
                subscription: Subscription { kinds, namespaces },
                timeout: settings.timeout,
                backoff: Backoff {
                    initial: settings.backoff.initial,
                    max: settings.backoff.max,
                },
                batch_size: settings.batch_size,
            };
            // What is left to check is the headers.
            endpoint
                .validate()
                .map_err(|e| ConfigError::invalid(key("headers"), e.to_string()))?;
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }
}
