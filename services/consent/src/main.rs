#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cnmas_runtime::service::main_with("consent", |shutdown| async move {
        cnmas_consent::start(cnmas_consent::Config::from_env()?, shutdown).await
    })
    .await
}
