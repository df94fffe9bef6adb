//! Every (line state, change) pair the stock decides, and the level changes.

use super::*;

use LineStatus::{Committed, Released, Reserved, Returned};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("time")
}

fn levels(on_hand: i64, reserved: i64) -> Levels {
    Levels {
        on_hand,
        reserved,
        threshold: 0,
        archived: false,
        version: 7,
    }
}

/// Stock of 10 on hand with one line for `order` in `status` (if any) of 2
/// units; a reserved line is counted in `reserved`, and expires in `expires_in` s.
fn stock(order: OrderId, status: Option<LineStatus>, expires_in: i64) -> Scratch {
    let mut lines = HashMap::new();
    let reserved = if status == Some(Reserved) { 2 } else { 0 };
    if let Some(status) = status {
        let expires_at = now() + time::Duration::seconds(expires_in);
        lines.insert(
            order,
            Line {
                quantity: 2,
                status,
                expires_at,
            },
        );
    }
    Scratch::new(ProductId::new(), levels(10, reserved), lines)
}

#[derive(Debug, PartialEq)]
enum Expect {
    /// Answered with the line as it was; nothing written.
    Unchanged,
    /// The line moved to this status; levels are (on_hand, reserved) after.
    Moved(LineStatus, i64, i64),
    Conflict,
    NoReservation,
}

fn outcome(stock: &mut Scratch, order: OrderId, op: &StockOp) -> Expect {
    let before = stock.lines.get(&order).copied();
    let (answer, events) = decide(stock, op, now());
    match answer {
        Ok(OpDone::Line(line)) if Some(line.status) == before.map(|l| l.status) => {
            assert!(events.is_empty() && stock.touched.is_empty(), "{op:?}");
            Expect::Unchanged
        }
        Ok(OpDone::Line(line)) => {
            assert_eq!(events.len(), 1, "{op:?}");
            assert_eq!(
                stock.touched.get(&order).map(|l| l.status),
                Some(line.status)
            );
            Expect::Moved(line.status, stock.levels.on_hand, stock.levels.reserved)
        }
        Err(InventoryError::Conflict(_)) => Expect::Conflict,
        Err(InventoryError::NoReservation(_)) => Expect::NoReservation,
        other => panic!("{op:?}: unexpected {other:?}"),
    }
}

#[test]
fn every_line_state_against_every_reservation_step() {
    let order = OrderId::new();
    let reserve = StockOp::Reserve {
        order_id: order,
        quantity: 2,
        expires_at: now() + time::Duration::minutes(5),
    };
    let commit = StockOp::Commit { order_id: order };
    let release = StockOp::Release {
        order_id: order,
        expired: false,
    };
    let expire = StockOp::Release {
        order_id: order,
        expired: true,
    };
    let give_back = StockOp::Return { order_id: order };
    use Expect::*;
    // (line state, change, expected); expiry due (line expired 1 s ago).
    let table: Vec<(Option<LineStatus>, &StockOp, Expect)> = vec![
        (None, &reserve, Moved(Reserved, 10, 2)),
        (Some(Reserved), &reserve, Unchanged),
        (Some(Committed), &reserve, Unchanged),
        (Some(Released), &reserve, Conflict),
        (Some(Returned), &reserve, Unchanged),
        (None, &commit, NoReservation),
        (Some(Reserved), &commit, Moved(Committed, 8, 0)),
        (Some(Committed), &commit, Unchanged),
        (Some(Released), &commit, Conflict),
        (Some(Returned), &commit, Conflict),
        (None, &release, NoReservation),
        (Some(Reserved), &release, Moved(Released, 10, 0)),
        (Some(Committed), &release, Conflict),
        (Some(Released), &release, Unchanged),
        (Some(Returned), &release, Conflict),
        (None, &expire, NoReservation),
        (Some(Reserved), &expire, Moved(Released, 10, 0)),
        (Some(Committed), &expire, Conflict),
        (Some(Released), &expire, Unchanged),
        (Some(Returned), &expire, Conflict),
        (None, &give_back, NoReservation),
        (Some(Reserved), &give_back, Conflict),
        (Some(Committed), &give_back, Moved(Returned, 12, 0)),
        (Some(Released), &give_back, Conflict),
        (Some(Returned), &give_back, Unchanged),
    ];
    for (state, op, expected) in table {
        let mut s = stock(order, state, -1);
        assert_eq!(outcome(&mut s, order, op), expected, "{state:?} + {op:?}");
    }
}

#[test]
fn a_stale_expiry_timer_leaves_a_line_that_is_not_due() {
    let order = OrderId::new();
    let mut s = stock(order, Some(Reserved), 60);
    let expire = StockOp::Release {
        order_id: order,
        expired: true,
    };
    assert_eq!(outcome(&mut s, order, &expire), Expect::Unchanged);
    // Released by hand, it goes whenever asked.
    let release = StockOp::Release {
        order_id: order,
        expired: false,
    };
    assert_eq!(
        outcome(&mut s, order, &release),
        Expect::Moved(Released, 10, 0)
    );
}

