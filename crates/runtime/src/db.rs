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
