//! The example NATS permissions of `deploy/nats/cnmas-funds.conf`, exercised with async-nats.
//!
//! Self-contained: the test starts its own throwaway `nats-server` (from `$NATS_SERVER`, the
//! `PATH` or `/usr/sbin/nats-server`) on a free port with a copy of that file whose `store_dir`
//! points into a temporary directory, and kills it when done, even on failure. No other NATS or
//! PostgreSQL is needed. It checks, as fund 751, what the fund may do (publish its submissions,
//! create and read its own pull consumer with the filter pinned by the subject, ack) and that each
//! thing belonging to fund 971 is refused with a permission violation (or a JetStream error from
//! the server), then that fund 971 still reads its own results, untouched.
//!
//! A denial is asserted positively: the server reports a permission violation as an async `-ERR`
//! on the offending connection, which async-nats hands to the event callback as
//! `Event::ServerError(ServerError::Other("Permissions Violation for … \"<subject>\""))`. Each
//! check waits (bounded) for the violation naming the exact subject, and also checks that the
//! call itself failed or delivered nothing.

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use async_nats::jetstream::{self, consumer, response::Response, ErrorCode};
use async_nats::{Client, ConnectOptions, Event};
use bytes::Bytes;
use cnmas_bus::{topology, Namespace, Publisher};
use cnmas_proto::results::ContactResult;
use futures::StreamExt;
use prost::Message as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long a positive operation may take.
const WAIT: Duration = Duration::from_secs(5);
/// How long a denied JetStream request waits for the reply that never comes.
const DENIED_REQUEST: Duration = Duration::from_secs(1);
/// How long we wait for a permission-violation `-ERR` once the denied operation is sent.
const VIOLATION_WAIT: Duration = Duration::from_secs(3);
/// How long "nothing arrives" is observed.
const QUIET: Duration = Duration::from_secs(1);

const OUT: &str = "CNMAS_OUT";
const SVC: (&str, &str) = ("svc-results", "change-me-results");
const F751: (&str, &str) = ("cpam-751", "change-me-751");
const F971: (&str, &str) = ("cgss-971", "change-me-971");

// ------------------------------------------------------------------------------------------------
// The throwaway server
// ------------------------------------------------------------------------------------------------