#[test]
fn a_new_reservation_is_refused_when_archived_empty_or_short() {
    let order = OrderId::new();
    let ask = |quantity| StockOp::Reserve {
        order_id: order,
        quantity,
        expires_at: now(),
    };
    let mut archived = stock(order, None, 0);
    archived.levels.archived = true;
    assert!(matches!(
        decide(&mut archived, &ask(1), now()).0,
        Err(InventoryError::UnknownProduct(_))
    ));
    let mut s = stock(order, None, 0);
    assert!(matches!(
        decide(&mut s, &ask(0), now()).0,
        Err(InventoryError::Conflict(_))
    ));
    assert_eq!(
        decide(&mut s, &ask(11), now()).0,
        Err(InventoryError::InsufficientStock {
            product_id: s.product_id,
            requested: 11,
            available: 10
        })
    );
    assert!(s.touched.is_empty() && s.levels == levels(10, 0));
    assert!(decide(&mut s, &ask(10), now()).0.is_ok());
    assert_eq!(s.levels, levels(10, 10));
}

#[test]
fn changes_in_one_batch_see_each_other() {
    let mut s = Scratch::new(ProductId::new(), levels(3, 0), HashMap::new());
    let ask = |order_id| StockOp::Reserve {
        order_id,
        quantity: 2,
        expires_at: now(),
    };
    let (first, second) = (OrderId::new(), OrderId::new());
    assert!(decide(&mut s, &ask(first), now()).0.is_ok());
    assert!(matches!(
        decide(&mut s, &ask(second), now()).0,
        Err(InventoryError::InsufficientStock { available: 1, .. })
    ));
    // The same order again is the same line, not a second one.
    assert!(decide(&mut s, &ask(first), now()).0.is_ok());
    assert_eq!((s.levels.reserved, s.touched.len()), (2, 1));
}

#[test]
fn adjustments_never_go_below_what_is_reserved_or_zero() {
    let product = ProductId::new();
    let adjust = |delta| {
        StockOp::Change(StockChange::Adjust {
            delta,
            reason: "count".into(),
        })
    };
    let set = |on_hand| StockOp::Change(StockChange::Set { on_hand });
    let mut s = Scratch::new(product, levels(10, 4), HashMap::new());
    let cases = [
        (adjust(5), Some(15)),
        (adjust(-12), None),
        (adjust(-6), Some(9)),
        (adjust(i64::MAX), None),
        (set(4), Some(4)),
        (set(3), None),
        (set(-1), None),
    ];
    for (op, expected) in cases {
        let (answer, events) = decide(&mut s, &op, now());
        match expected {
            Some(on_hand) => {
                assert_eq!(answer, Ok(OpDone::Levels(levels(on_hand, 4).view(product))));
                assert!(matches!(events.first(), Some(InventoryEvent::Adjusted(_))));
            }
            None => assert!(matches!(answer, Err(InventoryError::Conflict(_))), "{op:?}"),
        }
    }
    assert_eq!(s.levels.on_hand, 4);
    // Above the limit a product's stock starts under: refused, naming the field.
    let limit = mart_schema::inventory::MAX_ON_HAND;
    for op in [set(limit + 1), adjust(limit)] {
        let (answer, events) = decide(&mut s, &op, now());
        assert!(matches!(answer, Err(InventoryError::Invalid(_))), "{op:?}");
        assert!(events.is_empty());
    }
    assert_eq!(s.levels.on_hand, 4);
    assert!(matches!(
        decide(&mut s, &StockOp::Archive, now()).0,
        Ok(OpDone::Levels(_))
    ));
    assert!(matches!(
        decide(&mut s, &adjust(1), now()).0,
        Err(InventoryError::UnknownProduct(_))
    ));
    assert_eq!(
        view(product, Some(&s.levels)),
        Err(InventoryError::UnknownProduct(product))
    );
    assert_eq!(
        view(product, None),
        Err(InventoryError::UnknownProduct(product))
    );
}

#[test]
fn crossing_the_threshold_downwards_says_low_stock_once() {
    let mut s = Scratch::new(
        ProductId::new(),
        Levels {
            threshold: 5,
            ..levels(8, 0)
        },
        HashMap::new(),
    );
    let ask = |quantity| StockOp::Reserve {
        order_id: OrderId::new(),
        quantity,
        expires_at: now(),
    };
    let low = |events: &[InventoryEvent]| {
        events
            .iter()
            .filter(|e| matches!(e, InventoryEvent::LowStock(_)))
            .count()
    };
    assert_eq!(low(&decide(&mut s, &ask(2), now()).1), 0); // 6 left
    assert_eq!(low(&decide(&mut s, &ask(1), now()).1), 1); // 5 left
    assert_eq!(low(&decide(&mut s, &ask(1), now()).1), 0); // still low
}

#[test]
fn a_reservation_request_merges_duplicates_and_names_bad_fields() {
    use mart_schema::inventory::ReservationLine;
    let (a, b) = (ProductId::new(), ProductId::new());
    let line = |product_id, quantity| ReservationLine {
        product_id,
        quantity,
    };
    let request = ReserveRequest {
        order_id: OrderId::new(),
        lines: vec![line(a, 1), line(b, 2), line(a, 3)],
        expires_at: now() + time::Duration::minutes(1),
    };
    let merged = reservation_lines(&request, now()).expect("valid");
    assert_eq!(merged.into_iter().collect::<Vec<_>>().len(), 2);
    assert_eq!(reservation_lines(&request, now()).expect("valid")[&a], 4);
    let bad = ReserveRequest {
        lines: vec![line(a, 0)],
        expires_at: now(),
        ..request.clone()
    };
    let errors = reservation_lines(&bad, now()).expect_err("invalid");
    assert!(errors.0.contains_key("quantity") && errors.0.contains_key("expires_at"));
    let empty = ReserveRequest {
        lines: vec![],
        ..request
    };
    assert!(
        reservation_lines(&empty, now())
            .expect_err("invalid")
            .0
            .contains_key("lines")
    );
}
