//! The shop's handlers on the in-memory broker: one order through `call`,
//! and the whole app across regions.

use flowgate::Publisher;
use flowgate_examples::shop::{self, AuditEntry, Db, InvoiceIssued, OrderPlaced, Outbox};
use flowgate_testkit::{call, InMemory, Outcome};

fn order(id: u64, total_cents: i64) -> OrderPlaced {
    OrderPlaced {
        id,
        customer: "ada".into(),
        total_cents,
    }
}

#[tokio::test(start_paused = true)]
async fn an_order_is_invoiced_audited_and_its_invoice_published() {
    let db = Db::default();
    let broker = InMemory::new();
    let outcome = call(shop::bill::subscriber(), &order(1, 1250))
        .subject("shop.orders.eu")
        .state(db.clone())
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::Acked);
    let invoice = InvoiceIssued {
        number: 1,
        order_id: 1,
        region: "eu".into(),
        total_cents: 1250,
    };
    assert_eq!(db.invoices(), std::slice::from_ref(&invoice));
    assert_eq!(
        broker.published::<InvoiceIssued>().expect("decodes"),
        [invoice]
    );
    assert_eq!(
        broker.published::<AuditEntry>().expect("decodes"),
        [AuditEntry {
            order_id: 1,
            what: "invoice 1 issued in eu".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn an_order_with_a_negative_total_is_dead_lettered_and_invoices_nothing() {
    let db = Db::default();
    let broker = InMemory::new();
    let outcome = call(shop::bill::subscriber(), &order(2, -5))
        .subject("shop.orders.us")
        .state(db.clone())
        .on(&broker)
        .await;
    assert_eq!(outcome, Outcome::DeadLettered);
    assert!(db.invoices().is_empty());
    assert!(broker
        .published::<InvoiceIssued>()
        .expect("decodes")
        .is_empty());
    assert_eq!(broker.channel_messages("dlq.shop.orders.us").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_regions_orders_are_billed_and_mailed() {
    let broker = InMemory::new();
    let (db, outbox) = (Db::default(), Outbox::default());
    let app = shop::app(db.clone(), outbox.clone())
        .start(broker.clone())
        .await
        .expect("started");
    let publisher = Publisher::new(broker.clone());
    publisher
        .publish_to("shop.orders.eu", &order(1, 100))
        .await
        .expect("published");
    publisher
        .publish_to("shop.orders.us", &order(2, 200))
        .await
        .expect("published");
    outbox.wait_for(2).await;
    app.shutdown().await.expect("shut down");

    let mut regions: Vec<_> = db
        .invoices()
        .into_iter()
        .map(|i| (i.order_id, i.region))
        .collect();
    regions.sort();
    assert_eq!(regions, [(1, "eu".to_owned()), (2, "us".to_owned())]);
    assert_eq!(outbox.mails().len(), 2);
    assert_eq!(broker.settlements("shop.orders.*").acked().len(), 2);
}
