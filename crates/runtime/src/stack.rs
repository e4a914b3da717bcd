//! Assembling one subscriber's stack, outermost first:
//! app layers → subscriber layers → retry → timeout → metrics → handler.
//! Without layers of the user's, the runtime's own part runs as it is, with
//! a concrete future; layers wrap it type-erased.

use std::sync::Arc;

use tower::util::BoxCloneSyncService;

use crate::attempt::{Attempts, CoreStack, Stack};
use crate::handler::HandlerService;
use crate::middleware::metrics::SubscriberMetrics;
use crate::middleware::retry::Schedule;
use crate::subscriber::{FailurePolicy, LayerFn};
use crate::SubscriptionSpec;

/// Builds the stack. In each list of layers, the first added is the outermost.
pub(crate) fn build(
    handler: HandlerService,
    spec: &SubscriptionSpec,
    failure: &FailurePolicy,
    metrics: Arc<SubscriberMetrics>,
    subscriber_layers: &[LayerFn],
    app_layers: &[LayerFn],
) -> Stack {
    let attempts = Attempts::new(handler, failure.timeout, metrics);
    let schedule = Schedule::new(failure.retry.clone(), spec.max_deliver);
    let own = CoreStack::new(attempts, schedule);
    if subscriber_layers.is_empty() && app_layers.is_empty() {
        return Stack::Core(own);
    }
    let mut service = BoxCloneSyncService::new(own);
    for layer in subscriber_layers
        .iter()
        .rev()
        .chain(app_layers.iter().rev())
    {
        service = layer(service);
    }
    Stack::Layered(service)
}
