//! What an order decides, without any I/O: who may move it where, and what
//! a move entails. The order actor loads, calls [`decide`], writes, replies,
//! and then runs the step the move calls for ([`Step::Move::settle`]).

use std::collections::HashSet;

use mart_schema::order::{ItemRequest, Order, OrderError, OrderEventKind, OrderLine, OrderStatus};
use mart_schema::product::Product;
use mart_schema::user::Caller;
use mart_schema::{Currency, FieldErrors};
use time::OffsetDateTime;

/// What a transition asked of an order does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Another service confirming what already happened (a replayed payment
    /// confirmation): the order as it is.
    Unchanged,
    /// The order moves to the requested status and says so with `kind`.
    Move {
        kind: OrderEventKind,
        /// What has to happen to its stock (and money) once the move is written.
        settle: Settle,
    },
}

/// The side effect a move calls for, run after the move is written. It
/// follows from the status alone, so an order loaded with its step not done
/// knows what is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Nothing,
    /// Paid: the reservation becomes a sale.
    CommitStock,
    /// Cancelled or expired: the stock goes back, and any payment is refunded.
    GiveBack,
}

impl Settle {
    pub(crate) fn of(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Paid => Settle::CommitStock,
            OrderStatus::Cancelled | OrderStatus::Expired => Settle::GiveBack,
            OrderStatus::AwaitingPayment | OrderStatus::Shipped | OrderStatus::Delivered => {
                Settle::Nothing
            }
        }
    }
}

/// Decides whether `caller` may move `order` to `requested` as of `now`.
pub(crate) fn decide(
    order: &Order,
    caller: Caller,
    requested: OrderStatus,
    now: OffsetDateTime,
) -> Result<Step, OrderError> {
    use OrderStatus as S;
    // Someone else's order looks absent.
    if !caller.may_act_for(order.user_id) {
        return Err(OrderError::NotFound);
    }
    let staff = caller.is_staff();
    let internal = caller == Caller::Service;
    let current = order.status;
    if internal && requested == current {
        return Ok(Step::Unchanged);
    }
    let kind = match (current, requested) {
        (S::AwaitingPayment, S::Paid) if internal => OrderEventKind::Paid,
        (S::AwaitingPayment, S::Cancelled) => OrderEventKind::Cancelled,
        // Cancelling a paid order refunds it (in the settle step).
        (S::Paid, S::Cancelled) => OrderEventKind::Cancelled,
        (S::AwaitingPayment, S::Expired) if internal && order.expires_at <= now => {
            OrderEventKind::Expired
        }
        (S::Paid, S::Shipped) if staff => OrderEventKind::Shipped,
        (S::Shipped, S::Delivered) if staff => OrderEventKind::Delivered,
        _ if !staff && matches!(requested, S::Shipped | S::Delivered | S::Paid | S::Expired) => {
            return Err(OrderError::Forbidden);
        }
        _ => return Err(OrderError::IllegalTransition { current, requested }),
    };
    let settle = Settle::of(requested);
    Ok(Step::Move { kind, settle })
}

/// Whether the move from `from` owes the customer their money back.
pub(crate) fn refund_due(from: OrderStatus, to: OrderStatus) -> bool {
    from == OrderStatus::Paid && to == OrderStatus::Cancelled
}

/// Most lines one order may have.
const MAX_LINES: usize = 100;
/// Most units of one product an order line may ask for.
const MAX_QUANTITY: i64 = 1000;

/// An order request checked field by field, before anything is looked up.
pub(crate) fn check_request(items: &[ItemRequest], key: Option<&str>) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::default();
    if items.is_empty() {
        errors.add("items", "must have at least one item");
    }
    if items.len() > MAX_LINES {
        errors.add("items", format!("must have at most {MAX_LINES} items"));
    }
    for (i, item) in items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.add(
                &format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            );
        }
    }
    errors.check_idempotency_key(key);
    errors.into_result()
}

/// An order's lines priced from the catalog (never from the client).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Priced {
    pub(crate) lines: Vec<OrderLine>,
    pub(crate) currency: Currency,
    pub(crate) total: i64,
}

