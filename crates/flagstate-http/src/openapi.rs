//! `GET /openapi.json`: the OpenAPI 3.1 description of this server's HTTP API.
//!
//! Generated, not written by hand: every handler carries its `#[utoipa::path]`
//! description (path, method, parameters, responses and their headers), the JSON bodies
//! derive their schemas from the types that serialise them (the index answer's from
//! `flagstate-core`'s `response` module, feature `openapi`), and the routes are
//! registered *from* those descriptions (`utoipa_axum::routes!`), so the router and the
//! document list the same routes by construction. The document describes the router as
//! built: the web UI's pages and `POST /assert` are in it exactly when they are served.
//!
//! [`Document::new`] adds what holds for many routes in one place: axum's wildcard
//! segments (`{*path}`) become OpenAPI path parameters (`{path}`), and every operation the
//! request limits can shed ([`crate::limits`]) gets their `503` answer with `Retry-After`.

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, Type,
};
use utoipa::{IntoParams, Modify};

use crate::cache::CachedBody;
use crate::error::{ErrorBody, HttpError};
use crate::limits;

/// Name of the bearer-token security scheme `POST /events` requires.
pub const EVENTS_SECURITY: &str = "events_token";

/// The description every router starts from: title, version, tags and shared components.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "flagstate",
        description = "Index of a container registry's metadata: the registry index \
            protocol (`/index/static`, `/index/dynamic`), `podman search` (`/v1/search`, \
            `/v2/`, `/v2/_catalog`), content discovery (`/v2/_flagstate/…`, \
            `/v2/<name>/_flagstate/…`, `_oci/ext/discover`), registry notifications \
            (`/events`), icons, probes, metrics and (when enabled) the web UI. Every API \
            error is JSON `{\"error\": {\"code\", \"message\"}}`, except under `/v2/` \
            beyond the ping and the catalog, where errors take the distribution format \
            `{\"errors\": [{\"code\", \"message\"}]}`."
    ),
    components(schemas(ErrorBody)),
    modifiers(&EventsSecurity),
    tags(
        (name = "index", description = "The registry index protocol."),
        (name = "search", description = "What `podman search` and `docker search` ask."),
        (name = "discovery", description = "Content discovery: repositories, tags by time, tag history."),
        (name = "events", description = "Registry notifications."),
        (name = "icons", description = "Application icons extracted from image labels."),
        (name = "operations", description = "Probes, metrics and this description."),
        (name = "ui", description = "The web UI's HTML pages."),
    )
)]
pub struct ApiDoc;

struct EventsSecurity;

impl Modify for EventsSecurity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            EVENTS_SECURITY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token of `events.token`; without one configured every \
                         notification is refused unless `events.allow_anonymous` is set.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The query parameters of `/index/static` and `/index/dynamic`, as the registry index
/// protocol defines them (parsed by `flagstate_core::IndexQuery::parse`).
///
/// Different parameters are ANDed; repeated values of one parameter are ORed. Besides the
/// fixed names below, `label:K=V`, `label:K:exists=1`, `label:K:matches=GLOB` and the
/// same three with `annotation:` test any config label or manifest annotation `K`; any
/// other parameter is a `400`.
pub struct IndexParams;

impl IntoParams for IndexParams {
    fn into_params(in_provider: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let strings = |name: &str, description: &str| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(in_provider().unwrap_or(ParameterIn::Query))
                .required(Required::False)
                .description(Some(description))
                .schema(Some(
                    utoipa::openapi::schema::ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::String)),
                ))
                .build()
        };
        let mut params = vec![
            strings(
                "repository",
                "The repository is one of these (exact names).",
            ),
            strings(
                "tag",
                "The image is tagged with one of these, or is inside a list so tagged.",
            ),
            strings(
                "tag:matches",
                "The image has a tag matching one of these globs (`*`, `?`, `[…]`).",
            ),
            strings("os", "The image's OS (a GOOS value) is one of these."),
            strings(
                "architecture",
                "The image's architecture (a GOARCH value) is one of these.",
            ),
        ];
        params.push(
            ParameterBuilder::new()
                .name("label:org.flatpak.ref:exists")
                .parameter_in(in_provider().unwrap_or(ParameterIn::Query))
                .required(Required::False)
                .description(Some(
                    "The image has the label `org.flatpak.ref` (what Flatpak asks for). \
                     Any `label:K:exists` takes the value `1` only.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["1"])),
                ))
                .build(),
        );
        params
    }
}

/// The served description: the JSON bytes, with their ETag and compressed variants.
pub struct Document {
    api: OpenApi,
    body: CachedBody,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("paths", &self.api.paths.paths.keys().collect::<Vec<_>>())
            .field("bytes", &self.body.identity().len())
            .finish()
    }
}

impl Document {
    /// Finishes the description collected from the routes (see the module docs) and
    /// serialises it once.
    pub fn new(mut api: OpenApi) -> Self {
        let paths = std::mem::take(&mut api.paths.paths);
        for (path, mut item) in paths {
            let sheddable = !limits::is_probe(&path);
            for operation in operations(&mut item) {
                if sheddable {
                    add_overloaded(operation);
                }
            }
            api.paths.paths.insert(openapi_path(&path), item);
        }
        // A description of plain strings and maps always serialises.
        let json = api.to_json().unwrap_or_default();
        Document {
            api,
            body: CachedBody::new(0, Bytes::from(json)),
        }
    }

    /// The finished description.
    pub fn api(&self) -> &OpenApi {
        &self.api
    }
}

/// The operations of one path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// An axum route path as an OpenAPI path: `{*rest}` (a wildcard) becomes `{rest}`.
pub fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// The JSON content of an API error.
fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
        .build()
}

/// Adds the request limits' answer, `503` `overloaded` as JSON with `Retry-After`, to
/// `operation`: as its `503` when it has none, else as that response's JSON content
/// (a web UI page's own `503` is HTML).
fn add_overloaded(operation: &mut Operation) {
    let retry_after = HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some(
            "Seconds to wait before retrying (when the server sheds load).",
        ))
        .build();
    let responses = &mut operation.responses.responses;
    match responses.get_mut("503") {
        Some(RefOr::T(response)) => {
            response
                .content
                .entry("application/json".to_owned())
                .or_insert_with(error_content);
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert(retry_after);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response: ApiResponse = ResponseBuilder::new()
                .description(
                    "Overloaded (`overloaded`): too many requests in flight, or no answer \
                     within the request timeout.",
                )
                .content("application/json", error_content())
                .header("Retry-After", retry_after)
                .build();
            responses.insert("503".to_owned(), RefOr::T(response));
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses(
        (status = 200, description = "This description (OpenAPI 3.1).",
            content_type = "application/json", body = Object,
            headers(
                ("ETag" = String, description = "Strong entity tag of the document."),
                ("Cache-Control" = String, description = "`no-cache`: revalidate, the document changes with the server's version and configuration."),
            )),
        (status = 304, description = "Not modified: `If-None-Match` names the current document.",
            headers(("ETag" = String, description = "Strong entity tag of the document."))),
    )
)]
pub async fn serve(
    Extension(document): Extension<Arc<Document>>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    document
        .body
        .respond(
            &headers,
            HeaderValue::from_static("application/json"),
            HeaderValue::from_static("no-cache"),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_path_parameters() {
        assert_eq!(openapi_path("/r/{*path}"), "/r/{path}");
        assert_eq!(
            openapi_path("/icons/{prefix}/{file}"),
            "/icons/{prefix}/{file}"
        );
        assert_eq!(openapi_path("/v2/"), "/v2/");
    }
}
