//! Load and query benchmark of `SqliteStore` (plain timing main; run with
//! `cargo bench -p flagstate-sqlite --bench store`).
//!
//! For each scenario (10,000 and 100,000 images) a fresh child process bulk-loads a
//! synthetic registry with `replace_repository` — 10 images per repository, every tenth
//! repository a Flatpak application (so 10% Flatpak images), the others a mix of direct
//! images and a four-platform image list — then measures the Flatpak client's query and
//! the whole index, streamed (`query_stream` into a `ResponseWriter`, as `serve` builds
//! it) and, below 1M images, materialised (`query` then JSON, for comparison), and
//! reports peak RSS (`VmHWM`) after each. It also times opening the loaded
//! file with and without the integrity check (`CheckOnOpen::Quick` against
//! `CheckOnOpen::Skip`, alternating, 5 rounds, medians). Each scenario runs in its own
//! process so peak memory is not inherited from the previous one.
//!
//! `FLAGSTATE_BENCH_SCENARIOS=10000,100000` picks the scenarios (image counts; 1000000
//! works too, in about ten minutes and 3 GB of disk);
//! `FLAGSTATE_BENCH_KEEP=DIR` keeps each loaded database in DIR for inspection.

use std::process::Command;
use std::time::{Duration, Instant};

use flagstate_core::testkit::workload::{IMAGES_PER_REPOSITORY, repository};
use flagstate_core::{IndexQuery, IndexResponse, ResponseWriter, Store};
use flagstate_sqlite::{CheckOnOpen, SqliteOptions, SqliteStore};

const SCENARIO_ENV: &str = "FLAGSTATE_BENCH_SCENARIO";
const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn timed<F, Fut, T>(iterations: usize, mut run: F) -> (Vec<Duration>, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut samples = Vec::with_capacity(iterations);
    let mut last = None;
    for _ in 0..iterations {
        // Free the previous answer first so peak memory reflects one answer.
        drop(last.take());
        let start = Instant::now();
        last = Some(run().await);
        samples.push(start.elapsed());
    }
    samples.sort();
    (samples, last.expect("at least one iteration"))
}