/// Prices `items` from what the catalog answered for each (`None`: no such
/// product), or names every item that cannot be ordered.
pub(crate) fn price(
    items: &[ItemRequest],
    found: Vec<Option<Product>>,
) -> Result<Priced, FieldErrors> {
    let mut errors = FieldErrors::default();
    let mut lines = Vec::with_capacity(items.len());
    let mut currencies = HashSet::new();
    for (i, (item, product)) in items.iter().zip(found).enumerate() {
        let Some(product) = product else {
            errors.add(
                &format!("items[{i}].product_id"),
                format!("no such product {}", item.product_id),
            );
            continue;
        };
        currencies.insert(product.currency);
        lines.push(OrderLine {
            product_id: product.id,
            line_total: product.price.saturating_mul(item.quantity),
            name: product.name,
            unit_price: product.price,
            quantity: item.quantity,
        });
    }
    if currencies.len() > 1 {
        errors.add("items", "all items must be in one currency");
    }
    errors.into_result()?;
    let currency = currencies.into_iter().next().unwrap_or(Currency::USD);
    let total = lines
        .iter()
        .fold(0i64, |sum, l| sum.saturating_add(l.line_total));
    Ok(Priced {
        lines,
        currency,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus as S;
    use mart_schema::user::Role;
    use mart_schema::{Currency, OrderId, UserId};

    const ALL: [OrderStatus; 6] = [
        S::AwaitingPayment,
        S::Paid,
        S::Shipped,
        S::Delivered,
        S::Cancelled,
        S::Expired,
    ];

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time")
    }

    fn order(owner: UserId, status: OrderStatus, due: bool) -> Order {
        let offset = time::Duration::minutes(if due { -1 } else { 1 });
        Order {
            id: OrderId::new(),
            user_id: owner,
            status,
            items: vec![],
            total: 100,
            currency: Currency::USD,
            expires_at: now() + offset,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Owner,
        OtherCustomer,
        Admin,
        Service,
        Anonymous,
    }

    /// Every move anyone may make, and what it entails; any other pair is
    /// refused. `due`: the order's payment deadline has passed.
    fn allowed(who: Who, from: OrderStatus, to: OrderStatus, due: bool) -> Option<Step> {
        use Settle::*;
        if matches!(who, Who::OtherCustomer | Who::Anonymous) {
            return None;
        }
        let staff = matches!(who, Who::Admin | Who::Service);
        let service = who == Who::Service;
        let (kind, settle) = match (from, to) {
            (S::AwaitingPayment, S::Paid) if service => (OrderEventKind::Paid, CommitStock),
            (S::AwaitingPayment, S::Cancelled) => (OrderEventKind::Cancelled, GiveBack),
            (S::Paid, S::Cancelled) => (OrderEventKind::Cancelled, GiveBack),
            (S::AwaitingPayment, S::Expired) if service && due => {
                (OrderEventKind::Expired, GiveBack)
            }
            (S::Paid, S::Shipped) if staff => (OrderEventKind::Shipped, Nothing),
            (S::Shipped, S::Delivered) if staff => (OrderEventKind::Delivered, Nothing),
            _ => return None,
        };
        Some(Step::Move { kind, settle })
    }

    #[test]
    fn every_caller_status_and_request() {
        let (owner, other) = (UserId::new(), UserId::new());
        for who in [
            Who::Owner,
            Who::OtherCustomer,
            Who::Admin,
            Who::Service,
            Who::Anonymous,
        ] {
            let caller = match who {
                Who::Owner => Caller::user(owner, Role::Customer),
                Who::OtherCustomer => Caller::user(other, Role::Customer),
                Who::Admin => Caller::user(other, Role::Admin),
                Who::Service => Caller::Service,
                Who::Anonymous => Caller::Anonymous,
            };
            for (from, to, due) in ALL
                .iter()
                .flat_map(|f| ALL.iter().map(move |t| (*f, *t)))
                .flat_map(|(f, t)| [(f, t, true), (f, t, false)])
            {
                let got = decide(&order(owner, from, due), caller, to, now());
                let case = format!("{who:?}: {from} -> {to} (due: {due})");
                let expected = match allowed(who, from, to, due) {
                    Some(step) => Ok(step),
                    None if matches!(who, Who::OtherCustomer | Who::Anonymous) => {
                        Err(OrderError::NotFound)
                    }
                    None if who == Who::Service && from == to => Ok(Step::Unchanged),
                    None if who == Who::Owner
                        && matches!(to, S::Shipped | S::Delivered | S::Paid | S::Expired) =>
                    {
                        Err(OrderError::Forbidden)
                    }
                    None => Err(OrderError::IllegalTransition {
                        current: from,
                        requested: to,
                    }),
                };
                assert_eq!(got, expected, "{case}");
            }
        }
    }

    #[test]
    fn only_a_paid_order_cancelled_owes_a_refund() {
        for from in ALL {
            for to in ALL {
                let owed = from == S::Paid && to == S::Cancelled;
                assert_eq!(refund_due(from, to), owed, "{from} -> {to}");
            }
        }
    }

    fn product(price: i64, currency: Currency) -> Product {
        Product {
            id: mart_schema::ProductId::new(),
            name: "Mug".into(),
            description: String::new(),
            price,
            currency,
            created_at: now(),
            updated_at: now(),
        }
    }

    fn item(product: &Product, quantity: i64) -> ItemRequest {
        ItemRequest {
            product_id: product.id,
            quantity,
        }
    }

    #[test]
    fn prices_come_from_the_catalog_and_every_bad_item_is_named() {
        let (mug, cup) = (product(250, Currency::USD), product(100, Currency::USD));
        let items = [item(&mug, 2), item(&cup, 3)];
        let priced = price(&items, vec![Some(mug.clone()), Some(cup.clone())]).expect("priced");
        assert_eq!((priced.total, priced.currency), (800, Currency::USD));
        assert_eq!(priced.lines[0].line_total, 500);

        let yen = product(100, "jpy".parse().expect("jpy"));
        let errors = price(
            &[item(&mug, 1), item(&yen, 1)],
            vec![Some(mug.clone()), Some(yen)],
        )
        .expect_err("two currencies");
        assert!(errors.0.contains_key("items"));
        let errors = price(&items, vec![Some(mug), None]).expect_err("unknown");
        assert!(errors.0.contains_key("items[1].product_id"));
    }

    #[test]
    fn a_request_names_its_bad_fields() {
        let mug = product(1, Currency::USD);
        assert!(check_request(&[item(&mug, 1)], Some("k")).is_ok());
        let errors = check_request(&[item(&mug, 0), item(&mug, 1001)], Some("")).expect_err("bad");
        for field in ["items[0].quantity", "items[1].quantity", "Idempotency-Key"] {
            assert!(errors.0.contains_key(field), "{field}: {errors}");
        }
        assert!(
            check_request(&[], None)
                .expect_err("empty")
                .0
                .contains_key("items")
        );
    }
}
