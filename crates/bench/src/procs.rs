//! The five services as separate processes: free ports, fresh databases, logs, readiness,
//! peak memory and CPU sampling from /proc, graceful stop.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const SERVICES: [&str; 5] = ["intake", "consent", "scheduler", "dialer-queue", "results"];

/// Secrets generated for this run only.
pub struct Secrets {
    pub jwt: String,
    pub person_key: String,
    pub vault_keys: String,
}

impl Secrets {
    pub fn random() -> Self {
        use rand::RngCore;
        let mut r = rand::thread_rng();
        let mut hex = |n: usize| {
            let mut b = vec![0u8; n];
            r.fill_bytes(&mut b);
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        };
        let jwt = hex(32);
        let person_key = hex(32);
        // 32 bytes, base64 (hex digits are valid base64 characters: 43 chars + '=' padding).
        let mut raw = [0u8; 32];
        r.fill_bytes(&mut raw);
        let vault_keys = format!("k1:{}", base64_std(&raw));
        Secrets {
            jwt,
            person_key,
            vault_keys,
        }
    }
}

fn base64_std(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub struct Service {
    pub name: &'static str,
    pub pid: u32,
    pub grpc_port: u16,
    pub http_port: u16,
    pub db_url: String,
    pub log: PathBuf,
    child: Child,
}

pub struct Services {
    pub list: Vec<Service>,
    pub peaks: Arc<Mutex<HashMap<&'static str, Peak>>>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Peak {
    pub hwm_kib: u64,
    pub rss_kib: u64,
}

pub fn db_name(ns: &str, service: &str) -> String {
    format!("cnmasbench_{}_{}", ns, service.replace('-', "_"))
}

/// The directory of the bench binary, where cargo puts the service binaries too.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    Ok(exe.parent().context("no parent dir")?.to_path_buf())
}

pub fn check_binaries(dir: &Path) -> Result<()> {
    let missing: Vec<String> = SERVICES
        .iter()
        .map(|s| dir.join(format!("cnmas-{s}")))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "service binaries not found next to the bench binary: {}\n\
             build them first (same profile and target dir as the bench): cargo build --release --bins",
            missing.join(", ")
        );
    }
    Ok(())
}

