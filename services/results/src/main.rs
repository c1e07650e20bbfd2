#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cnmas_runtime::service::main_with("results", |shutdown| async move {
        cnmas_results::start(cnmas_results::Config::from_env()?, shutdown).await
    })
    .await
}
