//! The AsyncAPI document (`schema/asyncapi.json`) covers every event type the
//! code can emit, and a sample of each validates against its payload schema.
//! The samples are built with exhaustive matches, so a new event variant does
//! not compile until it is added here (and then fails until it is documented).

use mart_schema::event::DomainEvent;
use mart_schema::inventory::{InventoryEvent, LowStock, StockAdjusted, StockMoved};
use mart_schema::notification::{NotificationEvent, NotificationStatus};
use mart_schema::order::{Order, OrderEvent, OrderEventKind, OrderLine, OrderStatus};
use mart_schema::payment::{Payment, PaymentEvent, PaymentStatus};
use mart_schema::product::{ProductCreated, ProductDeleted, ProductEvent, ProductUpdated};
use mart_schema::user::{Role, UserDeleted, UserEvent, UserRegistered, UserUpdated};
use mart_schema::{Currency, NotificationId, OrderId, PaymentId, ProductId, Service, UserId};
use serde_json::Value;

fn sample_events() -> Vec<(Service, String, Value)> {
    fn of<E: DomainEvent>(service: Service, event: E) -> (Service, String, Value) {
        let kind = event.event_type().to_owned();
        (
            service,
            kind,
            serde_json::to_value(&event).expect("serialise"),
        )
    }
    let (user, product, order) = (UserId::new(), ProductId::new(), OrderId::new());
    let mut all = Vec::new();
    for variant in 0..3 {
        let event = match variant {
            0 => UserEvent::Registered(UserRegistered {
                user_id: user,
                username: "ann".into(),
                email: "a@b.c".into(),
                role: Role::Customer,
            }),
            1 => UserEvent::Updated(UserUpdated {
                user_id: user,
                email: "a@b.c".into(),
                role: Role::Admin,
                password_changed: true,
            }),
            _ => UserEvent::Deleted(UserDeleted { user_id: user }),
        };
        // Exhaustive: a new variant must be sampled above.
        match &event {
            UserEvent::Registered(_) | UserEvent::Updated(_) | UserEvent::Deleted(_) => {}
        }
        all.push(of(Service::Users, event));
    }
    for variant in 0..3 {
        let event = match variant {
            0 => ProductEvent::Created(ProductCreated {
                product_id: product,
                name: "Mug".into(),
                description: "".into(),
                price: 1,
                currency: Currency::USD,
                stock: 3,
            }),
            1 => ProductEvent::Updated(ProductUpdated {
                product_id: product,
                name: "Mug".into(),
                description: "".into(),
                price: 1,
                currency: Currency::USD,
            }),
            _ => ProductEvent::Deleted(ProductDeleted {
                product_id: product,
                price: 1,
                currency: Currency::USD,
            }),
        };
        match &event {
            ProductEvent::Created(_) | ProductEvent::Updated(_) | ProductEvent::Deleted(_) => {}
        }
        all.push(of(Service::Products, event));
    }
    let moved = StockMoved {
        product_id: product,
        order_id: order,
        quantity: 1,
        on_hand: 5,
        reserved: 1,
        reason: Some("expired".into()),
    };
    for variant in 0..6 {
        let event = match variant {
            0 => InventoryEvent::Adjusted(StockAdjusted {
                product_id: product,
                delta: -1,
                reason: "damaged".into(),
                on_hand: 4,
                reserved: 0,
            }),
            1 => InventoryEvent::Reserved(moved.clone()),
            2 => InventoryEvent::Released(moved.clone()),
            3 => InventoryEvent::Committed(moved.clone()),
            4 => InventoryEvent::Returned(moved.clone()),
            _ => InventoryEvent::LowStock(LowStock {
                product_id: product,
                available: 2,
                threshold: 5,
            }),
        };
        match &event {
            InventoryEvent::Adjusted(_)
            | InventoryEvent::Reserved(_)
            | InventoryEvent::Released(_)
            | InventoryEvent::Committed(_)
            | InventoryEvent::Returned(_)
            | InventoryEvent::LowStock(_) => {}
        }
        all.push(of(Service::Inventory, event));
    }
    let now = time::OffsetDateTime::now_utc();
    let an_order = Order {
        id: order,
        user_id: user,
        status: OrderStatus::Paid,
        items: vec![OrderLine {
            product_id: product,
            name: "Mug".into(),
            unit_price: 100,
            quantity: 2,
            line_total: 200,
        }],
        total: 200,
        currency: Currency::USD,
        expires_at: now,
        created_at: now,
        updated_at: now,
    };
    for kind in [
        OrderEventKind::Placed,
        OrderEventKind::Paid,
        OrderEventKind::Shipped,
        OrderEventKind::Delivered,
        OrderEventKind::Cancelled,
        OrderEventKind::Expired,
        OrderEventKind::Refunded,
    ] {
        match kind {
            OrderEventKind::Placed
            | OrderEventKind::Paid
            | OrderEventKind::Shipped
            | OrderEventKind::Delivered
            | OrderEventKind::Cancelled
            | OrderEventKind::Expired
            | OrderEventKind::Refunded => {}
        }
        all.push(of(Service::Orders, OrderEvent::of(kind, &an_order)));
    }
    for status in [
        PaymentStatus::Pending,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Expired,
        PaymentStatus::Refunded,
    ] {
        let payment = Payment {
            id: PaymentId::new(),
            order_id: order,
            user_id: user,
            status,
            amount: 200,
            currency: Currency::USD,
            checkout_url: None,
            created_at: now,
        };
        all.push(of(Service::Payments, PaymentEvent::of(&payment)));
    }
    for status in [NotificationStatus::Sent, NotificationStatus::Failed] {
        let event = NotificationEvent {
            notification_id: NotificationId::new(),
            user_id: Some(user),
            template: "welcome".into(),
            recipient: "a@b.c".into(),
            status,
            last_error: None,
        };
        all.push(of(Service::Notifications, event));
    }
    all
}

