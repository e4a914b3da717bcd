//! The shop: a handler with a database, a publisher, a wildcard channel and
//! a typed output.
//!
//! Orders arrive on `shop.orders.<region>` (`shop.orders.eu`,
//! `shop.orders.us`, ...). [`bill`] takes every region's orders through one
//! wildcard channel, reads the region from the concrete subject, writes the
//! invoice to the database it is given as state, records an audit entry
//! through a `Publisher` extractor, and returns the invoice: flowgate
//! publishes it, and waits for the broker to store it, before it acks the
//! order. [`mail`] sends each invoice to an outbox.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use flowgate_examples::shop::{self, Db, OrderPlaced, Outbox};
//! use flowgate_testkit::{call, InMemory, Outcome};
//!
//! let db = Db::default();
//! let broker = InMemory::new();
//! let order = OrderPlaced { id: 1, customer: "ada".into(), total_cents: 1250 };
//! let outcome = call(shop::bill::subscriber(), &order)
//!     .subject("shop.orders.eu")
//!     .state(db.clone())
//!     .on(&broker)
//!     .await;
//! assert_eq!(outcome, Outcome::Acked);
//! assert_eq!(db.invoices().len(), 1);
//! assert_eq!(broker.published::<shop::InvoiceIssued>().unwrap().len(), 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flowgate::extract::{Publisher, State, Subject};
use flowgate::{App, Failure};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// An order, published on `shop.orders.<region>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "shop.orders.*")]
pub struct OrderPlaced {
    /// The order's id.
    pub id: u64,
    /// Who placed it.
    pub customer: String,
    /// What it costs.
    pub total_cents: i64,
}

/// The invoice of one order: [`bill`]'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "shop.invoices")]
pub struct InvoiceIssued {
    /// The invoice's number, from the database.
    pub number: u64,
    /// The order it bills.
    pub order_id: u64,
    /// The region the order came from: the last token of its subject.
    pub region: String,
    /// What it bills.
    pub total_cents: i64,
}

/// What [`bill`] did, for the auditors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, flowgate::Event)]
#[event(channel = "shop.audit")]
pub struct AuditEntry {
    /// The order.
    pub order_id: u64,
    /// What happened to it.
    pub what: String,
}

/// A fake of the shop's database: the invoices, by order.
///
/// Invoicing an order twice returns the invoice it already has, as a real
/// `INSERT ... ON CONFLICT DO NOTHING RETURNING` would: an order handled
/// again after a crash gets the same invoice, so the output it publishes
/// is the same one, under the same id.
#[derive(Debug, Clone, Default)]
pub struct Db(Arc<Mutex<BTreeMap<u64, InvoiceIssued>>>);

impl Db {
    fn rows(&self) -> MutexGuard<'_, BTreeMap<u64, InvoiceIssued>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The invoice of `order`, made now unless it exists.
    pub fn invoice(&self, order: &OrderPlaced, region: &str) -> InvoiceIssued {
        let mut rows = self.rows();
        let number = rows.len() as u64 + 1;
        rows.entry(order.id)
            .or_insert_with(|| InvoiceIssued {
                number,
                order_id: order.id,
                region: region.to_owned(),
                total_cents: order.total_cents,
            })
            .clone()
    }

    /// Every invoice, by order id.
    pub fn invoices(&self) -> Vec<InvoiceIssued> {
        self.rows().values().cloned().collect()
    }
}

/// The mails [`mail`] sent, and a way to wait for them.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    mails: Arc<Mutex<Vec<String>>>,
    sent: Arc<Notify>,
}

impl Outbox {
    fn send(&self, mail: String) {
        self.mails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(mail);
        self.sent.notify_waiters();
    }

    /// The mails sent so far.
    pub fn mails(&self) -> Vec<String> {
        self.mails
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits until at least `count` mails were sent.
    pub async fn wait_for(&self, count: usize) {
        loop {
            let sent = self.sent.notified();
            if self.mails().len() >= count {
                return;
            }
            sent.await;
        }
    }
}

/// Bills an order from any region: the invoice it returns is published on
/// `shop.invoices` before the order is acked.
#[flowgate::subscriber(durable = "shop-billing", max_deliver = 5)]
pub async fn bill(
    order: OrderPlaced,
    Subject(subject): Subject,
    State(db): State<Db>,
    audit: Publisher<AuditEntry>,
) -> Result<InvoiceIssued, Failure> {
    if order.total_cents < 0 {
        return Err(Failure::permanent(format!(
            "order {} has a negative total",
            order.id
        )));
    }
    let region = subject.rsplit('.').next().unwrap_or_default();
    let invoice = db.invoice(&order, region);
    audit
        .publish(&AuditEntry {
            order_id: order.id,
            what: format!("invoice {} issued in {region}", invoice.number),
        })
        .await?;
    Ok(invoice)
}

/// Mails each invoice.
#[flowgate::subscriber(durable = "shop-mailer")]
pub async fn mail(
    invoice: InvoiceIssued,
    State(outbox): State<Outbox>,
) -> Result<(), std::convert::Infallible> {
    outbox.send(format!(
        "invoice {} for order {} ({}): {:.2} EUR",
        invoice.number,
        invoice.order_id,
        invoice.region,
        invoice.total_cents as f64 / 100.0
    ));
    Ok(())
}

/// The shop's app: both subscribers, with the database and the outbox.
pub fn app(db: Db, outbox: Outbox) -> App {
    App::new()
        .state(db)
        .state(outbox)
        .subscriber(bill::subscriber())
        .subscriber(mail::subscriber())
}
