//! `flagstate query`: answers one index query from the configured store and prints the
//! JSON exactly as `/index/static` would serve it.

use std::io::Write;
use std::process::ExitCode;

use flagstate_core::{IndexQuery, StoreExt};

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
    let store = setup::open_existing_store(config).await?;
    let registry = config.public_registry_url();
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