#[test]
fn every_emitted_event_type_is_documented_and_its_sample_validates() {
    let doc: Value =
        serde_json::from_str(include_str!("../asyncapi.json")).expect("asyncapi.json is JSON");
    assert_eq!(doc["asyncapi"], "3.0.0");
    for (service, kind, data) in sample_events() {
        let channel = &doc["channels"][service.name()];
        assert_eq!(
            channel["address"],
            format!("mart.{}.v1", service.name()),
            "{service} channel"
        );
        let name = kind.replace('.', "_");
        assert!(
            channel["messages"].get(&name).is_some(),
            "{kind} is missing from channel {service}"
        );
        let message = &doc["components"]["messages"][&name];
        assert_eq!(
            message["payload"]["properties"]["type"]["const"],
            format!("mart.{kind}")
        );
        let schema = &doc["components"]["schemas"][format!("{name}_data")];
        let validator =
            jsonschema::validator_for(schema).unwrap_or_else(|e| panic!("{kind}: bad schema: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&data)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{kind} sample does not match its schema: {errors:?}\n{data}"
        );
    }
}

#[test]
fn the_document_has_no_event_the_code_cannot_emit() {
    let doc: Value = serde_json::from_str(include_str!("../asyncapi.json")).expect("json");
    let emitted: std::collections::HashSet<String> = sample_events()
        .into_iter()
        .map(|(_, kind, _)| kind.replace('.', "_"))
        .collect();
    let documented = doc["components"]["messages"].as_object().expect("messages");
    for name in documented.keys() {
        assert!(
            emitted.contains(name),
            "{name} is documented but never emitted"
        );
    }
}

#[test]
fn mart_is_the_sender_of_every_channel() {
    let doc: Value = serde_json::from_str(include_str!("../asyncapi.json")).expect("json");
    let operations = doc["operations"].as_object().expect("operations");
    assert_eq!(operations.len(), 6, "one per service's topic");
    for (name, operation) in operations {
        assert_eq!(operation["action"], "send", "{name}: mart publishes");
    }
}

/// The README's event list (`order.placed|paid|...` in backticks) names every
/// event type the code emits, and nothing else.
#[test]
fn the_readme_lists_every_event() {
    let readme = include_str!("../../README.md");
    let mut listed = std::collections::BTreeSet::new();
    for quoted in readme.split('`').skip(1).step_by(2) {
        let Some((source, kinds)) = quoted.split_once('.') else {
            continue;
        };
        if !kinds.contains('|') || quoted.contains(char::is_whitespace) {
            continue;
        }
        for kind in kinds.split('|') {
            listed.insert(format!("{source}.{kind}"));
        }
    }
    let emitted: std::collections::BTreeSet<String> = sample_events()
        .into_iter()
        .map(|(_, kind, _)| kind)
        .collect();
    assert_eq!(listed, emitted, "README.md's list of domain events");
}
