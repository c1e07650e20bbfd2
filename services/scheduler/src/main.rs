#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cnmas_runtime::service::main_with("scheduler", |shutdown| async move {
        cnmas_scheduler::start(cnmas_scheduler::Config::from_env()?, shutdown).await
    })
    .await
}
