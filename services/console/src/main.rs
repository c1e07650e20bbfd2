#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = cnmas_runtime::telemetry::init(cnmas_console::SERVICE);
    let shutdown = cnmas_runtime::shutdown::on_signal();
    let running =
        cnmas_console::start(cnmas_console::Config::from_env()?, shutdown.clone()).await?;
    shutdown.cancelled().await;
    running.stopped().await;
    Ok(())
}
