//! The user service's upkeep against a real PostgreSQL.

use mart_schema::db::testing::TestDb;

/// Expired refresh tokens go, used or not; live ones stay, used or not (a
/// used live token is how a stolen one is caught).
#[tokio::test]
async fn the_sweeper_deletes_expired_refresh_tokens_only() {
    let db = TestDb::new().await;
    let client = db.pool.get().await.expect("client");
    client
        .batch_execute(
            "insert into users.refresh_tokens (token_hash, family, user_id, expires_at, used_at) \
             select decode(md5(g::text), 'hex'), gen_random_uuid(), gen_random_uuid(), \
               now() + (case when g % 2 = 0 then interval '-1 hour' else interval '1 hour' end), \
               case when g % 3 = 0 then now() end \
             from generate_series(1, 2501) as g",
        )
        .await
        .expect("tokens");
    let pool = mart_actors::pool::Pool::new(db.pool.clone(), mart_schema::Service::Users);
    let swept = mart_actors::users::sweep_expired_refresh_tokens(&pool)
        .await
        .expect("sweep");
    assert_eq!(swept, 1250, "every expired one, over several chunks");
    let left: i64 = client
        .query_one(
            "select count(*) from users.refresh_tokens where expires_at > now()",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    let all: i64 = client
        .query_one("select count(*) from users.refresh_tokens", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!((left, all), (1251, 1251));
}
