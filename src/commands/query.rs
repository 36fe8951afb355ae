//! `flagstate query`: answers one index query from the configured store and prints the
//! JSON exactly as `/index/static` would serve it.

use std::io::Write;
use std::process::ExitCode;

use flagstate_core::query::ValueTest;
use flagstate_core::{Filter, IndexQuery, StoreExt};

use crate::cli::QueryArgs;
use crate::config::Config;
use crate::error::CliError;
use crate::setup;

/// Runs the command.
pub async fn run(args: &QueryArgs, config: &Config) -> Result<ExitCode, CliError> {
    let raw = args.query.strip_prefix('?').unwrap_or(&args.query);
    // Parsed before the store is opened: a malformed query is a usage error whatever
    // state the store is in.
    let query = IndexQuery::parse(raw)?;
    for warning in likely_typos(&query) {
        eprintln!("warning: {warning}");
    }
    let store = setup::open_existing_store(config).await?;
    let registry = store.public_registry(&config.public_registry_url()).await?;
    let response = store.index(&registry, &query).await?;
    let mut bytes = if args.pretty {
        serde_json::to_vec_pretty(&response)
            .map_err(|e| CliError::Runtime(format!("cannot serialise the answer: {e}")))?
    } else {
        response.to_json()
    };
    bytes.push(b'\n');
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `flagstate query | head` closing the pipe early is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::Runtime(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Parameters that parse but probably do not say what was meant: an equality test on a
/// label or annotation key whose last `:` segment is a misspelt operator
/// (`label:K:exist=1` asks whether the label `K:exist` equals `1`). One message each.
fn likely_typos(query: &IndexQuery) -> Vec<String> {
    let mut warnings = Vec::new();
    for filter in query.filters() {
        let (kind, key) = match filter {
            Filter::Label {
                key,
                test: ValueTest::Equals(_),
            } => ("label", key),
            Filter::Annotation {
                key,
                test: ValueTest::Equals(_),
            } => ("annotation", key),
            _ => continue,
        };
        let Some((base, last)) = key.rsplit_once(':') else {
            continue;
        };
        let last = last.to_ascii_lowercase();
        for operator in ["exists", "matches"] {
            if strsim::damerau_levenshtein(&last, operator) <= 2 {
                warnings.push(format!(
                    "{kind}:{key} compares the {kind} {key:?} with a value; \
                     did you mean {kind}:{base}:{operator}?"
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_operators_are_named_and_real_keys_are_not() {
        let warned = |q: &str| likely_typos(&IndexQuery::parse(q).unwrap());
        let w = warned("label:org.flatpak.ref:exist=1");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("did you mean label:org.flatpak.ref:exists?"),
            "{w:?}"
        );
        let w = warned("annotation:org.example:match=a*");
        assert!(w[0].contains("annotation:org.example:matches"), "{w:?}");
        for fine in [
            "label:org.flatpak.ref:exists=1",
            "label:org.flatpak.ref:matches=app/*",
            "label:org.flatpak.ref=app/x",
            "label:com.example:version=2",
            "tag=latest",
        ] {
            assert!(warned(fine).is_empty(), "{fine}: {:?}", warned(fine));
        }
    }
}