/// A nats-server child process and its temporary directory; both go away on drop.
struct NatsServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl NatsServer {
    fn binary() -> Result<PathBuf> {
        if let Some(path) = std::env::var_os("NATS_SERVER") {
            return Ok(PathBuf::from(path));
        }
        let on_path = std::env::var_os("PATH")
            .map(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nats-server"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_default();
        let candidates = on_path
            .into_iter()
            .chain([PathBuf::from("/usr/sbin/nats-server")]);
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            anyhow!("nats-server not found (set NATS_SERVER, or apt-get install nats-server)")
        })
    }

    /// Starts nats-server with a copy of `conf` (store_dir and listen rewritten) on a free port.
    fn start(conf: &Path) -> Result<Self> {
        let binary = Self::binary()?;
        let dir = std::env::temp_dir().join(format!(
            "cnmas-nats-permissions-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = dir.join("js");
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", dir.display()))?;

        let port = cnmas_system_tests::free_ports(1)?[0];

        let text =
            std::fs::read_to_string(conf).with_context(|| format!("reading {}", conf.display()))?;
        let (mut store_dirs, mut listens) = (0, 0);
        let copy: Vec<String> = text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                if trimmed.starts_with("store_dir:") {
                    store_dirs += 1;
                    format!("{indent}store_dir: \"{}\"", store.display())
                } else if trimmed.starts_with("listen:") {
                    listens += 1;
                    format!("{indent}listen: 127.0.0.1:{port}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        // nats-server 2.9 refuses `-sd` when the file sets store_dir, hence the rewrite.
        let copy_path = dir.join("cnmas-funds.conf");
        std::fs::write(&copy_path, copy.join("\n") + "\n")?;

        let log = dir.join("nats.log");
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&copy_path)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = NatsServer { child, dir, port };
        ensure!(
            store_dirs == 1,
            "expected one store_dir line in {}, found {store_dirs}",
            conf.display()
        );
        ensure!(listens <= 1, "several listen lines in {}", conf.display());

        // Ready when it accepts connections; bounded.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("nats-server exited ({status}):\n{}", server.log_tail());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not listen on {addr}:\n{}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let Ok(file) = std::fs::File::open(self.dir.join("nats.log")) else {
            return "(no log)".into();
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("nats-server log (tail):\n{}", self.log_tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------------------------
// Connections that record the server's -ERR events
// ------------------------------------------------------------------------------------------------

struct Conn {
    name: &'static str,
    client: Client,
    js: jetstream::Context,
    errors: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Conn {
    async fn connect(
        url: &str,
        (user, password): (&'static str, &str),
        inbox_prefix: Option<&str>,
    ) -> Result<Self> {
        let (tx, errors) = mpsc::unbounded_channel();
        let mut options = ConnectOptions::with_user_and_password(user.into(), password.into())
            .connection_timeout(WAIT)
            .request_timeout(Some(WAIT))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            });
        if let Some(prefix) = inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        let client = timeout(WAIT, options.connect(url))
            .await
            .with_context(|| format!("{user}: connect timed out"))?
            .with_context(|| format!("{user}: connect"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(WAIT);
        Ok(Conn {
            name: user,
            client,
            js,
            errors,
            seen: Vec::new(),
        })
    }

    /// Waits (bounded) for the server's `Permissions Violation for <what> "<subject>"`.
    async fn violation(&mut self, what: &str, subject: &str) -> Result<String> {
        let quoted = format!("\"{subject}\"");
        let matches = |e: &str| e.contains("Permissions Violation") && e.contains(&quoted);
        let deadline = tokio::time::Instant::now() + VIOLATION_WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|e| matches(e)) {
                return Ok(self.seen.remove(i));
            }
            match tokio::time::timeout_at(deadline, self.errors.recv()).await {
                Ok(Some(e)) => self.seen.push(e),
                Ok(None) => bail!("{}: connection closed", self.name),
                Err(_) => bail!(
                    "{}: expected a permission violation for {what} {quoted}; server errors seen: {:?}",
                    self.name,
                    self.seen
                ),
            }
        }
    }

    /// The pending server errors, none expected.
    fn no_unexpected_errors(&mut self) -> Result<()> {
        while let Ok(e) = self.errors.try_recv() {
            self.seen.push(e);
        }
        ensure!(
            self.seen.is_empty(),
            "{}: unexpected server errors: {:?}",
            self.name,
            self.seen
        );
        Ok(())
    }

    /// A JetStream API request that the permissions must refuse: no reply, and a violation.
    async fn denied_api_request(&mut self, api: &str, body: serde_json::Value) -> Result<()> {
        refused(
            &format!("{}: $JS.API.{api}", self.name),
            self.js
                .request::<_, _, serde_json::Value>(api.to_string(), &body),
        )
        .await?;
        self.violation("Publish to", &format!("$JS.API.{api}"))
            .await?;
        Ok(())
    }

    /// Subscribes where the permissions must refuse it.
    async fn denied_subscribe(&mut self, subject: &str) -> Result<async_nats::Subscriber> {
        let sub = self.client.subscribe(subject.to_string()).await?;
        self.client.flush().await?;
        self.violation("Subscription to", subject).await?;
        Ok(sub)
    }
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn result(id: &str) -> ContactResult {
    ContactResult {
        result_id: id.into(),
        contact_id: format!("contact-{id}"),
        submission_ref: format!("sub-{id}"),
        ..Default::default()
    }
}

fn pull_config(name: &str, filter: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.into()),
        filter_subject: filter.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

/// Fetches what a consumer has (up to 10, waiting at most `expires`), acking each message.
async fn fetch_and_ack(
    consumer: &consumer::PullConsumer,
    expires: Duration,
) -> Result<Vec<(String, ContactResult, i64)>> {
    let mut batch = timeout(
        WAIT,
        consumer
            .batch()
            .max_messages(10)
            .expires(expires)
            .messages(),
    )
    .await
    .context("batch request timed out")??;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + expires + WAIT;
    while let Some(message) = tokio::time::timeout_at(deadline, batch.next())
        .await
        .context("batch did not end")?
    {
        let message = message.map_err(|e| anyhow!("fetch: {e}"))?;
        let delivered = message.info().map_err(|e| anyhow!("{e}"))?.delivered;
        let decoded = ContactResult::decode(message.payload.clone())?;
        // Double ack: the server confirms it, so the ack subject really was allowed.
        timeout(WAIT, message.double_ack())
            .await
            .context("ack timed out")?
            .map_err(|e| anyhow!("ack: {e}"))?;
        got.push((message.subject.to_string(), decoded, delivered));
    }
    Ok(got)
}

/// A call that must not succeed: it fails, or gets no reply within [`DENIED_REQUEST`].
async fn refused<T: std::fmt::Debug, E>(
    what: &str,
    call: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<()> {
    match timeout(DENIED_REQUEST, call).await {
        Ok(Ok(answer)) => {
            let answer: String = format!("{answer:?}").chars().take(300).collect();
            bail!("{what} succeeded: {answer}…")
        }
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

/// Asserts that nothing arrives on `sub` for a second.
async fn nothing_arrives(sub: &mut async_nats::Subscriber, what: &str) -> Result<()> {
    if let Ok(Some(message)) = timeout(QUIET, sub.next()).await {
        bail!("{what}: received a message on {}", message.subject);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The test
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_fund_reads_only_its_own_subjects() -> Result<()> {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/cnmas-funds.conf");
    let server = NatsServer::start(&conf)?;
    let url = server.url();
    let ns = Namespace::default();

    // --- authentication ------------------------------------------------------------------------
    let wrong = timeout(
        WAIT,
        ConnectOptions::with_user_and_password(F751.0.into(), "wrong-password".into())
            .connect(&url),
    )
    .await
    .context("connect with a wrong password timed out")?;
    ensure!(wrong.is_err(), "a wrong password was accepted");

    // --- 1. a service declares the streams and publishes one result for each fund ---------------
    let mut svc = Conn::connect(&url, SVC, None).await?;
    timeout(WAIT, topology::ensure(&svc.js, &ns, true))
        .await
        .context("ensure timed out")?
        .context("a service user creates the streams")?;
    let publisher = Publisher::new(svc.js.clone(), ns.clone());
    publisher
        .publish("cnmas.out.v1.751.result", "r-751", &result("r-751"))
        .await?;
    publisher
        .publish("cnmas.out.v1.971.result", "r-971", &result("r-971"))
        .await?;

    // --- 2. fund 751 creates its consumer, reads exactly its own result, acks it -----------------
    let mut f751 = Conn::connect(&url, F751, Some("_INBOX_751")).await?;
    let out_751 = f751.js.get_stream_no_info(OUT).await?;
    let mut c751 = timeout(
        WAIT,
        out_751.create_consumer(pull_config("fund_751", "cnmas.out.v1.751.>")),
    )
    .await
    .context("create fund_751 timed out")?
    .context("751 creates fund_751 through $JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_751.<filter>")?;
    let got = fetch_and_ack(&c751, Duration::from_secs(1)).await?;
    let subjects: Vec<&str> = got.iter().map(|(s, _, _)| s.as_str()).collect();
    ensure!(
        subjects == ["cnmas.out.v1.751.result"],
        "751 read {subjects:?}"
    );
    ensure!(got[0].1 == result("r-751"), "751 read {:?}", got[0].1);
    let info = timeout(WAIT, c751.info()).await??;
    ensure!(
        info.ack_floor.consumer_sequence == 1 && info.num_ack_pending == 0 && info.num_pending == 0,
        "751's consumer after the ack: {info:?}"
    );
    f751.no_unexpected_errors()?;

    // Fund 971 creates its consumer now, reads later (so 751's attempts below hit a real one).
    let mut f971 = Conn::connect(&url, F971, Some("_INBOX_971")).await?;
    let c971 = timeout(
        WAIT,
        f971.js
            .get_stream_no_info(OUT)
            .await?
            .create_consumer(pull_config("fund_971", "cnmas.out.v1.971.>")),
    )
    .await
    .context("create fund_971 timed out")?
    .context("971 creates fund_971")?;

    // --- 3. what fund 751 may not do --------------------------------------------------------------
    // Its own consumer names, filtered on 971's results (async-nats uses the pinned form).
    for name in ["fund_751", "fund_751_replay"] {
        let stream = f751.js.get_stream_no_info(OUT).await?;
        refused(
            &format!("751 creating {name} on 971's results"),
            stream.create_consumer(pull_config(name, "cnmas.out.v1.971.>")),
        )
        .await?;
        f751.violation(
            "Publish to",
            &format!("$JS.API.CONSUMER.CREATE.CNMAS_OUT.{name}.cnmas.out.v1.971.>"),
        )
        .await?;
    }
    // 971's consumer name, with either filter.
    for filter in ["cnmas.out.v1.971.>", "cnmas.out.v1.751.>"] {
        let stream = f751.js.get_stream_no_info(OUT).await?;
        refused(
            &format!("751 creating fund_971 with {filter}"),
            stream.create_consumer(pull_config("fund_971", filter)),
        )
        .await?;
        f751.violation(
            "Publish to",
            &format!("$JS.API.CONSUMER.CREATE.CNMAS_OUT.fund_971.{filter}"),
        )
        .await?;
    }
    // The forms that cannot pin the filter: legacy durable create, and ephemeral create.
    f751.denied_api_request(
        "CONSUMER.DURABLE.CREATE.CNMAS_OUT.fund_751",
        serde_json::json!({"stream_name": OUT, "config": {"durable_name": "fund_751",
            "filter_subject": "cnmas.out.v1.971.>", "ack_policy": "explicit"}}),
    )
    .await?;
    f751.denied_api_request(
        "CONSUMER.CREATE.CNMAS_OUT",
        serde_json::json!({"stream_name": OUT, "config": {
            "filter_subject": "cnmas.out.v1.971.>", "ack_policy": "explicit"}}),
    )
    .await?;
    // The allowed subject with a body asking for 971's results: the server refuses it (10131).
    let mismatch: Response<consumer::Info> = timeout(
        WAIT,
        f751.js.request(
            "CONSUMER.CREATE.CNMAS_OUT.fund_751_replay.cnmas.out.v1.751.>".to_string(),
            &serde_json::json!({"stream_name": OUT, "config": {"durable_name": "fund_751_replay",
                "filter_subject": "cnmas.out.v1.971.>", "ack_policy": "explicit"}}),
        ),
    )
    .await??;
    match mismatch {
        Response::Err { error } => ensure!(
            error.error_code() == ErrorCode::CONSUMER_CREATE_FILTER_SUBJECT_MISMATCH,
            "body filter ≠ subject filter: unexpected error {error:?}"
        ),
        Response::Ok(info) => bail!("751 created a consumer on 971's results: {info:?}"),
    }
    // The allowed subject with a body naming 971's consumer: the server refuses it too.
    let renamed: Response<consumer::Info> = timeout(
        WAIT,
        f751.js.request(
            "CONSUMER.CREATE.CNMAS_OUT.fund_751_replay.cnmas.out.v1.751.>".to_string(),
            &serde_json::json!({"stream_name": OUT, "config": {"durable_name": "fund_971",
                "filter_subject": "cnmas.out.v1.751.>", "ack_policy": "explicit"}}),
        ),
    )
    .await??;
    if let Response::Ok(info) = renamed {
        bail!("751 redefined 971's consumer through its own create subject: {info:?}");
    }
    // The stream info lists every fund's subjects and counts.
    refused("751 reading the stream info", f751.js.get_stream(OUT)).await?;
    f751.violation("Publish to", "$JS.API.STREAM.INFO.CNMAS_OUT")
        .await?;
    // Fetching from 971's consumer: denied, and nothing comes back.
    let inbox = f751.client.new_inbox();
    let mut replies = f751.client.subscribe(inbox.clone()).await?;
    f751.client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_971",
            inbox,
            Bytes::from_static(br#"{"batch":10,"expires":500000000}"#),
        )
        .await?;
    f751.client.flush().await?;
    f751.violation("Publish to", "$JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_971")
        .await?;
    nothing_arrives(&mut replies, "751 fetching from fund_971").await?;
    // Acking 971's messages.
    f751.client
        .publish("$JS.ACK.CNMAS_OUT.fund_971.1.2.2.0.0", Bytes::new())
        .await?;
    f751.client.flush().await?;
    f751.violation("Publish to", "$JS.ACK.CNMAS_OUT.fund_971.1.2.2.0.0")
        .await?;

    // Subscriptions: 971's results, every result, the shared inbox, 971's inbox. Its own live
    // results are the control that the subscriptions work at all.
    let mut own_live = f751.client.subscribe("cnmas.out.v1.751.>").await?;
    let mut denied_subs = Vec::new();
    for subject in [
        "cnmas.out.v1.971.>",
        "cnmas.out.v1.>",
        "_INBOX.>",
        "_INBOX_971.>",
    ] {
        denied_subs.push((subject, f751.denied_subscribe(subject).await?));
    }
    publisher
        .publish(
            "cnmas.out.v1.971.result",
            "r-971-live",
            &result("r-971-live"),
        )
        .await?;
    publisher
        .publish(
            "cnmas.out.v1.751.result",
            "r-751-live",
            &result("r-751-live"),
        )
        .await?;
    let live = timeout(WAIT, own_live.next())
        .await
        .context("751 did not receive its own live result")?
        .context("subscription closed")?;
    ensure!(live.subject.as_str() == "cnmas.out.v1.751.result");
    ensure!(ContactResult::decode(live.payload)? == result("r-751-live"));
    let others =
        futures::future::join_all(denied_subs.iter_mut().map(|(subject, sub)| async move {
            nothing_arrives(sub, &format!("751 subscribed to {subject}")).await
        }));
    let own = nothing_arrives(&mut own_live, "751's own live results (only one expected)");
    let (others, own) = tokio::join!(others, own);
    own?;
    for outcome in others {
        outcome?;
    }

    // Publishing: its own submissions yes; 971's submissions and any result, no.
    let ack = timeout(
        WAIT,
        f751.js
            .publish("cnmas.in.v1.751.contact", Bytes::from_static(b"from-751"))
            .await?,
    )
    .await
    .context("751's own submission: no ack")??;
    ensure!(
        ack.stream == "CNMAS_IN",
        "751's submission stored in {ack:?}"
    );
    for subject in ["cnmas.in.v1.971.contact", "cnmas.out.v1.751.result"] {
        let ack = f751
            .js
            .publish(subject, Bytes::from_static(b"forged"))
            .await?;
        refused(&format!("751 publishing to {subject}"), ack).await?;
        f751.violation("Publish to", subject).await?;
    }
    f751.no_unexpected_errors()?;

    // A fund client without its inbox prefix cannot get any JetStream reply.
    let mut no_prefix = Conn::connect(&url, F751, None).await?;
    let stream = no_prefix.js.get_stream_no_info(OUT).await?;
    refused(
        "751 without its inbox prefix creating fund_751",
        stream.create_consumer(pull_config("fund_751", "cnmas.out.v1.751.>")),
    )
    .await?;
    let error = timeout(VIOLATION_WAIT, no_prefix.errors.recv())
        .await
        .context("no violation for the default inbox")?
        .unwrap_or_default();
    ensure!(
        error.contains("Permissions Violation for Subscription to \"_INBOX."),
        "without the inbox prefix: {error}"
    );

    // --- 4. fund 971 reads its own results, untouched by 751 -------------------------------------
    let got = fetch_and_ack(&c971, Duration::from_secs(1)).await?;
    let read: Vec<(&str, &str, i64)> = got
        .iter()
        .map(|(s, r, d)| (s.as_str(), r.result_id.as_str(), *d))
        .collect();
    ensure!(
        read == [
            ("cnmas.out.v1.971.result", "r-971", 1),
            ("cnmas.out.v1.971.result", "r-971-live", 1)
        ],
        "971 read (subject, result_id, deliveries) {read:?}"
    );
    // And fund 751's consumer has exactly its own second result, nothing of 971's.
    let got = fetch_and_ack(&c751, Duration::from_secs(1)).await?;
    let read: Vec<(&str, &str)> = got
        .iter()
        .map(|(s, r, _)| (s.as_str(), r.result_id.as_str()))
        .collect();
    ensure!(
        read == [("cnmas.out.v1.751.result", "r-751-live")],
        "751's second read {read:?}"
    );
    // Symmetric: 971 may not fetch from 751's consumer.
    let inbox = f971.client.new_inbox();
    let mut replies = f971.client.subscribe(inbox.clone()).await?;
    f971.client
        .publish_with_reply(
            "$JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_751",
            inbox,
            Bytes::from_static(br#"{"batch":1,"expires":500000000}"#),
        )
        .await?;
    f971.client.flush().await?;
    f971.violation("Publish to", "$JS.API.CONSUMER.MSG.NEXT.CNMAS_OUT.fund_751")
        .await?;
    nothing_arrives(&mut replies, "971 fetching from fund_751").await?;
    f971.no_unexpected_errors()?;
    svc.no_unexpected_errors()?;

    drop(server);
    Ok(())
}

/// Reply subjects are not covered by publish permissions, so a fund can aim the server's own
/// replies anywhere in the shared account: an allowed JetStream publish of its own submission
/// with the reply subject `$JS.API.STREAM.PURGE.CNMAS_OUT` turns the publish ack into a purge of
/// other funds' undelivered results. The streams refuse purges and deletes (`deny_purge`,
/// `deny_delete`, set by `cnmas_bus::topology::ensure`), so this must change nothing.
#[tokio::test]
async fn a_fund_cannot_purge_results_through_a_reply_subject() -> Result<()> {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/cnmas-funds.conf");
    let server = NatsServer::start(&conf)?;
    let url = server.url();
    let svc = Conn::connect(&url, SVC, None).await?;
    timeout(WAIT, topology::ensure(&svc.js, &Namespace::default(), true)).await??;
    let publisher = Publisher::new(svc.js.clone(), Namespace::default());
    publisher
        .publish("cnmas.out.v1.971.result", "r-971", &result("r-971"))
        .await?;
    publisher
        .publish("cnmas.in.v1.971.contact", "c-971", &result("c-971"))
        .await?;

    let f751 = Conn::connect(&url, F751, Some("_INBOX_751")).await?;
    f751.client
        .publish_with_reply(
            "cnmas.in.v1.751.contact",
            "$JS.API.STREAM.PURGE.CNMAS_OUT",
            Bytes::from_static(b"an allowed submission"),
        )
        .await?;
    f751.client.flush().await?;
    tokio::time::sleep(QUIET).await;

    let mut out = timeout(WAIT, svc.js.get_stream(OUT)).await??;
    let state = timeout(WAIT, out.info()).await??.state.clone();
    ensure!(
        state.messages == 1 && state.first_sequence == 1,
        "fund 751 purged CNMAS_OUT through a reply subject: {state:?}"
    );
    drop(server);
    Ok(())
}
