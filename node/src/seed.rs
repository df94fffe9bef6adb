//! `mart seed`: a small demo catalog, an admin and a shopper, loaded into the
//! configured (or embedded) database through the user and product services,
//! so every row comes with its events (inventory makes each product's stock
//! from `product.created`). Run again, it changes nothing: products are
//! matched by name, accounts by email.

use std::sync::Arc;

use anyhow::Context;
use mart_actors::users::{AdminOutcome, UserService};
use mart_actors::{CallError, Hosted, Products, ServiceDeps, Users};
use mart_schema::Service;
use mart_schema::product::{NewProduct, ProductQuery};
use mart_schema::user::{Caller, Registration, Role, UserError};

use crate::Databases;
use crate::config::NodeOptions;

/// The demo admin's email.
pub const ADMIN_EMAIL: &str = "admin@mart.localhost";
/// The demo shopper's username (and `@mart.localhost` email).
pub const SHOPPER: &str = "shopper";

/// Name, description, price in minor units, currency, units on hand.
const CATALOG: &[(&str, &str, i64, &str, i64)] = &[
    (
        "Espresso Cup",
        "Thick porcelain that keeps a double shot hot",
        900,
        "usd",
        25,
    ),
    (
        "Tea Pot",
        "Brews a litre of loose leaf tea",
        3500,
        "usd",
        10,
    ),
    (
        "Coffee Grinder",
        "Burr grinder with ceramic burrs",
        7900,
        "usd",
        5,
    ),
    (
        "Linen Napkin",
        "Soft, washable, sold singly",
        450,
        "usd",
        100,
    ),
    (
        "Cast Iron Kettle",
        "A tetsubin for the stove; only a few made",
        6400,
        "usd",
        3,
    ),
    // A zero-decimal currency: 2400 is ¥2,400.
    (
        "Matcha Whisk",
        "Bamboo chasen with eighty prongs",
        2400,
        "jpy",
        12,
    ),
];

/// Loads the demo data and prints what it did, with any new password (shown
/// this once).
pub(crate) async fn seed(opts: &NodeOptions) -> anyhow::Result<()> {
    let services = [Service::Users, Service::Products];
    let dbs = Databases::open(opts, &services).await?;
    let keys = crate::token_keys(opts)?;
    let outcome = load(opts, &dbs, keys).await;
    dbs.close();
    for line in outcome? {
        println!("{line}");
    }
    Ok(())
}

async fn load(
    opts: &NodeOptions,
    dbs: &Databases,
    keys: Arc<mart_actors::auth::TokenKeys>,
) -> anyhow::Result<Vec<String>> {
    let users_pool = dbs
        .pools
        .get(&Service::Users)
        .context("the user service's database is not configured")?;
    let mut report = Vec::new();

    let password = new_password();
    let admin = match UserService::new(
        mart_actors::pool::Pool::new(users_pool.clone(), Service::Users),
        keys.clone(),
    )
    .ensure_admin(ADMIN_EMAIL, &password)
    .await
    .map_err(anyhow::Error::msg)?
    {
        AdminOutcome::Created(user) => {
            report.push(format!(
                "admin    {} (username {}), password {password}  (new: shown this once)",
                user.email, user.username
            ));
            user
        }
        AdminOutcome::Promoted(user) | AdminOutcome::Existed(user) => {
            report.push(format!(
                "admin    {} (exists; password unchanged)",
                user.email
            ));
            user
        }
    };

    let hosted = Hosted::start(
        &format!("{}-seed", opts.node_name),
        ServiceDeps {
            pools: dbs
                .pools
                .iter()
                .map(|(service, pool)| (*service, pool.clone()))
                .collect(),
            keys,
            settings: Default::default(),
            payments: None,
            mailer: None,
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let outcome = load_with_services(admin.id, &mut report).await;
    hosted.stop().await;
    outcome?;
    Ok(report)
}

async fn load_with_services(
    admin: mart_schema::UserId,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    let password = new_password();
    let shopper = Users::default()
        .register(Registration {
            username: SHOPPER.into(),
            email: format!("{SHOPPER}@mart.localhost"),
            password: password.clone(),
        })
        .await;
    match shopper {
        Ok(user) => report.push(format!(
            "shopper  {} ({}), password {password}  (new: shown this once)",
            user.username, user.email
        )),
        Err(CallError::Rejected(UserError::Taken { .. })) => {
            report.push(format!("shopper  {SHOPPER} (exists; password unchanged)"))
        }
        Err(e) => anyhow::bail!("registering the shopper: {e}"),
    }

    let products = Products::default();
    let caller = Caller::user(admin, Role::Admin);
    for (name, description, price, currency, stock) in CATALOG {
        let found = products
            .list(ProductQuery {
                q: Some((*name).into()),
                limit: Some(100),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("looking for {name}: {e}"))?;
        if let Some(existing) = found.items.iter().find(|p| p.name == *name) {
            report.push(format!("product  {name}: exists ({})", existing.id));
            continue;
        }
        let created = products
            .create(
                caller,
                NewProduct {
                    name: (*name).into(),
                    description: (*description).into(),
                    price: *price,
                    currency: Some((*currency).into()),
                    stock: Some(*stock),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
        report.push(format!(
            "product  {name}: created ({}), {price} {currency} minor units, {stock} on hand",
            created.id
        ));
    }
    Ok(())
}

/// Random enough for any password rule, and easy to copy.
fn new_password() -> String {
    use rand::Rng;
    const WORDS: &[&str] = &[
        "amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "heron", "indigo",
        "juniper", "kelp", "lumen", "maple", "nectar", "onyx", "prism", "quartz", "russet",
        "saffron", "tundra", "umber", "violet", "willow", "yarrow", "zephyr",
    ];
    use rand::seq::IndexedRandom;
    let mut rng = rand::rng();
    // Four different words: 25·24·23·22 orders, times 900 numbers.
    let words: Vec<&str> = WORDS.choose_multiple(&mut rng, 4).copied().collect();
    format!("{}-{}", words.join("-"), rng.random_range(100..1000))
}
