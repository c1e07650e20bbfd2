//! CNMAS benchmark (issue 7): the pipeline against the raw NATS/PostgreSQL floor, in one run,
//! with the five services started as separate processes from the release binaries.
//!
//! cargo build --release --bins && cargo run --release -p cnmas-bench -- --contacts 100000 \
//!     --outcomes 20000 --agents 200 --talk-ms 1000 --day-seconds 60

mod floor;
mod fund;
mod gen;
mod procs;
mod stats;
mod system;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cnmas_bus::Namespace;
use procs::{CpuSnap, Services};
use serde_json::json;
use stats::{r1, r2, r3, Lat};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(about = "Measures the CNMAS pipeline against the raw JetStream/PostgreSQL floor")]
struct Args {
    /// Contacts submitted by the fund (and records of the floor).
    #[arg(long, default_value_t = 100_000)]
    contacts: usize,
    /// Calls leased and completed through the agent API (≤ contacts), and bare lease cycles.
    #[arg(long, default_value_t = 20_000)]
    outcomes: usize,
    /// Concurrent agents (and bare-table workers).
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// Mean talk time of the working day (exponential), ms.
    #[arg(long, default_value_t = 1000)]
    talk_ms: u64,
    /// Length of the working day, each on the services and on the bare table.
    #[arg(long, default_value_t = 60)]
    day_seconds: u64,
    /// Contacts per SubmitContacts message.
    #[arg(long, default_value_t = 1000)]
    per_message: usize,
    /// gRPC connections the agents share to the dialer. The default, 1, is how agents reach
    /// it in production: through the web console's backend, which holds one channel; set it
    /// to the number of agents for one connection each.
    #[arg(long, default_value_t = 1)]
    agent_channels: usize,
    /// Connections of the bare lease floor's pool (the dialer's pool has 10 by default).
    #[arg(long, default_value_t = 10)]
    floor_pool: u32,
    /// PostgreSQL server (no database).
    #[arg(
        long,
        env = "CNMAS_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg: String,
    #[arg(
        long,
        env = "CNMAS_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// Stop after the pipeline step (profiling).
    #[arg(long)]
    pipeline_only: bool,
}

fn say(s: impl AsRef<str>) {
    eprintln!("[bench] {}", s.as_ref());
}

/// CPU seconds of one step: (step, total, per process).
type StepCpu = (&'static str, f64, Vec<(&'static str, f64)>);

#[derive(Default)]
struct Report {
    floor_s: f64,
    floor_publish_s: f64,
    record_bytes: usize,
    pipeline_s: f64,
    pipeline_submit_s: f64,
    lease_floor_s: f64,
    outcomes_s: f64,
    outcomes_calls_s: f64,
    outcomes_pair: Lat,
    day_calls: usize,
    day_nothing_due: u64,
    day_errors: u64,
    lease: Lat,
    next_call: Lat,
    record_outcome: Lat,
    result_latency: Lat,
    lease_floor_day: Lat,
    lease_floor_day_cycles: usize,
    lost: u64,
    duplicated: u64,
    redeliveries: u64,
    extra_contacts: usize,
    cpu: Vec<StepCpu>,
}

struct Env {
    args: Args,
    ns: Namespace,
    logdir: PathBuf,
    floor_db: String,
    /// The services' JWT secret, to sign the fund, supervisor and agent tokens.
    jwt: String,
}

fn cpu_step(r: &mut Report, name: &'static str, a: &CpuSnap, b: &CpuSnap) {
    let (wall, d) = procs::cpu_delta(a, b);
    r.cpu.push((name, wall, d));
}

async fn dump_metrics(services: &Services, dir: &std::path::Path, step: &str) {
    for s in &services.list {
        if let Ok((200, body)) = procs::http_get(s.http_port, "/metrics").await {
            let _ = std::fs::write(dir.join(format!("metrics-{step}-{}.txt", s.name)), body);
        }
    }
}

