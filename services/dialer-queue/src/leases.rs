//! The facts of each call this replica leased, kept from `NextCall` so that `RecordOutcome`
//! does not read the call again (one round trip fewer per call). A miss (another replica
//! leased it, a restart, an expired entry) only costs that read.
//!
//! The facts cannot go stale while the lease lasts: a replan (a rectified person key or
//! place) only touches calls that are not leased, and a campaign's calling policy is fixed at
//! its creation. Whoever makes either change during a lease must re-check the facts in the
//! outcome's write.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// The columns [`LeaseFacts::from_row`] reads, from `queue q JOIN campaigns c`.
pub const COLUMNS: &str = "q.call_id, q.contact_id, q.campaign_id, q.attempt_number, q.lease_id, \
     q.lease_expires_at, q.leased_at, q.fund_code, q.person_key, q.territory, q.department, \
     c.presented_number, c.theme, c.calling_policy";

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseFacts {
    pub agent_id: String,
    pub expires_at: DateTime<Utc>,
    pub call_id: String,
    pub contact_id: Uuid,
    pub campaign_id: Uuid,
    pub attempt_number: i32,
    pub leased_at: DateTime<Utc>,
    pub fund: String,
    pub person_key: String,
    pub territory: String,
    pub department: String,
    pub theme: String,
    pub calling_policy: String,
}

impl LeaseFacts {
    /// Reads a row selected with [`COLUMNS`].
    pub fn from_row(agent_id: &str, row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(LeaseFacts {
            agent_id: agent_id.to_string(),
            expires_at: row.try_get("lease_expires_at")?,
            call_id: row.try_get("call_id")?,
            contact_id: row.try_get("contact_id")?,
            campaign_id: row.try_get("campaign_id")?,
            attempt_number: row.try_get("attempt_number")?,
            leased_at: row.try_get("leased_at")?,
            fund: row.try_get("fund_code")?,
            person_key: row.try_get("person_key")?,
            territory: row.try_get("territory")?,
            department: row.try_get("department")?,
            theme: row.try_get("theme")?,
            calling_policy: row.try_get("calling_policy")?,
        })
    }
}

/// Live leases of this replica by lease id. An entry is kept once the card has reached the
/// agent and leaves when the outcome is recorded, or at the first sweep after its lease
/// expired: the map holds about one entry per agent on a call.
#[derive(Default)]
pub struct Leases {
    live: Mutex<HashMap<Uuid, LeaseFacts>>,
}

impl Leases {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, LeaseFacts>> {
        // A panic while holding the lock cannot leave a half-written entry: use the map as is.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keep(&self, lease_id: Uuid, facts: LeaseFacts) {
        self.live().insert(lease_id, facts);
    }

    /// The facts of `lease_id` if `agent_id` holds it, removed from the map.
    pub fn take(&self, lease_id: Uuid, agent_id: &str) -> Option<LeaseFacts> {
        let mut live = self.live();
        match live.get(&lease_id) {
            Some(f) if f.agent_id == agent_id => live.remove(&lease_id),
            _ => None,
        }
    }

    pub fn renewed(&self, lease_id: Uuid, expires_at: DateTime<Utc>) {
        if let Some(f) = self.live().get_mut(&lease_id) {
            f.expires_at = expires_at;
        }
    }

    /// Drops the entries of leases expired at `now` (their calls went back to the queue).
    pub fn forget_expired(&self, now: DateTime<Utc>) {
        self.live().retain(|_, f| f.expires_at > now);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(agent: &str, expires_at: DateTime<Utc>) -> LeaseFacts {
        LeaseFacts {
            agent_id: agent.into(),
            expires_at,
            call_id: "c-1".into(),
            contact_id: Uuid::nil(),
            campaign_id: Uuid::nil(),
            attempt_number: 1,
            leased_at: expires_at,
            fund: "751".into(),
            person_key: "k".into(),
            territory: "FR".into(),
            department: "75".into(),
            theme: "flu".into(),
            calling_policy: String::new(),
        }
    }

    #[test]
    fn only_the_agent_holding_a_lease_takes_its_facts_and_only_once() {
        let leases = Leases::default();
        let id = Uuid::new_v4();
        leases.keep(id, facts("a1", Utc::now()));
        assert_eq!(leases.take(id, "a2"), None);
        assert_eq!(leases.take(id, "a1").map(|f| f.agent_id), Some("a1".into()));
        assert_eq!(leases.take(id, "a1"), None);
    }

    #[test]
    fn expired_leases_are_forgotten_and_renewed_ones_kept() {
        let leases = Leases::default();
        let now = Utc::now();
        let (expired, renewed, live) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        leases.keep(expired, facts("a1", now - chrono::Duration::seconds(1)));
        leases.keep(renewed, facts("a2", now - chrono::Duration::seconds(1)));
        leases.keep(live, facts("a3", now + chrono::Duration::seconds(60)));
        leases.renewed(renewed, now + chrono::Duration::seconds(300));
        leases.forget_expired(now);
        assert_eq!(leases.len(), 2);
        assert!(leases.take(expired, "a1").is_none());
        assert!(leases.take(renewed, "a2").is_some());
        assert!(leases.take(live, "a3").is_some());
        assert_eq!(leases.len(), 0);
    }
}
