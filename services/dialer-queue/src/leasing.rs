//! `NextCall` is served in batches, as outcomes are written (decision 0011): a batch takes every
//! request that waits and, when the dialer is busy, those that arrive within the writers'
//! gather (decision 0020). A batch is one transaction of two statements. The first locks the
//! candidates with `SKIP LOCKED`: each agent's held call and own callback, and the best free
//! calls of the batch's campaigns, as many per campaign as agents of the batch may take from it.
//! [`assign`] gives them out in arrival order, so no two agents get the same call. The cards of
//! the assigned calls are then asked of intake in one request, while the second statement
//! leases the calls and moves the agents to "on call" (or "available" when nothing is due) and
//! the transaction commits (decision 0014). A quiet dialer leases each call alone; a busy one
//! pays four round trips, one commit and one request to intake per batch.

use crate::batch::{next_batch, submit, BatchError};
use crate::intake::{CardFor, Intake};
use crate::leases::{self, LeaseFacts};
use crate::staffing;
use chrono::{DateTime, Utc};
use cnmas_proto::intake::CallCard;
use cnmas_runtime::service::Base;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The most agents leased for by one transaction.
const MAX_BATCH: usize = 256;

/// Calls whose agent-owned callback is this late go to any agent of the campaign.
const CALLBACK_EXCLUSIVITY_MINUTES: i32 = 15;

/// What `NextCall` answers an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Leased {
    /// The dialer does not know this agent.
    NotRegistered,
    /// No call of the agent's campaigns is due (or every one is taken).
    NothingDue,
    /// The call the agent holds now: newly leased, or the one it already held, with its card
    /// (`None` when intake could not give it).
    Call {
        lease_id: Uuid,
        facts: Box<LeaseFacts>,
        presented_number: String,
        card: Option<Box<CallCard>>,
    },
}

struct Pending {
    agent_id: String,
    leased: oneshot::Sender<Result<Leased, String>>,
}

#[derive(Clone)]
pub struct Leasing {
    queue: mpsc::Sender<Pending>,
}

impl Leasing {
    /// Starts the service's leasing task; it stops with the service.
    pub fn start(base: &Base, lease: Duration, gather: Duration, intake: Intake) -> Self {
        let (queue, arrivals) = mpsc::channel(4 * MAX_BATCH);
        base.tasks.spawn(run(
            base.pool.clone(),
            lease,
            gather,
            intake,
            arrivals,
            base.tasks.clone(),
            base.shutdown.clone(),
        ));
        Leasing { queue }
    }

    /// The agent's next call, leased to it and committed.
    pub async fn next_call(&self, agent_id: &str) -> Result<Leased, BatchError> {
        submit(&self.queue, |leased| Pending {
            agent_id: agent_id.to_string(),
            leased,
        })
        .await
    }
}

