//! Logging to standard error through `tracing`, as text or JSON lines. Standard output is
//! kept for command results (`query` prints JSON there).
//!
//! While a progress bar is shown (`scan`, `index --progress`; see [`attach_bar`]), every
//! log line is written with the bar suspended: the bar is cleared, the line written, and
//! the bar drawn again below it, so the two never share a terminal line.

use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{ConfigError, LogFormat, LogSettings};

/// The progress bar on standard error, while one is shown.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Routes log lines around `bar` until [`detach_bar`]: each is written while the bar is
/// suspended.
pub fn attach_bar(bar: &ProgressBar) {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
}

/// Ends [`attach_bar`]: log lines go straight to standard error again.
pub fn detach_bar() {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Installs the global subscriber. The filter is `RUST_LOG` when set, else `log.filter`,
/// else `info`.
pub fn init(settings: &LogSettings) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value)
            .map_err(|e| ConfigError::invalid("RUST_LOG", e.to_string()))?,
        _ => EnvFilter::try_new(settings.filter.as_deref().unwrap_or("info"))
            .map_err(|e| ConfigError::invalid("log.filter", e.to_string()))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AroundBar(io::stderr));
    // A second initialisation (only possible in tests) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    Ok(())
}

/// A [`MakeWriter`] over `make` (standard error in the binary) whose writes suspend the
/// attached progress bar. The formatter hands each event over in one `write_all`, so a
/// line is never split around a redraw.
struct AroundBar<F>(F);

impl<'a, F, W> MakeWriter<'a> for AroundBar<F>
where
    F: Fn() -> W + 'a,
    W: Write,
{
    type Writer = BarSuspending<W>;

    fn make_writer(&'a self) -> Self::Writer {
        BarSuspending((self.0)())
    }
}

/// One event's writer; see [`AroundBar`].
struct BarSuspending<W>(W);

impl<W: Write> Write for BarSuspending<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match active_bar() {
            Some(bar) => bar.suspend(|| self.0.write_all(buf).map(|()| buf.len())),
            None => self.0.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match active_bar() {
            Some(bar) => bar.suspend(|| self.0.write_all(buf)),
            None => self.0.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressBar, ProgressDrawTarget, TermLike};

    use super::*;

    /// What reached the terminal, in order: the bar's drawing operations and log lines.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, op: String) -> io::Result<()> {
            self.0.lock().unwrap().push(op);
            Ok(())
        }
        fn ops(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            self.push(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.push(format!("down {n}"))
        }
        fn move_cursor_right(&self, n: usize) -> io::Result<()> {
            self.push(format!("right {n}"))
        }
        fn move_cursor_left(&self, n: usize) -> io::Result<()> {
            self.push(format!("left {n}"))
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn clear_line(&self) -> io::Result<()> {
            self.push("clear".to_owned())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.push(format!("log {}", String::from_utf8_lossy(buf)))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_are_written_with_the_bar_cleared_and_redrawn() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_message("scanning");
        bar.inc(1);
        bar.tick();
        let make = AroundBar(|| screen.clone());

        attach_bar(&bar);
        make.make_writer()
            .write_all(b"full scan progress\n")
            .unwrap();
        detach_bar();
        make.make_writer().write_all(b"after\n").unwrap();

        let ops = screen.ops();
        let log = ops
            .iter()
            .position(|op| op == "log full scan progress\n")
            .unwrap_or_else(|| panic!("log line missing: {ops:?}"));
        let drawn_before = ops[..log].iter().rposition(|op| op.starts_with("bar "));
        let cleared_before = ops[..log].iter().rposition(|op| op == "clear");
        assert!(
            drawn_before.is_some() && cleared_before > drawn_before,
            "the bar was not cleared before the log line: {ops:?}"
        );
        assert!(
            ops[log + 1..].iter().any(|op| op.starts_with("bar ")),
            "the bar was not drawn again after the log line: {ops:?}"
        );
        // Detached: written as it comes, the bar untouched.
        assert_eq!(ops.last().map(String::as_str), Some("log after\n"));
    }
}
