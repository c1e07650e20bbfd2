//! Tables analysed as they grow, so that prepared statements' plans follow their sizes.

use anyhow::Result;
use cnmas_runtime::db::{analyse_grown, drop_database, ensure_database};
use cnmas_system_tests::{eventually, pg_base};
use std::time::Duration;

/// The tables `analyse_grown` analyses, once PostgreSQL's counts of live rows show the growth.
async fn analysed_once_counted(pool: &sqlx::PgPool, rows: i64) -> Result<Vec<String>> {
    eventually(Duration::from_secs(30), "the live rows counted", || async {
        let live: i64 = sqlx::query_scalar(
            "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'calls'",
        )
        .fetch_one(pool)
        .await?;
        Ok((live == rows).then_some(()))
    })
    .await?;
    Ok(analyse_grown(pool, &["calls", "absent"]).await?)
}

#[tokio::test]
async fn a_table_is_analysed_each_time_it_doubles() -> Result<()> {
    let url = format!(
        "{}/cnmas_statistics_{}",
        pg_base(),
        uuid::Uuid::new_v4().simple()
    );
    ensure_database(&url).await?;
    // One connection: it publishes its counts of live rows as soon as it is asked to.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    sqlx::query("CREATE TABLE calls (n int)")
        .execute(&pool)
        .await?;
    let insert = |from: i32, to: i32| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO calls SELECT generate_series($1, $2)")
                .bind(from)
                .bind(to)
                .execute(&pool)
                .await?;
            sqlx::query("SELECT pg_stat_force_next_flush()")
                .execute(&pool)
                .await
        }
    };
    // Too small to matter: a scan of it is as cheap as an index.
    insert(1, 999).await?;
    assert!(analysed_once_counted(&pool, 999).await?.is_empty());
    insert(1000, 1500).await?;
    assert_eq!(analysed_once_counted(&pool, 1500).await?, ["calls"]);
    let analysed: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'calls'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(analysed, 1500.0);
    // Grown, but not to twice its analysed size.
    insert(1501, 3000).await?;
    assert!(analysed_once_counted(&pool, 3000).await?.is_empty());
    insert(3001, 3001).await?;
    assert_eq!(analysed_once_counted(&pool, 3001).await?, ["calls"]);
    pool.close().await;
    drop_database(&url).await?;
    Ok(())
}
