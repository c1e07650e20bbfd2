#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cnmas_runtime::service::main_with("dialer-queue", |shutdown| async move {
        cnmas_dialer_queue::start(cnmas_dialer_queue::Config::from_env()?, shutdown).await
    })
    .await
}