/// Each call of the day as `started_s,next_call_ms,record_outcome_ms` (seconds from the first
/// call), to see when the slow ones happened.
fn write_day_timings(dir: &std::path::Path, timings: &[system::Timing]) {
    let Some(first) = timings.iter().map(|t| t.started).min() else {
        return;
    };
    let mut sorted = timings.to_vec();
    sorted.sort_by_key(|t| t.started);
    let mut csv = String::from("started_s,next_call_ms,record_outcome_ms\n");
    for t in &sorted {
        csv.push_str(&format!(
            "{:.4},{:.2},{:.2}\n",
            t.started.duration_since(first).as_secs_f64(),
            t.next_call_ms,
            t.record_outcome_ms
        ));
    }
    let _ = std::fs::write(dir.join("day-timings.csv"), csv);
}

/// Calls the dialer has queued since it started (`cnmas_dialer_calls_queued_total`), 0 while
/// it cannot be read.
async fn calls_queued(services: &Services) -> i64 {
    let Ok((200, body)) = procs::http_get(services.get("dialer-queue").http_port, "/metrics").await
    else {
        return 0;
    };
    body.lines()
        .find_map(|l| l.strip_prefix("cnmas_dialer_calls_queued_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as i64)
}

/// Writes out what the steps before a measured step left to write: PostgreSQL's dirty buffers
/// (`CHECKPOINT`) and then the page cache (`sync`), so that no step pays for the writeback of
/// the steps before it (decision 0016). After the pipeline and the outcomes steps, about 430 MB
/// were dirty when the working day began, and their writeback, thirty seconds later, held
/// every commit's WAL flush for up to 50 ms. Best effort: a PostgreSQL role that may not
/// checkpoint, or a missing `sync`, is reported, not fatal.
async fn settle(pool: &sqlx::PgPool) {
    let started = Instant::now();
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        say(format!("    CHECKPOINT before the step failed: {e}"));
    }
    match tokio::process::Command::new("sync").status().await {
        Ok(s) if s.success() => {}
        Ok(s) => say(format!("    sync before the step: {s}")),
        Err(e) => say(format!("    sync before the step failed: {e}")),
    }
    say(format!(
        "    settled in {:.1} s (checkpoint, page cache written out)",
        started.elapsed().as_secs_f64()
    ));
}

async fn run(env: &Env, services: &mut Services, report: &mut Report) -> Result<()> {
    let a = &env.args;
    let n = a.contacts;
    let m = a.outcomes;
    let nats = async_nats::connect(&a.nats).await.context("NATS")?;
    let js = async_nats::jetstream::new(nats.clone());
    let ctx = system::Ctx {
        ns: env.ns.clone(),
        js: js.clone(),
        auth: cnmas_runtime::auth::Authenticator::new(&env.jwt),
        dialer_db: system::small_pool(&services.get("dialer-queue").db_url).await?,
        intake_db: system::small_pool(&services.get("intake").db_url).await?,
        consent_db: system::small_pool(&services.get("consent").db_url).await?,
        scheduler_db: system::small_pool(&services.get("scheduler").db_url).await?,
    };

    // (1) floor
    say(format!(
        "(1) floor: {n} records through JetStream (file) → pull consumer → COPY"
    ));
    settle(&ctx.dialer_db).await;
    let s0 = services.cpu_snap();
    let f = floor::jetstream_copy(
        &a.nats,
        &env.ns,
        &env.floor_db,
        n,
        Duration::from_secs(60 + n as u64 / 1000),
    )
    .await
    .context("step 1 (floor)")?;
    cpu_step(report, "floor", &s0, &services.cpu_snap());
    report.floor_s = f.total_s;
    report.floor_publish_s = f.publish_s;
    report.record_bytes = f.record_bytes;
    say(format!(
        "    floor {:.2} s (publish done at {:.2} s, {} bytes a record)",
        f.total_s, f.publish_s, f.record_bytes
    ));

    // (2) pipeline
    let campaign = ctx.campaign(services).await.context("step 2 (campaign)")?;
    let fund = fund::Fund::start(nats.clone(), &env.ns, system::FUND).await?;
    say(format!(
        "(2) pipeline: {n} contacts in messages of {} to campaign {campaign}",
        a.per_message
    ));
    settle(&ctx.dialer_db).await;
    let s0 = services.cpu_snap();
    let started = Instant::now();
    let submit = {
        let campaign = campaign.clone();
        let per = a.per_message;
        let sub_ctx = ctx.clone();
        tokio::spawn(async move {
            let r = sub_ctx.submit(&campaign, 0..n, per).await;
            (r, started.elapsed().as_secs_f64())
        })
    };
    let overall = Duration::from_secs(300 + n as u64 / 200);
    let stall = Duration::from_secs(180);
    let mut last = (0i64, Instant::now());
    let mut last_report = Instant::now();
    let mut submit_done: Option<f64> = None;
    let mut submit = Some(submit);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The dialer's counter, then one count of the table to confirm: counting a million-row
        // queue five times a second would cost PostgreSQL more than the step it measures.
        let q = calls_queued(services).await;
        if q as usize >= n && ctx.queued(&campaign).await? as usize >= n {
            break;
        }
        if let Some(h) = submit.as_ref() {
            if h.is_finished() {
                let (r, t) = submit.take().unwrap().await?;
                r.context("step 2: submitting contacts")?;
                submit_done = Some(t);
            }
        }
        services.check_alive().context("step 2 (pipeline)")?;
        let (rej, first) = fund.rejections();
        if rej > 0 {
            bail!(
                "step 2 (pipeline): intake rejected {rej} contacts (first: {}); {q} of {n} queued",
                first.unwrap_or_default()
            );
        }
        if q > last.0 {
            last = (q, Instant::now());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            say(format!(
                "    {:>6.1} s  queued {q} | {}",
                started.elapsed().as_secs_f64(),
                ctx.backlog().await
            ));
        }
        if last.1.elapsed() > stall || started.elapsed() > overall {
            bail!(
                "step 2 (pipeline): {q} of {n} contacts queued after {:.0} s (no progress for {:.0} s); {}",
                started.elapsed().as_secs_f64(),
                last.1.elapsed().as_secs_f64(),
                ctx.stages().await
            );
        }
    }
    report.pipeline_s = started.elapsed().as_secs_f64();
    if let Some(h) = submit.take() {
        let (r, t) = h.await?;
        r?;
        submit_done = Some(t);
    }
    report.pipeline_submit_s = submit_done.unwrap_or(0.0);
    cpu_step(report, "pipeline", &s0, &services.cpu_snap());
    dump_metrics(services, &env.logdir, "pipeline").await;
    say(format!(
        "    pipeline {:.2} s (submitted in {:.2} s); {}",
        report.pipeline_s,
        report.pipeline_submit_s,
        ctx.stages().await
    ));
    if a.pipeline_only {
        return Ok(());
    }

    // (3) lease floor
    say(format!(
        "(3) lease floor: {m} cycles by {} workers (pool {})",
        a.agents, a.floor_pool
    ));
    let floor_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(a.floor_pool)
        .acquire_timeout(Duration::from_secs(60))
        .connect(&env.floor_db)
        .await?;
    let s0 = services.cpu_snap();
    report.lease_floor_s = floor::lease_saturated(
        &floor_pool,
        m,
        a.agents,
        Duration::from_secs(60 + m as u64 / 100),
    )
    .await
    .context("step 3 (lease floor)")?;
    cpu_step(report, "lease floor", &s0, &services.cpu_snap());
    say(format!("    lease floor {:.2} s", report.lease_floor_s));

    // (4) outcomes
    let ids = ctx
        .agents(services, &campaign, a.agents)
        .await
        .context("step 4 (registering agents)")?;
    let clients = ctx.agent_clients(services, &ids, a.agent_channels)?;
    say(format!(
        "(4) outcomes: {m} calls by {} agents, no think time",
        a.agents
    ));
    settle(&floor_pool).await;
    let s0 = services.cpu_snap();
    let started = Instant::now();
    let done = system::outcomes(clients.clone(), m, Duration::from_secs(120 + m as u64 / 50))
        .await
        .context("step 4 (outcomes)")?;
    report.outcomes_calls_s = started.elapsed().as_secs_f64();
    if done.errors > 0 {
        say(format!("    {} agent API errors (retried)", done.errors));
    }
    let contact_ids: Vec<String> = done.calls.iter().map(|c| c.0.clone()).collect();
    let arrivals = match fund
        .wait_for(&contact_ids, Duration::from_secs(120 + m as u64 / 200))
        .await
    {
        Ok(v) => v,
        Err(missing) => bail!(
            "step 4 (outcomes): {missing} of {m} results not received by the fund {:.0} s after the calls ended; {}",
            started.elapsed().as_secs_f64() - report.outcomes_calls_s,
            ctx.stages().await
        ),
    };
    let last_arrival = arrivals.iter().max().copied().unwrap_or_else(Instant::now);
    report.outcomes_s = last_arrival.duration_since(started).as_secs_f64();
    report.outcomes_pair = system::pairs(&done.timings);
    cpu_step(report, "outcomes", &s0, &services.cpu_snap());
    dump_metrics(services, &env.logdir, "outcomes").await;
    say(format!(
        "    outcomes {:.2} s (calls done at {:.2} s)",
        report.outcomes_s, report.outcomes_calls_s
    ));

    // (5) working day
    let talk = a.talk_ms as f64;
    let day = Duration::from_secs(a.day_seconds);
    let ramp = Duration::from_secs_f64((a.day_seconds as f64 / 4.0).min(5.0));
    // Each agent makes about one call per talk time (plus the API round trips).
    let needed = (a.agents as f64 * a.day_seconds as f64 * 1000.0 / (talk + 5.0) * 1.3) as usize
        + 2 * a.agents;
    let ready = ctx.ready(&campaign).await? as usize;
    if ready < needed {
        let extra = needed - ready;
        let from = n;
        if from + extra > gen::MAX_CONTACTS {
            bail!(
                "step 5: would need contacts beyond the generator's {} unique people",
                gen::MAX_CONTACTS
            );
        }
        say(format!(
            "    submitting {extra} extra contacts for the day (not timed)"
        ));
        let target = ctx.queued(&campaign).await? as usize + extra;
        ctx.submit(&campaign, from..from + extra, a.per_message)
            .await?;
        report.extra_contacts = extra;
        let t = Instant::now();
        while (ctx.queued(&campaign).await? as usize) < target {
            if t.elapsed() > Duration::from_secs(300 + extra as u64 / 100) {
                bail!(
                    "step 5: the extra contacts did not all reach the queue; {}",
                    ctx.stages().await
                );
            }
            services.check_alive()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    say(format!(
        "(5) working day: {} agents signing in over {:.1} s, talk ~{} ms, {} s",
        a.agents,
        ramp.as_secs_f64(),
        a.talk_ms,
        a.day_seconds
    ));
    settle(&floor_pool).await;
    let s0 = services.cpu_snap();
    let d = system::day(clients, talk, day, ramp)
        .await
        .context("step 5 (day)")?;
    cpu_step(report, "day", &s0, &services.cpu_snap());
    dump_metrics(services, &env.logdir, "day").await;
    report.day_calls = d.calls.len();
    report.day_nothing_due = d.nothing_due;
    report.day_errors = d.errors;
    report.lease = system::pairs(&d.timings);
    report.next_call = Lat::new(d.timings.iter().map(|t| t.next_call_ms).collect());
    report.record_outcome = Lat::new(d.timings.iter().map(|t| t.record_outcome_ms).collect());
    write_day_timings(&env.logdir, &d.timings);
    let day_ids: Vec<String> = d.calls.iter().map(|c| c.0.clone()).collect();
    let lost = match fund.wait_for(&day_ids, Duration::from_secs(60)).await {
        Ok(_) => 0,
        Err(missing) => {
            say(format!(
                "    {missing} results of the day not received 60 s after it ended"
            ));
            missing as u64
        }
    };
    {
        let g = fund.received.lock().unwrap();
        let mut lat = Vec::with_capacity(d.calls.len());
        for (id, recorded) in &d.calls {
            if let Some(at) = g.by_contact.get(id) {
                lat.push(at.saturating_duration_since(*recorded).as_secs_f64() * 1000.0);
            }
        }
        report.result_latency = Lat::new(lat);
    }
    report.lost = lost;
    say(format!(
        "    {} calls, lease p50 {:.1} ms p99 {:.1} ms, result p99 {:.1} ms, {} NothingDue",
        report.day_calls,
        report.lease.p(50.0),
        report.lease.p(99.0),
        report.result_latency.p(99.0),
        report.day_nothing_due
    ));

    say("    the same day on the bare table");
    let s0 = services.cpu_snap();
    let (fl, empty) = floor::lease_day(&floor_pool, a.agents, talk, day, ramp, needed)
        .await
        .context("step 5 (bare-table day)")?;
    cpu_step(report, "bare day", &s0, &services.cpu_snap());
    if empty > 0 {
        say(format!("    bare table ran empty {empty} times"));
    }
    report.lease_floor_day_cycles = fl.len();
    report.lease_floor_day = fl;

    let g = fund.received.lock().unwrap();
    report.duplicated = g.duplicated();
    report.redeliveries = g.redeliveries;
    Ok(())
}

fn machine() -> serde_json::Value {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|x| x.1.trim().to_string())
        .unwrap_or_default();
    json!({ "nproc": nproc, "memory_gib": r1(mem_kib as f64 / 1048576.0), "cpu": cpu })
}

/// `x / y`, or 0 when there is no floor to compare with.
fn ratio(x: f64, y: f64) -> f64 {
    if y > 0.0 {
        x / y
    } else {
        0.0
    }
}

fn print_table(env: &Env, r: &Report, rss: &[(&'static str, f64)]) {
    let a = &env.args;
    println!();
    println!(
        "CNMAS benchmark — {} contacts, {} outcomes, {} agents, talk {} ms, day {} s — services as separate processes",
        a.contacts, a.outcomes, a.agents, a.talk_ms, a.day_seconds
    );
    println!("{:-<100}", "");
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "measure", "value", "floor", "ratio"
    );
    println!("{:-<100}", "");
    println!(
        "{:<44} {:>12.2} s {:>12.2} s {:>10.2}",
        "(2) pipeline: N contacts → dialer queue",
        r.pipeline_s,
        r.floor_s,
        ratio(r.pipeline_s, r.floor_s)
    );
    println!(
        "{:<44} {:>12.2} s {:>14} {:>10}",
        "    of which fund publishing", r.pipeline_submit_s, "", ""
    );
    println!(
        "{:<44} {:>12.0}/s {:>12.0}/s {:>10}",
        "    throughput",
        a.contacts as f64 / r.pipeline_s.max(1e-9),
        a.contacts as f64 / r.floor_s.max(1e-9),
        ""
    );
    if a.pipeline_only {
        println!(
            "{:<44} {:>14}",
            "(3)–(5) lease floor, outcomes, day", "not run"
        );
    } else {
        print_calls(a, r);
    }
    for (s, mib) in rss {
        println!("{:<44} {:>10.1} MiB", format!("(6) peak RSS {s}"), mib);
    }
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "lost / duplicated (redeliveries)",
        format!("{} / {}", r.lost, r.duplicated),
        r.redeliveries,
        ""
    );
    println!("{:-<100}", "");
    println!("CPU seconds per step (wall in brackets); 2 cores = 2 CPU-s per second of wall time");
    print!("{:<20}", "step");
    for g in procs::CPU_GROUPS {
        print!("{:>10}", g.replace("dialer-queue", "dialer"));
    }
    println!();
    for (name, wall, d) in &r.cpu {
        print!("{:<20}", format!("{name} [{wall:.1}s]"));
        for (_, v) in d {
            print!("{:>10.1}", v);
        }
        println!();
    }
    println!("{:-<100}", "");
    println!("logs and /metrics dumps: {}", env.logdir.display());
}

/// The rows of steps 4 and 5.
fn print_calls(a: &Args, r: &Report) {
    println!(
        "{:<44} {:>12.2} s {:>12.2} s {:>10.2}",
        "(4) outcomes: M calls → M results at fund",
        r.outcomes_s,
        r.lease_floor_s,
        ratio(r.outcomes_s, r.lease_floor_s)
    );
    println!(
        "{:<44} {:>12.2} s {:>14} {:>10}",
        "    of which calls (NextCall+RecordOutcome)", r.outcomes_calls_s, "", ""
    );
    println!(
        "{:<44} {:>12.0}/s {:>12.0}/s {:>10}",
        "    throughput",
        a.outcomes as f64 / r.outcomes_s.max(1e-9),
        a.outcomes as f64 / r.lease_floor_s.max(1e-9),
        ""
    );
    println!(
        "{:<44} {:>10.1} ms {:>14} {:>10}",
        "    pair latency p50 / p99 under saturation",
        r.outcomes_pair.p(50.0),
        "",
        ""
    );
    println!("{:<44} {:>10.1} ms", "", r.outcomes_pair.p(99.0));
    println!(
        "{:<44} {:>10.1} ms {:>10.1} ms {:>10.2}",
        "(5) day: lease pair p50",
        r.lease.p(50.0),
        r.lease_floor_day.p(50.0),
        ratio(r.lease.p(50.0), r.lease_floor_day.p(50.0))
    );
    println!(
        "{:<44} {:>10.1} ms {:>10.1} ms {:>10.2}",
        "(5) day: lease pair p99",
        r.lease.p(99.0),
        r.lease_floor_day.p(99.0),
        ratio(r.lease.p(99.0), r.lease_floor_day.p(99.0))
    );
    for (name, l) in [
        ("    NextCall p50 / p99", &r.next_call),
        ("    RecordOutcome p50 / p99", &r.record_outcome),
    ] {
        println!("{:<44} {:>10.1} ms {:>10.1} ms", name, l.p(50.0), l.p(99.0));
    }
    println!(
        "{:<44} {:>10.1} ms {:>14} {:>10}",
        "(5) day: outcome → fund result p50",
        r.result_latency.p(50.0),
        "",
        ""
    );
    println!(
        "{:<44} {:>10.1} ms {:>14} {:>10}",
        "(5) day: outcome → fund result p99",
        r.result_latency.p(99.0),
        "",
        ""
    );
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "(5) day: calls (services / bare table)", r.day_calls, r.lease_floor_day_cycles, ""
    );
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "    services: NothingDue | API errors", r.day_nothing_due, r.day_errors, ""
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let code = match main_inner(args).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[bench] FAILED: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn main_inner(args: Args) -> Result<i32> {
    if args.outcomes > args.contacts && !args.pipeline_only {
        bail!(
            "--outcomes ({}) must not exceed --contacts ({})",
            args.outcomes,
            args.contacts
        );
    }
    if args.contacts > gen::MAX_CONTACTS {
        bail!(
            "at most {} contacts (unique people of the generator)",
            gen::MAX_CONTACTS
        );
    }
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let bin = procs::bin_dir()?;
    procs::check_binaries(&bin)?;
    let ns_raw = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let ns = Namespace::new(&ns_raw).expect("valid namespace");
    let logdir = std::env::temp_dir().join(format!("cnmas-bench-{ns_raw}"));
    std::fs::create_dir_all(&logdir)?;
    let secrets = procs::Secrets::random();
    let floor_db = format!("{}/{}", args.pg, procs::db_name(&ns_raw, "floor"));
    cnmas_runtime::db::ensure_database(&floor_db)
        .await
        .context("PostgreSQL must run (CNMAS_BENCH_DATABASE_URL)")?;
    say(format!(
        "namespace {ns_raw}, services from {}, logs in {}",
        bin.display(),
        logdir.display()
    ));
    let lease_seconds = 300;
    let mut services = Services::start(
        &bin,
        &logdir,
        &ns_raw,
        &args.pg,
        &args.nats,
        &secrets,
        lease_seconds,
    )
    .await?;
    let env = Env {
        args: args.clone(),
        ns: ns.clone(),
        logdir: logdir.clone(),
        floor_db: floor_db.clone(),
        jwt: secrets.jwt.clone(),
    };
    let mut report = Report::default();
    let outcome = async {
        services
            .wait_ready(Duration::from_secs(90))
            .await
            .context("starting the services")?;
        // The services install their Prometheus recorder on the first scrape of /metrics
        // (crates/runtime/src/telemetry.rs): scrape once now so nothing before is lost.
        for s in &services.list {
            let _ = procs::http_get(s.http_port, "/metrics").await;
        }
        say("services ready");
        run(&env, &mut services, &mut report).await
    };
    let result = tokio::select! {
        r = outcome => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };

    // Cleanup, whatever happened.
    say("stopping the services and removing the databases and streams");
    services.stop(Duration::from_secs(15)).await;
    let rss = services.peak_mib();
    for s in &services.list {
        if let Err(e) = cnmas_runtime::db::drop_database(&s.db_url).await {
            eprintln!("[bench] cannot drop {}: {e:#}", s.db_url);
        }
    }
    let _ = cnmas_runtime::db::drop_database(&floor_db).await;
    if let Ok(nats) = async_nats::connect(&args.nats).await {
        let js = async_nats::jetstream::new(nats);
        let _ = cnmas_bus::topology::delete(&js, &ns).await;
        let _ = js.delete_stream(ns.stream("BENCH_FLOOR")).await;
    }
    result?;

    print_table(&env, &report, &rss);
    let r = &report;
    let max_rss = rss.iter().map(|x| x.1).fold(0.0, f64::max);
    let rss_obj: serde_json::Map<String, serde_json::Value> = rss
        .iter()
        .map(|(s, v)| (s.to_string(), json!(r1(*v))))
        .collect();
    let mut out = json!({
        "contacts": args.contacts,
        "outcomes": args.outcomes,
        "agents": args.agents,
        "agent_channels": args.agent_channels,
        "talk_ms": args.talk_ms,
        "day_seconds": args.day_seconds,
        "floor_s": r3(r.floor_s),
        "pipeline_s": r3(r.pipeline_s),
        "pipeline_ratio": r2(ratio(r.pipeline_s, r.floor_s)),
        "lease_floor_s": r3(r.lease_floor_s),
        "outcomes_s": r3(r.outcomes_s),
        "outcomes_ratio": r2(ratio(r.outcomes_s, r.lease_floor_s)),
        "lease_p50_ms": r2(r.lease.p(50.0)),
        "lease_p99_ms": r2(r.lease.p(99.0)),
        "lease_floor_p99_ms": r2(r.lease_floor_day.p(99.0)),
        "next_call_p99_ms": r2(r.next_call.p(99.0)),
        "record_outcome_p99_ms": r2(r.record_outcome.p(99.0)),
        "result_latency_p99_ms": r2(r.result_latency.p(99.0)),
        "max_rss_mib": r1(max_rss),
        "rss_mib": rss_obj,
        "lost": r.lost,
        "duplicated": r.duplicated,
        "day_calls": r.day_calls,
        "machine": machine(),
        "mode": "separate processes",
    });
    if args.pipeline_only {
        // Steps 3 to 5 did not run: their measures are absent, not zero.
        for key in [
            "lease_floor_s",
            "outcomes_s",
            "outcomes_ratio",
            "lease_p50_ms",
            "lease_p99_ms",
            "lease_floor_p99_ms",
            "next_call_p99_ms",
            "record_outcome_p99_ms",
            "result_latency_p99_ms",
            "day_calls",
        ] {
            out[key] = serde_json::Value::Null;
        }
        out["pipeline_only"] = json!(true);
    }
    println!("{out}");
    Ok(if r.lost > 0 || r.duplicated > 0 { 2 } else { 0 })
}
