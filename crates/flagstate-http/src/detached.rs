//! [`Detached`]: a value computed at most once at a time, by a task of its own.
//!
//! Index answers and their compressed variants can take longer to build than a request
//! may wait (a whole index of a million images takes many seconds). Computed inside the
//! request, such a build would be dropped with the request at its deadline, and the next
//! request would start it again from nothing, so the answer would never exist. Here the
//! computation runs in a spawned task: a caller that gives up stops waiting, not the
//! computation, and the callers after it receive its result.
//!
//! What a caller must do before the work may start (wait for a build permit) runs in
//! the caller and is dropped with it, so abandoned requests never queue up work of
//! their own.

use std::future::Future;
use std::sync::{Arc, Mutex};

use flagstate_core::sync::lock;
use tokio::sync::watch;

use crate::error::HttpError;

enum State<T> {
    /// Nothing computed and nobody computing.
    Empty,
    /// A caller is preparing or a task is computing; its sender is dropped when it is
    /// done, whatever the outcome.
    Running(watch::Receiver<()>),
    /// Computed.
    Ready(T),
}

/// A value computed once, by a detached task (see the module docs).
pub struct Detached<T> {
    state: Mutex<State<T>>,
}

impl<T> std::fmt::Debug for Detached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*lock(&self.state) {
            State::Empty => "empty",
            State::Running(_) => "running",
            State::Ready(_) => "ready",
        };
        f.debug_struct("Detached").field("state", &state).finish()
    }
}

impl<T> Default for Detached<T> {
    fn default() -> Self {
        Detached {
            state: Mutex::new(State::Empty),
        }
    }
}

/// The caller or task that is computing the value: leaves the state empty (and wakes
/// the waiters) unless it finishes with a value, also when it is dropped half-way (its
/// request ended while preparing, the task panicked, the runtime shut down).
struct Runner<T> {
    cell: Arc<Detached<T>>,
    _done: watch::Sender<()>,
    value: Option<T>,
}

impl<T> Drop for Runner<T> {
    fn drop(&mut self) {
        let mut state = lock(&self.cell.state);
        *state = match self.value.take() {
            Some(value) => State::Ready(value),
            None => State::Empty,
        };
    }
}

impl<T: Clone + Send + 'static> Detached<T> {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value, when it has been computed.
    pub fn get(&self) -> Option<T> {
        match &*lock(&self.state) {
            State::Ready(value) => Some(value.clone()),
            _ => None,
        }
    }

    /// Whether nothing is computed and nobody is computing.
    pub fn is_empty(&self) -> bool {
        matches!(&*lock(&self.state), State::Empty)
    }

    /// The value, computing it when nobody has: `prepare` runs in this caller (and ends
    /// with it), then `compute` with what it prepared runs in a spawned task that
    /// finishes even when this caller is gone. Callers that find a computation running
    /// wait for it. Returns the value and whether this call computed it.
    ///
    /// A failure leaves the cell empty: its error goes to the caller that started the
    /// computation, and each caller that was waiting for it tries once itself.
    pub async fn get_or_spawn<P, PFut, CFut, E>(
        self: &Arc<Self>,
        prepare: impl FnOnce() -> PFut,
        compute: impl FnOnce(P) -> CFut,
    ) -> Result<(T, bool), E>
    where
        PFut: Future<Output = Result<P, E>>,
        CFut: Future<Output = Result<T, E>> + Send + 'static,
        E: From<HttpError> + Send + 'static,
    {
        loop {
            // Decided under the lock, acted on after it (no guard lives across an await).
            let runner = {
                let mut state = lock(&self.state);
                match &*state {
                    State::Ready(value) => return Ok((value.clone(), false)),
                    State::Running(done) => Err(done.clone()),
                    State::Empty => {
                        let (done, watcher) = watch::channel(());
                        *state = State::Running(watcher);
                        Ok(Runner {
                            cell: self.clone(),
                            _done: done,
                            value: None,
                        })
                    }
                }
            };
            let mut runner = match runner {
                Ok(runner) => runner,
                Err(mut running) => {
                    // The runner drops its sender when it is done; then look again.
                    while running.changed().await.is_ok() {}
                    continue;
                }
            };
            let prepared = prepare().await?;
            let computation = compute(prepared);
            let task = tokio::spawn(async move {
                let result = computation.await;
                if let Ok(value) = &result {
                    runner.value = Some(value.clone());
                }
                drop(runner);
                result
            });
            return match task.await {
                Ok(result) => result.map(|value| (value, true)),
                Err(e) => {
                    Err(HttpError::Internal(format!("building the answer stopped: {e}")).into())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    async fn ok(_: ()) -> Result<(), HttpError> {
        Ok(())
    }

    #[tokio::test]
    async fn a_computation_outlives_the_caller_that_started_it() {
        let cell = Arc::new(Detached::<u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let started = {
            let runs = runs.clone();
            cell.get_or_spawn(
                || ok(()),
                move |()| async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = released.await;
                    Ok::<_, HttpError>(7)
                },
            )
        };
        // The caller gives up while the task computes.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), started)
                .await
                .is_err()
        );
        assert!(!cell.is_empty(), "still computing");
        let _ = release.send(());
        // A later caller gets the value without computing it again.
        let (value, computed) = cell
            .get_or_spawn(
                || ok(()),
                |()| async { Err::<u32, _>(HttpError::Internal("must not run".into())) },
            )
            .await
            .unwrap();
        assert_eq!((value, computed), (7, false));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cell.get(), Some(7));
    }

    #[tokio::test]
    async fn a_caller_dropped_while_preparing_leaves_the_cell_empty() {
        let cell = Arc::new(Detached::<u32>::new());
        let preparing = cell
            .get_or_spawn(std::future::pending::<Result<(), HttpError>>, |()| async {
                Ok::<_, HttpError>(1)
            });
        assert!(
            tokio::time::timeout(Duration::from_millis(20), preparing)
                .await
                .is_err()
        );
        assert!(cell.is_empty());
        let (value, computed) = cell
            .get_or_spawn(|| ok(()), |()| async { Ok::<_, HttpError>(2) })
            .await
            .unwrap();
        assert_eq!((value, computed), (2, true));
    }

    #[tokio::test]
    async fn a_failure_goes_to_its_caller_and_waiters_try_again() {
        let cell = Arc::new(Detached::<u32>::new());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let cell = cell.clone();
            tokio::spawn(async move {
                cell.get_or_spawn(
                    || ok(()),
                    move |()| async move {
                        let _ = released.await;
                        Err::<u32, _>(HttpError::Internal("broken".into()))
                    },
                )
                .await
            })
        };
        tokio::task::yield_now().await;
        let waiter = {
            let cell = cell.clone();
            tokio::spawn(async move {
                cell.get_or_spawn(|| ok(()), |()| async { Ok::<_, HttpError>(3) })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let _ = release.send(());
        assert!(first.await.unwrap().is_err());
        assert_eq!(waiter.await.unwrap().unwrap(), (3, true));
        assert_eq!(cell.get(), Some(3));
    }

    #[tokio::test]
    async fn a_panicking_computation_leaves_the_cell_empty() {
        let cell = Arc::new(Detached::<u32>::new());
        let result = cell
            .get_or_spawn(
                || ok(()),
                |()| async {
                    if cell_panics() {
                        panic!("computation failed");
                    }
                    Ok::<_, HttpError>(0)
                },
            )
            .await;
        assert!(matches!(result, Err(HttpError::Internal(_))));
        assert!(cell.is_empty());
    }

    fn cell_panics() -> bool {
        true
    }
}
