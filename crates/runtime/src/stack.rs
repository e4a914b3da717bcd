//! Assembling one subscriber's stack, outermost first: app layers →
//! subscriber layers → retry → (per attempt:) app attempt layers →
//! subscriber attempt layers → timeout → metrics → handler. Without layers
//! of the user's, the runtime's own part runs as it is, with a concrete
//! future; layers wrap it type-erased.

use std::sync::Arc;

use tower::util::BoxCloneSyncService;

use crate::attempt::{Attempts, CoreStack, LayeredAttempts, Stack};
use crate::handler::HandlerService;
use crate::middleware::metrics::SubscriberMetrics;
use crate::middleware::retry::Schedule;
use crate::subscriber::{FailurePolicy, LayerFn, Layers};
use crate::SubscriptionSpec;

/// Builds the stack. In each list of layers, the first added is the outermost.
pub(crate) fn build(
    handler: HandlerService,
    spec: &SubscriptionSpec,
    failure: &FailurePolicy,
    metrics: Arc<SubscriberMetrics>,
    subscriber_layers: &Layers,
    app_layers: &Layers,
) -> Stack {
    let attempts = Attempts::new(handler, failure.timeout, metrics);
    let schedule = Schedule::new(failure.retry.clone(), spec.max_deliver);
    let per_attempt = !(subscriber_layers.attempt.is_empty() && app_layers.attempt.is_empty());
    let per_delivery = !(subscriber_layers.delivery.is_empty() && app_layers.delivery.is_empty());
    let own = if per_attempt {
        let attempts = LayeredAttempts::new(attempts, |one| {
            wrap(one, &subscriber_layers.attempt, &app_layers.attempt)
        });
        let own = CoreStack::new(attempts, schedule);
        if !per_delivery {
            return Stack::AttemptLayered(own);
        }
        BoxCloneSyncService::new(own)
    } else {
        let own = CoreStack::new(attempts, schedule);
        if !per_delivery {
            return Stack::Core(own);
        }
        BoxCloneSyncService::new(own)
    };
    Stack::Layered(wrap(own, &subscriber_layers.delivery, &app_layers.delivery))
}

/// `service` in the subscriber's layers, then the app's (its first outermost).
fn wrap(
    mut service: crate::BoxHandlerService,
    subscriber_layers: &[LayerFn],
    app_layers: &[LayerFn],
) -> crate::BoxHandlerService {
    for layer in subscriber_layers
        .iter()
        .rev()
        .chain(app_layers.iter().rev())
    {
        service = layer(service);
    }
    service
}
