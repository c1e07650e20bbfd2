//! Small conversions every service needs between the wire types and the domain.

use crate::common::{self, EventEnvelope};
use chrono::{DateTime, TimeZone, Utc};
use cnmas_domain::{outcome, theme::Theme};

pub const SCHEMA_VERSION: u32 = 1;

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.seconds, t.nanos.max(0) as u32).single()
}

/// A stable event id derived from what caused the event, so re-applying the cause yields the
/// same id and JetStream and consumers drop the duplicate.
pub fn derived_id(parts: &[&str]) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, parts.join("\u{1f}").as_bytes()).to_string()
}

/// An envelope for a new event.
pub fn envelope(
    event_id: String,
    fund_code: &str,
    campaign_id: &str,
    correlation_id: &str,
    at: DateTime<Utc>,
) -> EventEnvelope {
    EventEnvelope {
        event_id,
        occurred_at: Some(timestamp(at)),
        fund_code: fund_code.to_string(),
        campaign_id: campaign_id.to_string(),
        correlation_id: correlation_id.to_string(),
        schema_version: SCHEMA_VERSION,
    }
}

pub fn theme_to_proto(t: Theme) -> common::Theme {
    match t {
        Theme::FluVaccination => common::Theme::FluVaccination,
        Theme::ChildDentalExam => common::Theme::ChildDentalExam,
        Theme::AmeliActivation => common::Theme::AmeliActivation,
        Theme::TeleservicesProfessional => common::Theme::TeleservicesProfessional,
        Theme::EmployerOffer => common::Theme::EmployerOffer,
    }
}

pub fn theme_from_proto(t: i32) -> Option<Theme> {
    match common::Theme::try_from(t).ok()? {
        common::Theme::Unspecified => None,
        common::Theme::FluVaccination => Some(Theme::FluVaccination),
        common::Theme::ChildDentalExam => Some(Theme::ChildDentalExam),
        common::Theme::AmeliActivation => Some(Theme::AmeliActivation),
        common::Theme::TeleservicesProfessional => Some(Theme::TeleservicesProfessional),
        common::Theme::EmployerOffer => Some(Theme::EmployerOffer),
    }
}

pub fn outcome_to_proto(o: outcome::AttemptOutcome) -> common::AttemptOutcome {
    use outcome::AttemptOutcome as O;
    match o {
        O::NoAnswer => common::AttemptOutcome::NoAnswer,
        O::Busy => common::AttemptOutcome::Busy,
        O::Voicemail => common::AttemptOutcome::Voicemail,
        O::WrongNumber => common::AttemptOutcome::WrongNumber,
        O::NotInService => common::AttemptOutcome::NotInService,
        O::RefusedInterview => common::AttemptOutcome::RefusedInterview,
        O::InterviewHeld => common::AttemptOutcome::InterviewHeld,
        O::CallbackRequested => common::AttemptOutcome::CallbackRequested,
    }
}

pub fn outcome_from_proto(o: i32) -> Option<outcome::AttemptOutcome> {
    use outcome::AttemptOutcome as O;
    Some(match common::AttemptOutcome::try_from(o).ok()? {
        common::AttemptOutcome::Unspecified => return None,
        common::AttemptOutcome::NoAnswer => O::NoAnswer,
        common::AttemptOutcome::Busy => O::Busy,
        common::AttemptOutcome::Voicemail => O::Voicemail,
        common::AttemptOutcome::WrongNumber => O::WrongNumber,
        common::AttemptOutcome::NotInService => O::NotInService,
        common::AttemptOutcome::RefusedInterview => O::RefusedInterview,
        common::AttemptOutcome::InterviewHeld => O::InterviewHeld,
        common::AttemptOutcome::CallbackRequested => O::CallbackRequested,
    })
}

pub fn final_status_to_proto(s: outcome::FinalStatus) -> common::FinalStatus {
    use outcome::FinalStatus as F;
    match s {
        F::InterviewHeld => common::FinalStatus::InterviewHeld,
        F::InterviewRefused => common::FinalStatus::InterviewRefused,
        F::NotReached => common::FinalStatus::NotReached,
        F::WrongNumber => common::FinalStatus::WrongNumber,
        F::SuppressedByConsent => common::FinalStatus::SuppressedByConsent,
        F::RejectedAtIntake => common::FinalStatus::RejectedAtIntake,
        F::CampaignEnded => common::FinalStatus::CampaignEnded,
        F::CampaignCancelled => common::FinalStatus::CampaignCancelled,
    }
}

pub fn channel_from_proto(c: i32) -> Option<outcome::Channel> {
    use outcome::Channel as C;
    Some(match common::Channel::try_from(c).ok()? {
        common::Channel::Unspecified => return None,
        common::Channel::Phone => C::Phone,
        common::Channel::Sms => C::Sms,
        common::Channel::Email => C::Email,
        common::Channel::Post => C::Post,
    })
}

pub fn channel_to_proto(c: outcome::Channel) -> common::Channel {
    use outcome::Channel as C;
    match c {
        C::Phone => common::Channel::Phone,
        C::Sms => common::Channel::Sms,
        C::Email => common::Channel::Email,
        C::Post => common::Channel::Post,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for t in Theme::ALL {
            assert_eq!(theme_from_proto(theme_to_proto(t) as i32), Some(t));
        }
        for o in outcome::AttemptOutcome::ALL {
            assert_eq!(outcome_from_proto(outcome_to_proto(o) as i32), Some(o));
        }
        for c in outcome::Channel::ALL {
            assert_eq!(channel_from_proto(channel_to_proto(c) as i32), Some(c));
        }
        assert_eq!(theme_from_proto(0), None);
        assert_eq!(theme_from_proto(99), None);
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id(&["a", "b"]), derived_id(&["a", "b"]));
        assert_ne!(derived_id(&["a", "b"]), derived_id(&["ab"]));
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Utc.with_ymd_and_hms(2027, 3, 28, 1, 2, 3).unwrap();
        assert_eq!(from_timestamp(&timestamp(t)), Some(t));
    }
}
