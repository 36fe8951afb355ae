//! Keeps the planner's statistics current from the writer.
//!
//! The queries rely on index plans that PostgreSQL only picks when it knows how big the
//! tables are. Autovacuum normally keeps statistics fresh, but it may be switched off or
//! lag far behind a bulk load (an index growing from empty to 100k images within minutes),
//! and plans made for empty tables then scan every row on every statement. So the writer
//! runs `ANALYZE` itself after 256 writes, then after 512 more, doubling up to every 16384
//! writes: often while tables grow from nothing, rarely once they are large.

use std::sync::Mutex;

use sqlx::PgPool;

const FIRST: u64 = 256;
const LAST: u64 = 16_384;

/// Counts writes and decides when statistics are due.
#[derive(Debug)]
pub(crate) struct StatsSchedule {
    state: Mutex<(u64, u64)>,
}

impl Default for StatsSchedule {
    fn default() -> Self {
        StatsSchedule {
            state: Mutex::new((0, FIRST)),
        }
    }
}

impl StatsSchedule {
    /// Records one write; true when statistics should be refreshed now.
    pub(crate) fn record_write(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let (writes, due) = &mut *state;
        *writes += 1;
        if *writes < *due {
            return false;
        }
        *writes = 0;
        *due = (*due * 2).min(LAST);
        true
    }
}

/// Refreshes statistics in the background; failure only costs plan quality, so it is
/// logged, not reported.
pub(crate) fn refresh_in_background(pool: PgPool) {
    tokio::spawn(async move {
        let result =
            sqlx::query("ANALYZE manifests, list_entries, tags, repositories, tag_history")
                .execute(&pool)
                .await;
        if let Err(error) = result {
            tracing::warn!(%error, "refreshing PostgreSQL statistics failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_up_to_a_ceiling() {
        let schedule = StatsSchedule::default();
        let mut fired = Vec::new();
        for n in 1..=200_000u64 {
            if schedule.record_write() {
                fired.push(n);
            }
        }
        assert_eq!(&fired[..3], &[256, 256 + 512, 256 + 512 + 1024]);
        let gaps: Vec<u64> = fired.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(*gaps.last().unwrap(), LAST);
    }
}