/// Counts the bytes written to it.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn scenario(images: usize) {
    let repositories = images / IMAGES_PER_REPOSITORY;
    let dir = tempfile::tempdir().expect("temporary directory");
    // FLAGSTATE_BENCH_KEEP=DIR keeps the loaded database as DIR/bench-<images>.db.
    let path = match std::env::var_os("FLAGSTATE_BENCH_KEEP") {
        Some(keep) => {
            let path = std::path::Path::new(&keep).join(format!("bench-{images}.db"));
            let _ = std::fs::remove_file(&path);
            path
        }
        None => dir.path().join("bench.db"),
    };
    let store = SqliteStore::open(&path).expect("open store");

    let start = Instant::now();
    for i in 0..repositories {
        store
            .replace_repository(&repository(i))
            .await
            .expect("replace_repository");
    }
    let load = start.elapsed();
    let rss_loaded = status_kib("VmRSS:");
    drop(store);

    // Opening with and without `PRAGMA quick_check`, alternating.
    let mut open_times = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (slot, check_on_open) in [CheckOnOpen::Quick, CheckOnOpen::Skip]
            .into_iter()
            .enumerate()
        {
            let options = {
                let mut fields = SqliteOptions::default();
                fields.check_on_open = check_on_open;
                fields
            };
            let start = Instant::now();
            let store = SqliteStore::open_with(&path, options).expect("open store");
            open_times[slot].push(start.elapsed());
            drop(store);
        }
    }
    for samples in &mut open_times {
        samples.sort();
    }

    // Reopen so the first query runs on a cold connection (without the check, which
    // would read every page into the connection's cache first).
    let unchecked = {
        let mut fields = SqliteOptions::default();
        fields.check_on_open = CheckOnOpen::Skip;
        fields
    };
    let store = SqliteStore::open_with(&path, unchecked).expect("reopen store");
    let flatpak = IndexQuery::parse(FLATPAK_QUERY).expect("query parses");
    let start = Instant::now();
    let first = store.query(&flatpak).await.expect("query");
    let first_time = start.elapsed();
    let iterations = if images >= 100_000 { 100 } else { 300 };
    let (flatpak_samples, results) = timed(iterations, || async {
        store.query(&flatpak).await.expect("query")
    })
    .await;
    assert_eq!(first, results);
    let flatpak_images: usize = results
        .iter()
        .map(|r| r.images.len() + r.lists.iter().map(|l| l.images.len()).sum::<usize>())
        .sum();
    assert_eq!(
        flatpak_images,
        repositories / 10,
        "one match per Flatpak app"
    );
    // Peak so far: the loaded store serving Flatpak queries.
    let serving_peak = status_kib("VmHWM:");

    // The whole index as `serve` builds it: streamed from the store a repository at a
    // time and written out as it comes (here into a counter; the server writes a file).
    let all = IndexQuery::all();
    let dumps = match images {
        n if n >= 1_000_000 => 3,
        n if n >= 100_000 => 10,
        _ => 30,
    };
    let (stream_samples, streamed_len) = timed(dumps, || async {
        let mut entries = store.query_stream(&all).await.expect("stream");
        let mut writer = ResponseWriter::new(Counter(0), "/").expect("writer");
        while let Some(entry) = entries.next().await {
            writer.push(entry.expect("entry")).expect("write");
        }
        writer.finish().expect("finish").0
    })
    .await;
    let streamed_peak = status_kib("VmHWM:");

    // The same answer materialised (a `Vec` of entries, then JSON), as answers were built
    // before streaming; skipped at 1M images, where it takes gigabytes.
    let materialised = if images < 1_000_000 {
        let (dump_samples, dump) =
            timed(dumps, || async { store.query(&all).await.expect("dump") }).await;
        let start = Instant::now();
        let body = IndexResponse::new("/", dump).to_json();
        let serialise = start.elapsed();
        assert_eq!(
            body.len() as u64,
            streamed_len,
            "streamed and collected agree"
        );
        Some((dump_samples, serialise))
    } else {
        None
    };
    let (dump_p50, dump_p99, serialise) = match &materialised {
        Some((samples, serialise)) => (
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.99)),
            ms(*serialise),
        ),
        None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
    };

    println!(
        "RESULT images={images} repositories={repositories} load_s={:.2} replace_per_s={:.0} images_per_s={:.0} \
         db_mib={:.1} flatpak_results={} flatpak_first={} flatpak_p50={} flatpak_p99={} \
         stream_p50={} stream_p99={} peak_rss_with_streamed_dumps_mib={:.1} \
         dump_p50={} dump_p99={} dump_json_mib={:.1} dump_serialise={} rss_after_load_mib={:.1} peak_rss_serving_mib={:.1} peak_rss_with_dump_mib={:.1} \
         open_quick_check_p50={} open_unchecked_p50={}",
        load.as_secs_f64(),
        repositories as f64 / load.as_secs_f64(),
        images as f64 / load.as_secs_f64(),
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0,
        results.len(),
        ms(first_time),
        ms(percentile(&flatpak_samples, 0.5)),
        ms(percentile(&flatpak_samples, 0.99)),
        ms(percentile(&stream_samples, 0.5)),
        ms(percentile(&stream_samples, 0.99)),
        streamed_peak as f64 / 1024.0,
        dump_p50,
        dump_p99,
        streamed_len as f64 / 1048576.0,
        serialise,
        rss_loaded as f64 / 1024.0,
        serving_peak as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
        ms(percentile(&open_times[0], 0.5)),
        ms(percentile(&open_times[1], 0.5)),
    );
}

fn main() {
    if let Ok(images) = std::env::var(SCENARIO_ENV) {
        let images: usize = images.parse().expect("image count");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(scenario(images));
        return;
    }
    // `cargo test --benches` runs bench targets with `--test`-like flags; a full run is
    // only meant for `cargo bench`.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let scenarios =
        std::env::var("FLAGSTATE_BENCH_SCENARIOS").unwrap_or_else(|_| "10000,100000".to_owned());
    let exe = std::env::current_exe().expect("own executable");
    for images in scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let status = Command::new(&exe)
            .env(SCENARIO_ENV, images)
            .status()
            .expect("run scenario");
        assert!(status.success(), "scenario {images} failed");
    }
}
