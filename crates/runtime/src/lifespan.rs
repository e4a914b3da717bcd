//! The app's startup and shutdown hooks ([`App::on_start`](crate::App::on_start),
//! [`App::on_shutdown`](crate::App::on_shutdown)): type-erased async closures,
//! run in registration order, each one's panic turned into its error.
//!
//! Nothing here is on the message path: hooks run once at start and once at
//! shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;

use crate::error::HookFailure;
use crate::{BoxError, Error};

type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// One registered hook: an async closure and the name its errors carry.
#[derive(Clone)]
pub(crate) struct Hook {
    name: &'static str,
    call: Arc<dyn Fn() -> HookFuture + Send + Sync>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Hook {
    /// Erases `hook`; its name is its type's (`my_app::migrate` for a fn,
    /// `my_app::main::{{closure}}` for a closure).
    pub(crate) fn new<F, Fut, E>(hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            name: std::any::type_name::<F>(),
            call: Arc::new(move || -> HookFuture {
                let called = hook();
                Box::pin(async move { called.await.map_err(Into::into) })
            }),
        }
    }

    /// Runs the hook once; a panic, while calling it or while polling its
    /// future, is its error.
    async fn run(&self) -> Result<(), BoxError> {
        let call = &self.call;
        let future = match std::panic::catch_unwind(AssertUnwindSafe(|| call())) {
            Ok(future) => future,
            Err(panic) => return Err(panicked(&*panic)),
        };
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => Err(panicked(&*panic)),
        }
    }
}

/// A hook that panicked.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
struct Panicked(String);

fn panicked(panic: &(dyn std::any::Any + Send)) -> BoxError {
    Box::new(Panicked(crate::handler::panic_message(panic)))
}

/// Runs the on_start hooks in order and stops at the first that fails,
/// naming it in an [`Error::StartHook`].
pub(crate) async fn run_start(hooks: &[Hook]) -> Result<(), Error> {
    for (index, hook) in hooks.iter().enumerate() {
        tracing::debug!(hook = hook.name, index, "running on_start hook");
        if let Err(source) = hook.run().await {
            return Err(Error::StartHook {
                index,
                name: hook.name,
                source,
            });
        }
    }
    Ok(())
}

/// Runs every on_shutdown hook in order, also after one failed, and returns
/// the failures in that order.
pub(crate) async fn run_shutdown(hooks: &[Hook]) -> Vec<HookFailure> {
    let mut failures = Vec::new();
    for (index, hook) in hooks.iter().enumerate() {
        tracing::debug!(hook = hook.name, index, "running on_shutdown hook");
        if let Err(error) = hook.run().await {
            failures.push(HookFailure {
                index,
                name: hook.name,
                error,
            });
        }
    }
    failures
}

/// What [`RunningApp::shutdown`](crate::RunningApp::shutdown) returns: the
/// drain's error, the hooks' failures, or both in one
/// [`Error::ShutdownHooks`].
pub(crate) fn shutdown_result(
    drain: Result<(), Error>,
    hooks: Vec<HookFailure>,
) -> Result<(), Error> {
    match (drain, hooks.is_empty()) {
        (drain, true) => drain,
        (drain, false) => Err(Error::ShutdownHooks {
            failures: hooks,
            drain: drain.err().map(Box::new),
        }),
    }
}

/// Runs the on_shutdown hooks after a start that failed once the on_start
/// hooks had begun: the start's error is what the caller gets, so the
/// hooks' failures are logged.
pub(crate) async fn run_shutdown_after_failed_start(hooks: &[Hook], start: &Error) {
    for failure in run_shutdown(hooks).await {
        tracing::error!(
            hook = failure.name,
            index = failure.index,
            error = %failure.error,
            start_error = %start,
            "on_shutdown hook failed while cleaning up after a failed start"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn migrate() -> Result<(), std::io::Error> {
        Err(std::io::Error::other("relation exists"))
    }

    #[tokio::test]
    async fn a_failing_start_hook_is_named_and_stops_the_rest() {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let later = {
            let ran = ran.clone();
            Hook::new(move || {
                let ran = ran.clone();
                async move {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<(), BoxError>(())
                }
            })
        };
        let hooks = [
            Hook::new(|| async { Ok::<(), String>(()) }),
            Hook::new(migrate),
            later,
        ];
        let err = run_start(&hooks).await.expect_err("the second hook fails");
        let Error::StartHook { index, name, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((*index, *name), (1, "flowgate::lifespan::tests::migrate"));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(err.to_string().contains("relation exists"), "{err}");
    }

    #[tokio::test]
    async fn panics_are_failures_and_every_shutdown_hook_runs() {
        #[allow(clippy::unused_async)]
        async fn explode() -> Result<(), BoxError> {
            panic!("pool gone")
        }
        let hooks = [
            Hook::new(explode),
            Hook::new(|| -> std::future::Ready<Result<(), BoxError>> { panic!("at call") }),
            Hook::new(|| async { Ok::<(), BoxError>(()) }),
            Hook::new(migrate),
        ];
        let failures = run_shutdown(&hooks).await;
        let seen: Vec<_> = failures
            .iter()
            .map(|f| (f.index, f.error.to_string()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, "panicked: pool gone".to_owned()),
                (1, "panicked: at call".to_owned()),
                (3, "relation exists".to_owned()),
            ]
        );
    }
}