impl Services {
    pub async fn start(
        bin: &Path,
        logdir: &Path,
        ns: &str,
        pg_base: &str,
        nats_url: &str,
        secrets: &Secrets,
        lease_seconds: u64,
    ) -> Result<Self> {
        // free_ports gives exactly the count asked for: a (gRPC, HTTP) pair per service.
        let free = cnmas_system_tests::free_ports(2 * SERVICES.len())?;
        let ports: HashMap<&str, (u16, u16)> = SERVICES
            .iter()
            .zip(free.chunks_exact(2))
            .map(|(s, pair)| (*s, (pair[0], pair[1])))
            .collect();
        let intake_grpc = ports["intake"].0;
        let mut list = Vec::new();
        for s in SERVICES {
            let (grpc, http) = ports[s];
            let db_url = format!("{pg_base}/{}", db_name(ns, s));
            let log = logdir.join(format!("{s}.log"));
            let logf = std::fs::File::create(&log)?;
            let mut cmd = Command::new(bin.join(format!("cnmas-{s}")));
            // Nothing of the caller's CNMAS_* settings leaks in.
            for (k, _) in std::env::vars() {
                if k.starts_with("CNMAS_") || k.starts_with("OTEL_") || k == "RUST_LOG" {
                    cmd.env_remove(k);
                }
            }
            cmd.env("CNMAS_NAMESPACE", ns)
                .env("CNMAS_NATS_URL", nats_url)
                .env("CNMAS_NATS_MEMORY_STORAGE", "false")
                .env("CNMAS_DATABASE_URL", &db_url)
                .env("CNMAS_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
                .env("CNMAS_HTTP_ADDR", format!("127.0.0.1:{http}"))
                .env("CNMAS_LOG_FORMAT", "json")
                .env("CNMAS_JWT_SECRET", &secrets.jwt)
                .env("CNMAS_PERSON_KEY_SECRET", &secrets.person_key);
            match s {
                "intake" => {
                    cmd.env("CNMAS_VAULT_KEYS", &secrets.vault_keys)
                        .env("CNMAS_VAULT_ACTIVE_KEY", "k1");
                }
                "dialer-queue" => {
                    cmd.env(
                        "CNMAS_INTAKE_URL",
                        format!("http://127.0.0.1:{intake_grpc}"),
                    )
                    .env(
                        "CNMAS_SCHEDULER_URL",
                        format!("http://127.0.0.1:{}", ports["scheduler"].0),
                    )
                    .env("CNMAS_LEASE_SECONDS", lease_seconds.to_string());
                }
                _ => {}
            }
            cmd.stdin(std::process::Stdio::null())
                .stdout(logf.try_clone()?)
                .stderr(logf)
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start cnmas-{s}"))?;
            let pid = child.id().context("child without pid")?;
            list.push(Service {
                name: s,
                pid,
                grpc_port: grpc,
                http_port: http,
                db_url,
                log,
                child,
            });
        }
        let peaks: Arc<Mutex<HashMap<&'static str, Peak>>> = Arc::new(Mutex::new(HashMap::new()));
        let pids: Vec<(&'static str, u32)> = list.iter().map(|s| (s.name, s.pid)).collect();
        let p2 = peaks.clone();
        let sampler = tokio::spawn(async move {
            loop {
                for (name, pid) in &pids {
                    if let Some((hwm, rss)) = mem_of(*pid) {
                        let mut g = p2.lock().unwrap();
                        let e = g.entry(name).or_default();
                        e.hwm_kib = e.hwm_kib.max(hwm).max(rss);
                        e.rss_kib = e.rss_kib.max(rss);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ok(Services {
            list,
            peaks,
            sampler: Some(sampler),
        })
    }

    pub fn get(&self, name: &str) -> &Service {
        self.list
            .iter()
            .find(|s| s.name == name)
            .expect("known service")
    }

    pub fn grpc_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.get(name).grpc_port)
    }

    /// Waits for `/readyz` = 200 on every service; fails if one exits or after `within`.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut pending: Vec<usize> = (0..self.list.len()).collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for i in pending {
                let s = &mut self.list[i];
                if let Some(status) = s.child.try_wait()? {
                    bail!(
                        "{} exited ({status}) before becoming ready; last log lines:\n{}",
                        s.name,
                        tail(&s.log, 20)
                    );
                }
                match http_get(s.http_port, "/readyz").await {
                    Ok((200, _)) => {}
                    _ => still.push(i),
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = pending.iter().map(|&i| self.list[i].name).collect();
                let logs: Vec<String> = pending
                    .iter()
                    .map(|&i| {
                        format!(
                            "--- {}:\n{}",
                            self.list[i].name,
                            tail(&self.list[i].log, 10)
                        )
                    })
                    .collect();
                bail!(
                    "not ready after {within:?}: {}\n{}",
                    names.join(", "),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Fails if a service died.
    pub fn check_alive(&mut self) -> Result<()> {
        for s in &mut self.list {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "{} exited ({status}) during the run; last log lines:\n{}",
                    s.name,
                    tail(&s.log, 20)
                );
            }
        }
        Ok(())
    }

    /// Peak RSS (MiB) of each service so far (max of VmHWM and sampled VmRSS).
    pub fn peak_mib(&self) -> Vec<(&'static str, f64)> {
        let g = self.peaks.lock().unwrap();
        SERVICES
            .iter()
            .map(|s| {
                (
                    *s,
                    g.get(s).map(|p| p.hwm_kib as f64 / 1024.0).unwrap_or(0.0),
                )
            })
            .collect()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        // A last memory sample before they go.
        for s in &self.list {
            if let Some((hwm, rss)) = mem_of(s.pid) {
                let mut g = self.peaks.lock().unwrap();
                let e = g.entry(s.name).or_default();
                e.hwm_kib = e.hwm_kib.max(hwm).max(rss);
                e.rss_kib = e.rss_kib.max(rss);
            }
        }
        if let Some(h) = self.sampler.take() {
            h.abort();
        }
        for s in &self.list {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(s.pid.to_string())
                .status();
        }
        for s in &mut self.list {
            match tokio::time::timeout(grace, s.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!(
                        "{} did not stop within {grace:?} after SIGTERM; killing it",
                        s.name
                    );
                    let _ = s.child.start_kill();
                    let _ = s.child.wait().await;
                }
            }
        }
    }
}

/// (VmHWM, VmRSS) in KiB.
pub fn mem_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields after ")": state(3) ppid ... utime is field 14 overall → index 11 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Sum of CPU ticks of every process whose comm is `comm`.
pub fn cpu_ticks_of_comm(comm: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim() == comm)
            .unwrap_or(false)
        {
            total += cpu_ticks(pid).unwrap_or(0);
        }
    }
    total
}

/// CPU ticks per process group at one instant.
#[derive(Clone, Debug)]
pub struct CpuSnap {
    pub at: Instant,
    pub ticks: Vec<(&'static str, u64)>,
}

pub const CPU_GROUPS: [&str; 8] = [
    "intake",
    "consent",
    "scheduler",
    "dialer-queue",
    "results",
    "postgres",
    "nats",
    "bench",
];

impl Services {
    pub fn cpu_snap(&self) -> CpuSnap {
        let mut ticks = Vec::new();
        for s in &self.list {
            ticks.push((s.name, cpu_ticks(s.pid).unwrap_or(0)));
        }
        ticks.push(("postgres", cpu_ticks_of_comm("postgres")));
        ticks.push(("nats", cpu_ticks_of_comm("nats-server")));
        ticks.push(("bench", cpu_ticks(std::process::id()).unwrap_or(0)));
        CpuSnap {
            at: Instant::now(),
            ticks,
        }
    }
}

/// CPU seconds used per group between two snapshots, and the wall time.
pub fn cpu_delta(a: &CpuSnap, b: &CpuSnap) -> (f64, Vec<(&'static str, f64)>) {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    let d = a
        .ticks
        .iter()
        .zip(&b.ticks)
        .map(|((n, x), (_, y))| (*n, y.saturating_sub(*x) as f64 / 100.0))
        .collect();
    (wall, d)
}

/// A minimal HTTP/1.1 GET on 127.0.0.1 (probes, metrics).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        anyhow::Ok((code, body))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .context("HTTP timeout")?
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
