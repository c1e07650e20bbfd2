//! The fund's side: a durable pull consumer on `cnmas.out.v1.751.result` that records every
//! result it receives (once per stream sequence; a redelivery of the same stored message is not
//! a duplicate), and a plain subscription counting rejections.

use anyhow::Result;
use async_nats::jetstream::{self, consumer::pull};
use cnmas_bus::{subjects, Namespace};
use cnmas_proto::common::FinalStatus;
use cnmas_proto::intake::ContactRejected;
use cnmas_proto::results::ContactResult;
use futures::StreamExt;
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Received {
    /// result_id → how many distinct stored messages carried it.
    pub by_result_id: HashMap<String, u32>,
    /// contact_id → when its first result arrived.
    pub by_contact: HashMap<String, Instant>,
    pub seqs: HashSet<u64>,
    pub redeliveries: u64,
    pub messages: u64,
    pub rejected_results: u64,
    pub undecodable: u64,
}

impl Received {
    pub fn duplicated(&self) -> u64 {
        self.by_result_id
            .values()
            .map(|&n| (n as u64).saturating_sub(1))
            .sum()
    }
}

pub struct Fund {
    pub received: Arc<Mutex<Received>>,
    pub rejections: Arc<Mutex<(u64, Option<String>)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fund {
    pub async fn start(nats: async_nats::Client, ns: &Namespace, fund: &str) -> Result<Self> {
        let js = jetstream::new(nats.clone());
        let stream = js.get_stream(ns.stream("OUT")).await?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                "bench_fund_results",
                pull::Config {
                    durable_name: Some("bench_fund_results".into()),
                    filter_subject: ns.subject(&subjects::fund_out(fund, "result")),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    max_ack_pending: 50_000,
                    ..Default::default()
                },
            )
            .await?;
        let received: Arc<Mutex<Received>> = Arc::default();
        let r = received.clone();
        let results = tokio::spawn(async move {
            loop {
                let mut messages = match consumer
                    .stream()
                    .max_messages_per_batch(1000)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("fund consumer: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                while let Some(m) = messages.next().await {
                    let Ok(m) = m else { continue };
                    let now = Instant::now();
                    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    {
                        let mut g = r.lock().unwrap();
                        g.messages += 1;
                        if !g.seqs.insert(seq) {
                            g.redeliveries += 1;
                        } else {
                            match ContactResult::decode(m.payload.clone()) {
                                Ok(res) => {
                                    *g.by_result_id.entry(res.result_id.clone()).or_default() += 1;
                                    if res.final_status == FinalStatus::RejectedAtIntake as i32 {
                                        g.rejected_results += 1;
                                    }
                                    g.by_contact.entry(res.contact_id).or_insert(now);
                                }
                                Err(_) => g.undecodable += 1,
                            }
                        }
                    }
                    let _ = m.ack().await;
                }
            }
        });
        let rejections: Arc<Mutex<(u64, Option<String>)>> = Arc::default();
        let rj = rejections.clone();
        let mut sub = nats
            .subscribe(ns.subject(&subjects::fund_out(fund, "rejection")))
            .await?;
        let rejects = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let mut g = rj.lock().unwrap();
                g.0 += 1;
                if g.1.is_none() {
                    g.1 = Some(match ContactRejected::decode(m.payload.clone()) {
                        Ok(r) => format!(
                            "ref {:?}: {}",
                            r.submission_ref,
                            r.reasons
                                .iter()
                                .map(|x| format!("{} {} ({})", x.field, x.rule, x.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        Err(_) => "undecodable rejection".into(),
                    });
                }
            }
        });
        Ok(Fund {
            received,
            rejections,
            tasks: vec![results, rejects],
        })
    }

    /// Waits until a result has arrived for every contact of `ids`; returns the arrival times
    /// (in `ids` order) or the number still missing after `within`.
    pub async fn wait_for(
        &self,
        ids: &[String],
        within: Duration,
    ) -> std::result::Result<Vec<Instant>, usize> {
        let deadline = Instant::now() + within;
        let mut missing: Vec<usize> = (0..ids.len()).collect();
        loop {
            {
                let g = self.received.lock().unwrap();
                missing.retain(|&i| !g.by_contact.contains_key(&ids[i]));
            }
            if missing.is_empty() {
                let g = self.received.lock().unwrap();
                return Ok(ids.iter().map(|id| g.by_contact[id]).collect());
            }
            if Instant::now() > deadline {
                return Err(missing.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn rejections(&self) -> (u64, Option<String>) {
        self.rejections.lock().unwrap().clone()
    }
}

impl Drop for Fund {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
