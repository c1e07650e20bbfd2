//! The service's database: creation when missing, pool, migrations.

use anyhow::{Context, Result};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use std::str::FromStr;
use std::time::Duration;

/// Creates the database named in `url` if it does not exist (connecting to `postgres`).
pub async fn ensure_database(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url).context("bad database URL")?;
    let name = options
        .get_database()
        .context("database URL names no database")?
        .to_string();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            // Another process may have created it in the meantime.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await?;
            if !exists {
                return Err(e.into());
            }
        }
    }
    admin.close().await?;
    Ok(())
}

/// Drops a database (tests clean up after themselves).
pub async fn drop_database(url: &str) -> Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or_default().to_string();
    let mut admin = options.database("postgres").connect().await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}

/// Connects, creating the database if needed, and runs the bus migrations and the service's.
/// The service's migrator must use versions of 1000 and above (below are the bus tables').
pub async fn connect(url: &str, max_connections: u32, mut migrator: Migrator) -> Result<PgPool> {
    ensure_database(url).await?;
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to the service database")?;
    cnmas_bus::migrator()
        .run(&pool)
        .await
        .context("bus migrations")?;
    migrator.set_ignore_missing(true);
    migrator.run(&pool).await.context("service migrations")?;
    Ok(pool)
}

/// Tables of at least this many live rows are analysed once they hold twice as many as when
/// they were last analysed.
const ANALYSE_FROM_ROWS: i64 = 1000;

/// Analyses each of `tables` that grew to twice its size at its last analysis, and returns
/// those. PostgreSQL keeps a prepared statement's generic plan until the statistics of a table
/// it reads change; a plan made while a table was nearly empty scans it whole once it holds a
/// million rows. Autovacuum analyses grown tables too, but only when it is enabled and on its
/// own schedule; this makes a hot path's cached plans follow the tables' sizes whatever the
/// server's configuration.
pub async fn analyse_grown(pool: &PgPool, tables: &[&str]) -> Result<Vec<String>, sqlx::Error> {
    let grown: Vec<String> = sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema() AND s.relname = ANY($1)
           AND s.n_live_tup >= $2 AND s.n_live_tup > 2 * greatest(c.reltuples, 0)",
    )
    .bind(tables)
    .bind(ANALYSE_FROM_ROWS)
    .fetch_all(pool)
    .await?;
    for table in &grown {
        // The name is one of `tables` (the service's own), quoted all the same.
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        sqlx::query(&format!("ANALYZE {quoted}"))
            .execute(pool)
            .await?;
    }
    Ok(grown)
}

/// Every `every`, [`analyse_grown`] on `tables`, until `shutdown`.
pub async fn keep_statistics(
    pool: PgPool,
    tables: &'static [&'static str],
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match analyse_grown(&pool, tables).await {
            Ok(grown) if !grown.is_empty() => {
                tracing::info!(tables = ?grown, "analysed grown tables")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "analysing grown tables failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
