//! Serves the HTTP API over an in-memory index of N Flatpak-style images, for
//! `scripts/bench-http`.
//!
//! Usage: `bench_server [IMAGES] [BODY_DIR]` (defaults: 10000 images, no files). Prints
//! `listening on 127.0.0.1:PORT` once ready. With BODY_DIR, first writes the Flatpak
//! query's answer there as `index.json` and `index.json.gz` (the exact bytes this server
//! sends), so a static file server can serve identical responses for comparison.
//!
//! The router is served by [`flagstate_http::serve`], the bounded loop the binary runs;
//! `FLAGSTATE_BENCH_LOOP=axum` serves it with `axum::serve` instead, the unbounded
//! baseline, to measure what the limits cost per request; `FLAGSTATE_BENCH_LOOP=shared`
//! runs the bounded loop with `workers: 0` (on this process's multi-thread runtime
//! rather than on worker threads of its own). `FLAGSTATE_BENCH_LOOP=hyper` is the floor
//! under all of them: bare hyper on one event loop per core (as the bounded loop runs),
//! no router, no middleware, no cache, answering every request with the precomputed
//! Flatpak answer (the same bytes and validator headers) or, when `If-None-Match` names
//! it, `304`.

use std::sync::Arc;

use flagstate_core::conformance::fixtures::{flatpak_app, repo};
use flagstate_core::{MemoryStore, Store};
use flagstate_http::encoding::Coding;
use flagstate_http::index::answer;
use flagstate_http::{AppState, HttpConfig, router};

const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let images: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let body_dir = args.next();

    let store = Arc::new(MemoryStore::new());
    for i in 0..images {
        let app = flatpak_app(&format!("org.example.App{i:05}"), "amd64")
            .label(
                "org.freedesktop.appstream.icon-64",
                &format!("https://icons.example.org/{i:05}.png"),
            )
            .build();
        store
            .replace_repository(
                &repo(&format!("flatpak/app{i:05}"))
                    .image("latest", &app)
                    .build(),
            )
            .await?;
    }
    let config = {
        let mut fields = HttpConfig::default();
        fields.public_registry_url = "https://registry.example.org/".into();
        fields
    };
    let state = AppState::new(store, None, config);

    if let Some(dir) = body_dir {
        let body = answer(&state, FLATPAK_QUERY).await?;
        std::fs::write(format!("{dir}/index.json"), body.identity().load().await?)?;
        std::fs::write(
            format!("{dir}/index.json.gz"),
            body.encoded(Coding::Gzip).await?.load().await?,
        )?;
        eprintln!(
            "{images} images; body {} bytes, gzip {} bytes",
            body.identity().len(),
            body.encoded(Coding::Gzip).await?.len()
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    if std::env::var("FLAGSTATE_BENCH_LOOP").is_ok_and(|v| v == "hyper") {
        let body = answer(&state, FLATPAK_QUERY).await?;
        let fixed = Arc::new(Fixed {
            etag: format!("\"{}\"", body.hash()),
            body: body.identity().load().await?,
        });
        bare_hyper(listener.into_std()?, fixed)?;
    } else if std::env::var("FLAGSTATE_BENCH_LOOP").is_ok_and(|v| v == "axum") {
        axum::serve(listener, router(state)).await?;
    } else {
        let connections = state.connections();
        let mut config = flagstate_http::ServerConfig::default();
        if std::env::var("FLAGSTATE_BENCH_LOOP").is_ok_and(|v| v == "shared") {
            config.workers = 0;
        }
        flagstate_http::serve(
            listener,
            router(state),
            &config,
            connections,
            std::future::pending(),
        )
        .await;
    }
    Ok(())
}

/// The one answer the bare hyper floor serves.
struct Fixed {
    etag: String,
    body: bytes::Bytes,
}

/// Serves `fixed` with bare hyper: one current-thread runtime per core, each accepting
/// on its own handle to the listening socket. Never returns while the sockets work.
fn bare_hyper(
    listener: std::net::TcpListener,
    fixed: Arc<Fixed>,
) -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    for _ in 0..threads {
        let listener = listener.try_clone()?;
        let fixed = fixed.clone();
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                loop {
                    let (stream, _) = listener.accept().await?;
                    let fixed = fixed.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let fixed = fixed.clone();
                            async move { Ok::<_, std::convert::Infallible>(respond(&fixed, &request)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        }));
    }
    for handle in handles {
        handle.join().map_err(|_| "a server thread panicked")??;
    }
    Ok(())
}

fn respond<B>(
    fixed: &Fixed,
    request: &axum::http::Request<B>,
) -> axum::http::Response<axum::body::Body> {
    use axum::http::{StatusCode, header};
    let matches = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == fixed.etag.as_bytes());
    let builder = axum::http::Response::builder()
        .header(header::ETAG, fixed.etag.as_str())
        .header(header::CACHE_CONTROL, "max-age=60")
        .header(header::VARY, "Accept-Encoding");
    let response = if matches {
        builder
            .status(StatusCode::NOT_MODIFIED)
            .body(axum::body::Body::empty())
    } else {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(fixed.body.clone()))
    };
    response.unwrap_or_default()
}
