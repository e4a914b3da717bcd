//! Assembling one subscriber's tower stack, outermost first:
//! app layers → subscriber layers → retry → timeout → metrics → handler.

use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::handler::HandlerService;
use crate::middleware::metrics::{MetricsLayer, SubscriberMetrics};
use crate::middleware::retry::RetryLayer;
use crate::subscriber::{BoxHandlerService, FailurePolicy, LayerFn};
use crate::SubscriptionSpec;

/// Builds the stack. In each list of layers, the first added is the outermost.
pub(crate) fn build(
    handler: HandlerService,
    spec: &SubscriptionSpec,
    failure: &FailurePolicy,
    metrics: Arc<SubscriberMetrics>,
    subscriber_layers: &[LayerFn],
    app_layers: &[LayerFn],
) -> BoxHandlerService {
    let core = ServiceBuilder::new()
        .layer(RetryLayer::new(failure.retry.clone(), spec.max_deliver))
        .option_layer(failure.timeout.map(tower::timeout::TimeoutLayer::new))
        .layer(MetricsLayer::new(metrics))
        .service(handler);
    let mut service = BoxCloneSyncService::new(core);
    for layer in subscriber_layers
        .iter()
        .rev()
        .chain(app_layers.iter().rev())
    {
        service = layer(service);
    }
    service
}
