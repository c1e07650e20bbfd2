#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cnmas_runtime::service::main_with("intake", |shutdown| async move {
        cnmas_intake::start(cnmas_intake::Config::from_env()?, shutdown).await
    })
    .await
}