async fn run(
    pool: PgPool,
    lease: Duration,
    gather: Duration,
    intake: Intake,
    mut arrivals: mpsc::Receiver<Pending>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    while let Some(batch) = next_batch(&mut arrivals, MAX_BATCH, gather, &shutdown).await {
        metrics::histogram!("cnmas_dialer_lease_batch_size").record(batch.len() as f64);
        // An agent asking twice at once (a double click) is served once, with one answer.
        let mut agents: Vec<String> = Vec::with_capacity(batch.len());
        for p in &batch {
            if !agents.contains(&p.agent_id) {
                agents.push(p.agent_id.clone());
            }
        }
        let started = Instant::now();
        let leased = lease_batch(&pool, &agents, lease, &intake, &tasks).await;
        metrics::histogram!("cnmas_dialer_lease_batch_seconds").record(started.elapsed());
        match leased {
            Ok((mut leased, cards)) => {
                // The cards may still be on their way: they are awaited apart, so that the
                // next batch is leased meanwhile.
                tasks.spawn(async move {
                    with_cards(&mut leased, cards).await;
                    for p in batch {
                        let answer = leased
                            .get(&p.agent_id)
                            .cloned()
                            .unwrap_or(Leased::NotRegistered);
                        let _ = p.leased.send(Ok(answer));
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, agents = agents.len(), "leasing calls failed");
                for p in batch {
                    let _ = p.leased.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// The cards of a batch by lease id, from one request to intake: empty when no call was
/// assigned or intake could not be reached.
type Cards = JoinHandle<HashMap<Uuid, Box<CallCard>>>;

/// Asks intake for the cards of the assigned calls, in a task of its own.
fn ask_cards(intake: &Intake, tasks: &TaskTracker, calls: Vec<CardFor>) -> Cards {
    let intake = intake.clone();
    tasks.spawn(async move {
        if calls.is_empty() {
            return HashMap::new();
        }
        let started = Instant::now();
        let lease_ids: Vec<Uuid> = calls.iter().map(|c| c.lease_id).collect();
        let asked = lease_ids.len();
        let answer = intake.cards(calls).await;
        metrics::histogram!("cnmas_dialer_cards_seconds").record(started.elapsed());
        let cards = match answer {
            Ok(cards) => cards,
            Err(e) => {
                tracing::warn!(code = ?e.code(), calls = asked, "call cards unavailable");
                return HashMap::new();
            }
        };
        lease_ids
            .into_iter()
            .zip(cards)
            .filter_map(|(lease_id, card)| Some((lease_id, Box::new(card?))))
            .collect()
    })
}

/// Adds their cards to the leased calls. A call intake gave no card for is left without.
async fn with_cards(leased: &mut HashMap<String, Leased>, cards: Cards) {
    let mut cards = cards.await.unwrap_or_default();
    for l in leased.values_mut() {
        if let Leased::Call { lease_id, card, .. } = l {
            *card = cards.remove(lease_id);
        }
    }
}

/// The candidates of a batch, locked: registered agents, held calls, the active campaigns of
/// each agent without a held call, own callbacks, and the best free calls of each of those
/// campaigns (as many as agents of the batch may take from it). Free calls exclude callbacks
/// owned by an agent until they are late: an agent's own comes from `own`, found through the
/// callbacks' index. Its campaign is checked by a subquery the planner cannot turn into a
/// join: as a join, on tables without statistics, it was planned as a walk of each campaign's
/// free calls for every agent, 5 s a batch at 100,000 queued calls.
const CANDIDATES: &str = "
    WITH batch AS (
        SELECT DISTINCT g.agent_id FROM UNNEST($1::text[]) AS a(agent_id)
        JOIN agents g ON g.agent_id = a.agent_id),
    held AS (
        SELECT b.agent_id, h.* FROM batch b CROSS JOIN LATERAL (
            SELECT q.call_id, q.contact_id, q.campaign_id, q.lease_id FROM queue q
            WHERE q.leased_by = b.agent_id AND q.lease_expires_at > $2 LIMIT 1) h),
    asking AS (SELECT agent_id FROM batch EXCEPT SELECT agent_id FROM held),
    campaigns_of AS (
        SELECT ac.agent_id, ac.campaign_id FROM asking a
        JOIN agent_campaigns ac ON ac.agent_id = a.agent_id
        JOIN campaigns c ON c.campaign_id = ac.campaign_id AND c.state = 'active'),
    own AS (
        SELECT a.agent_id, o.* FROM asking a CROSS JOIN LATERAL (
            SELECT q.call_id, q.contact_id, q.campaign_id FROM queue q
            WHERE q.callback_agent_id = a.agent_id AND q.callback_agent_id <> ''
              AND q.lease_id IS NULL AND q.due_at <= $2 AND q.window_end > $2
              AND (SELECT true FROM campaigns_of m
                   WHERE m.agent_id = a.agent_id AND m.campaign_id = q.campaign_id LIMIT 1)
            ORDER BY q.due_at LIMIT 1
            FOR UPDATE OF q SKIP LOCKED) o),
    free AS (
        SELECT w.campaign_id, f.call_id, f.contact_id, f.priority_key, f.due_at
        FROM (SELECT campaign_id, count(*) AS wanted FROM campaigns_of GROUP BY campaign_id) w
        CROSS JOIN LATERAL (
            SELECT q.call_id, q.contact_id, q.priority_key, q.due_at FROM queue q
            WHERE q.campaign_id = w.campaign_id AND q.lease_id IS NULL
              AND q.due_at <= $2 AND q.window_end > $2
              AND (q.callback_agent_id = '' OR q.due_at < $2 - make_interval(mins => $3))
            ORDER BY q.priority_key, q.due_at LIMIT w.wanted
            FOR UPDATE OF q SKIP LOCKED) f)
    SELECT 'agent' AS kind, agent_id, NULL::text AS call_id, NULL::uuid AS contact_id,
           NULL::uuid AS campaign_id, NULL::uuid AS lease_id, NULL::bigint AS priority_key,
           NULL::timestamptz AS due_at FROM batch
    UNION ALL SELECT 'held', agent_id, call_id, contact_id, campaign_id, lease_id, NULL, NULL
        FROM held
    UNION ALL SELECT 'may', agent_id, NULL, NULL, campaign_id, NULL, NULL, NULL FROM campaigns_of
    UNION ALL SELECT 'own', agent_id, call_id, contact_id, campaign_id, NULL, NULL, NULL FROM own
    UNION ALL SELECT 'free', NULL, call_id, contact_id, campaign_id, NULL, priority_key, due_at
        FROM free";

/// Leases the assigned calls (a held call is returned as it is) and moves every agent of the
/// batch: "on call" with a call, else "available".
static LEASE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = leases::COLUMNS;
    format!(
        "WITH pick AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::bool[])
                 AS p(agent_id, call_id, lease_id, held)),
         leased AS (
             UPDATE queue q SET lease_id = p.lease_id, leased_by = p.agent_id, leased_at = $5,
                 lease_expires_at = $5 + make_interval(secs => $6)
             FROM pick p, campaigns c
             WHERE q.call_id = p.call_id AND NOT p.held AND c.campaign_id = q.campaign_id
             RETURNING p.agent_id, {columns}),
         kept AS (
             SELECT p.agent_id, {columns} FROM pick p
             JOIN queue q ON q.call_id = p.call_id AND q.leased_by = p.agent_id
             JOIN campaigns c ON c.campaign_id = q.campaign_id
             WHERE p.held),
         {}
         SELECT * FROM leased UNION ALL SELECT * FROM kept",
        staffing::transition_steps(
            "(CASE WHEN o.agent_id = ANY($1) THEN 'on_call' ELSE 'available' END)",
            "''",
            "agent_id = ANY($7)",
        )
    )
});

/// Leases for a batch of agents, in one transaction. The cards of the assigned calls are asked
/// of intake as soon as the calls are chosen, so that intake reads them while the lease is
/// written and committed: if the transaction fails, intake has audited views of cards that
/// reached the dialer but no agent (decision 0014).
async fn lease_batch(
    pool: &PgPool,
    agents: &[String],
    lease: Duration,
    intake: &Intake,
    tasks: &TaskTracker,
) -> Result<(HashMap<String, Leased>, Cards), sqlx::Error> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    // Both statements are prepared: their plans follow the queue's size because the dialer
    // analyses its tables as they grow (`STATISTICS_OF`).
    let rows = sqlx::query(CANDIDATES)
        .bind(agents)
        .bind(now)
        .bind(CALLBACK_EXCLUSIVITY_MINUTES)
        .fetch_all(&mut *tx)
        .await?;
    let mut candidates = Candidates::default();
    for r in &rows {
        let agent: Option<String> = r.try_get("agent_id")?;
        let call = || -> Result<Call, sqlx::Error> {
            Ok(Call {
                call_id: r.try_get("call_id")?,
                contact_id: r.try_get("contact_id")?,
                campaign_id: r.try_get("campaign_id")?,
            })
        };
        match (r.try_get::<&str, _>("kind")?, agent) {
            ("agent", Some(a)) => {
                candidates.registered.insert(a);
            }
            ("held", Some(a)) => {
                candidates.held.insert(a, (call()?, r.try_get("lease_id")?));
            }
            ("own", Some(a)) => {
                candidates.own.insert(a, call()?);
            }
            ("may", Some(a)) => candidates
                .campaigns
                .entry(a)
                .or_default()
                .push(r.try_get("campaign_id")?),
            ("free", _) => candidates.free.push(Free {
                call: call()?,
                priority_key: r.try_get("priority_key")?,
                due_at: r.try_get("due_at")?,
            }),
            _ => {}
        }
    }
    let registered: Vec<String> = agents
        .iter()
        .filter(|a| candidates.registered.contains(*a))
        .cloned()
        .collect();
    let picks = assign(agents, candidates);
    let (mut pick_agents, mut calls, mut lease_ids, mut held) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wanted = Vec::with_capacity(picks.len());
    for (agent, pick) in picks {
        let lease_id = pick.held.unwrap_or_else(Uuid::new_v4);
        wanted.push(CardFor {
            lease_id,
            contact_id: pick.call.contact_id,
            campaign_id: pick.call.campaign_id,
            agent_id: agent.clone(),
        });
        pick_agents.push(agent);
        calls.push(pick.call.call_id);
        lease_ids.push(lease_id);
        held.push(pick.held.is_some());
    }
    let cards = ask_cards(intake, tasks, wanted);
    let mut leased: HashMap<String, Leased> = registered
        .iter()
        .map(|a| (a.clone(), Leased::NothingDue))
        .collect();
    if !registered.is_empty() {
        let rows = sqlx::query(&LEASE)
            .bind(&pick_agents)
            .bind(&calls)
            .bind(&lease_ids)
            .bind(&held)
            .bind(now)
            .bind(lease.as_secs_f64())
            .bind(&registered)
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let agent: String = r.try_get("agent_id")?;
            let call = Leased::Call {
                lease_id: r.try_get("lease_id")?,
                facts: Box::new(LeaseFacts::from_row(&agent, r)?),
                presented_number: r.try_get("presented_number")?,
                card: None,
            };
            leased.insert(agent, call);
        }
    }
    tx.commit().await?;
    Ok((leased, cards))
}

/// A call a batch may give out, with what intake needs to find its card.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    call_id: String,
    contact_id: Uuid,
    campaign_id: Uuid,
}

/// A free call locked for the batch.
#[derive(Debug, Clone)]
struct Free {
    call: Call,
    priority_key: i64,
    due_at: DateTime<Utc>,
}

/// What the batch's first statement found, by agent.
#[derive(Debug, Default)]
struct Candidates {
    registered: HashSet<String>,
    /// The call each agent holds, with its lease.
    held: HashMap<String, (Call, Uuid)>,
    own: HashMap<String, Call>,
    campaigns: HashMap<String, Vec<Uuid>>,
    free: Vec<Free>,
}

#[derive(Debug, PartialEq)]
struct Pick {
    call: Call,
    /// The lease of a call the agent already holds.
    held: Option<Uuid>,
}

/// Gives each agent, in arrival order, the call it holds, else its own callback, else the best
/// free call (lowest priority key, then earliest due) of its campaigns that no agent before it
/// took. A late callback can be both an agent's own and a free call: it goes once.
fn assign(agents: &[String], mut c: Candidates) -> Vec<(String, Pick)> {
    c.free.sort_by_key(|f| (f.priority_key, f.due_at));
    let mut taken: HashSet<String> = HashSet::new();
    let mut picks = Vec::new();
    for agent in agents {
        if !c.registered.contains(agent) {
            continue;
        }
        if let Some((call, lease_id)) = c.held.get(agent) {
            picks.push((
                agent.clone(),
                Pick {
                    call: call.clone(),
                    held: Some(*lease_id),
                },
            ));
            continue;
        }
        let own = c
            .own
            .get(agent)
            .filter(|call| !taken.contains(&call.call_id));
        let campaigns = c
            .campaigns
            .get(agent)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let best = || {
            c.free
                .iter()
                .find(|f| {
                    campaigns.contains(&f.call.campaign_id) && !taken.contains(&f.call.call_id)
                })
                .map(|f| &f.call)
        };
        if let Some(call) = own.or_else(best).cloned() {
            taken.insert(call.call_id.clone());
            picks.push((agent.clone(), Pick { call, held: None }));
        }
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn campaign(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn call(call_id: &str, campaign_n: u128) -> Call {
        Call {
            call_id: call_id.into(),
            contact_id: Uuid::new_v4(),
            campaign_id: campaign(campaign_n),
        }
    }

    fn free(call_id: &str, campaign_n: u128, priority_key: i64) -> Free {
        Free {
            call: call(call_id, campaign_n),
            priority_key,
            due_at: DateTime::UNIX_EPOCH,
        }
    }

    fn candidates(registered: &[&str]) -> Candidates {
        Candidates {
            registered: registered.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn calls(picks: &[(String, Pick)]) -> Vec<(&str, &str, bool)> {
        picks
            .iter()
            .map(|(a, p)| (a.as_str(), p.call.call_id.as_str(), p.held.is_some()))
            .collect()
    }

    #[test]
    fn agents_get_distinct_calls_best_first_in_arrival_order() {
        let mut c = candidates(&["a", "b", "c"]);
        for a in ["a", "b", "c"] {
            c.campaigns.insert(a.into(), vec![campaign(1)]);
        }
        c.free = vec![free("low", 1, 9), free("top", 1, 1), free("mid", 1, 5)];
        let picks = assign(&agents(&["b", "a", "c"]), c);
        assert_eq!(
            calls(&picks),
            [
                ("b", "top", false),
                ("a", "mid", false),
                ("c", "low", false)
            ]
        );
    }

    #[test]
    fn equal_priorities_go_to_the_earliest_due_call() {
        let mut c = candidates(&["a"]);
        c.campaigns.insert("a".into(), vec![campaign(1)]);
        let mut late = free("late", 1, 1);
        late.due_at = DateTime::UNIX_EPOCH + chrono::Duration::seconds(60);
        c.free = vec![late, free("early", 1, 1)];
        assert_eq!(calls(&assign(&agents(&["a"]), c)), [("a", "early", false)]);
    }

    #[test]
    fn a_held_call_comes_first_then_an_own_callback_then_a_free_call() {
        let mut c = candidates(&["holder", "called_back", "other"]);
        for a in ["holder", "called_back", "other"] {
            c.campaigns.insert(a.into(), vec![campaign(1)]);
        }
        c.held
            .insert("holder".into(), (call("mine", 1), Uuid::from_u128(7)));
        c.own.insert("called_back".into(), call("callback", 1));
        c.free = vec![free("f1", 1, 1), free("f2", 1, 2)];
        let picks = assign(&agents(&["holder", "called_back", "other"]), c);
        assert_eq!(
            calls(&picks),
            [
                ("holder", "mine", true),
                ("called_back", "callback", false),
                ("other", "f1", false)
            ]
        );
        // A held call is given again under its own lease, which its card's audit names.
        assert_eq!(picks[0].1.held, Some(Uuid::from_u128(7)));
    }

    #[test]
    fn each_agent_only_gets_calls_of_its_own_campaigns() {
        let mut c = candidates(&["one", "two", "both"]);
        c.campaigns.insert("one".into(), vec![campaign(1)]);
        c.campaigns.insert("two".into(), vec![campaign(2)]);
        c.campaigns
            .insert("both".into(), vec![campaign(1), campaign(2)]);
        c.free = vec![free("c2-best", 2, 1), free("c1", 1, 5), free("c2", 2, 7)];
        let picks = assign(&agents(&["both", "one", "two"]), c);
        assert_eq!(
            calls(&picks),
            [
                ("both", "c2-best", false),
                ("one", "c1", false),
                ("two", "c2", false)
            ]
        );
    }

    #[test]
    fn a_late_callback_taken_as_free_is_not_given_again_as_own() {
        let mut c = candidates(&["first", "owner"]);
        for a in ["first", "owner"] {
            c.campaigns.insert(a.into(), vec![campaign(1)]);
        }
        let late = free("late-callback", 1, 1);
        c.own.insert("owner".into(), late.call.clone());
        c.free = vec![late, free("next", 1, 2)];
        let picks = assign(&agents(&["first", "owner"]), c);
        assert_eq!(
            calls(&picks),
            [("first", "late-callback", false), ("owner", "next", false)]
        );
    }

    #[test]
    fn agents_beyond_the_calls_and_unregistered_agents_get_nothing() {
        let mut c = candidates(&["a", "b"]);
        for a in ["a", "b"] {
            c.campaigns.insert(a.into(), vec![campaign(1)]);
        }
        c.free = vec![free("only", 1, 1)];
        let picks = assign(&agents(&["stranger", "a", "b"]), c);
        assert_eq!(calls(&picks), [("a", "only", false)]);
    }
}
