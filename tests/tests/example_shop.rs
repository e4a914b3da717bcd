//! The shop example on a real JetStream server: orders from two regions
//! through one wildcard subscriber, invoices published as its typed output
//! with their de-duplication ids, audit entries through the `Publisher`
//! extractor, mails from the invoices; an order on another hierarchy is not
//! taken.

use flowgate::Publisher;
use flowgate_examples::shop::{self, Db, OrderPlaced, Outbox};
use flowgate_tests::{
    consumer_state, eventually, init_tracing, stored_messages, NatsServer, DEADLINE,
};

fn order(id: u64, total_cents: i64) -> OrderPlaced {
    OrderPlaced {
        id,
        customer: format!("customer-{id}"),
        total_cents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_bills_every_region_and_publishes_each_invoice_before_acking() {
    init_tracing();
    let server = NatsServer::start().await;
    let nats = server.jetstream().await;
    let (db, outbox) = (Db::default(), Outbox::default());
    let app = shop::app(db.clone(), outbox.clone())
        .start(nats.clone())
        .await
        .expect("the shop starts");
    let publisher = Publisher::new(nats.clone());
    publisher
        .publish_to("shop.orders.eu", &order(1, 1250))
        .await
        .expect("published");
    publisher
        .publish_to("shop.orders.us", &order(2, 4200))
        .await
        .expect("published");
    let refused = publisher.publish(&order(3, 1)).await;
    assert!(
        matches!(refused, Err(flowgate::PublishError::WildcardChannel { .. })),
        "a wildcard type needs a concrete subject: {refused:?}"
    );
    tokio::time::timeout(DEADLINE, outbox.wait_for(2))
        .await
        .expect("both invoices mailed");
    let acked = eventually(DEADLINE, || async {
        consumer_state(&nats, "shop.orders.*", "shop-billing")
            .await
            .is_some_and(|s| s.ack_floor == 2 && s.num_ack_pending == 0)
    })
    .await;
    assert!(
        acked,
        "{:?}",
        consumer_state(&nats, "shop.orders.*", "shop-billing").await
    );
    app.shutdown().await.expect("shuts down");

    let mut regions: Vec<_> = db
        .invoices()
        .into_iter()
        .map(|i| (i.order_id, i.region))
        .collect();
    regions.sort();
    assert_eq!(regions, [(1, "eu".to_owned()), (2, "us".to_owned())]);

    let invoices = stored_messages(&nats, "shop.invoices").await;
    let mut ids: Vec<_> = invoices
        .iter()
        .filter_map(|m| {
            m.headers
                .get("Nats-Msg-Id")
                .map(|id| id.as_str().to_owned())
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "flowgate:shop.orders.*:shop-billing:1:0",
            "flowgate:shop.orders.*:shop-billing:2:0"
        ]
    );
    assert_eq!(stored_messages(&nats, "shop.audit").await.len(), 2);
    assert_eq!(outbox.mails().len(), 2);
}
