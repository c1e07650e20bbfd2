//! What can happen on a call, and how a contact ends.

use serde::{Deserialize, Serialize};

/// The disposition of one attempt, as an agent records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    NoAnswer,
    Busy,
    Voicemail,
    WrongNumber,
    NotInService,
    /// The person answered but declined the interview (this is not refusing the offer).
    RefusedInterview,
    /// The interview took place; its content is an [`OfferDecision`] and requests.
    InterviewHeld,
    /// The person asked to be called back at a given time.
    CallbackRequested,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 8] = [
        AttemptOutcome::NoAnswer,
        AttemptOutcome::Busy,
        AttemptOutcome::Voicemail,
        AttemptOutcome::WrongNumber,
        AttemptOutcome::NotInService,
        AttemptOutcome::RefusedInterview,
        AttemptOutcome::InterviewHeld,
        AttemptOutcome::CallbackRequested,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AttemptOutcome::NoAnswer => "no_answer",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::Voicemail => "voicemail",
            AttemptOutcome::WrongNumber => "wrong_number",
            AttemptOutcome::NotInService => "not_in_service",
            AttemptOutcome::RefusedInterview => "refused_interview",
            AttemptOutcome::InterviewHeld => "interview_held",
            AttemptOutcome::CallbackRequested => "callback_requested",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// Whether the person was reached (someone spoke with the agent).
    pub fn is_reached(self) -> bool {
        matches!(
            self,
            AttemptOutcome::RefusedInterview
                | AttemptOutcome::InterviewHeld
                | AttemptOutcome::CallbackRequested
        )
    }
}

/// The person's answer to the offer, when the interview was held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferDecision {
    Accepted,
    Refused,
    ToThinkAbout,
}

/// How a contact ends; every contact gets exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    InterviewHeld,
    InterviewRefused,
    NotReached,
    WrongNumber,
    SuppressedByConsent,
    RejectedAtIntake,
    CampaignEnded,
    CampaignCancelled,
}

impl FinalStatus {
    pub fn code(self) -> &'static str {
        match self {
            FinalStatus::InterviewHeld => "interview_held",
            FinalStatus::InterviewRefused => "interview_refused",
            FinalStatus::NotReached => "not_reached",
            FinalStatus::WrongNumber => "wrong_number",
            FinalStatus::SuppressedByConsent => "suppressed_by_consent",
            FinalStatus::RejectedAtIntake => "rejected_at_intake",
            FinalStatus::CampaignEnded => "campaign_ended",
            FinalStatus::CampaignCancelled => "campaign_cancelled",
        }
    }
}

/// A channel through which the health insurance may contact a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Phone,
    Sms,
    Email,
    Post,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Phone, Channel::Sms, Channel::Email, Channel::Post];

    pub fn code(self) -> &'static str {
        match self {
            Channel::Phone => "phone",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Post => "post",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_codes_round_trip() {
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::from_code(o.code()), Some(o));
        }
        assert_eq!(AttemptOutcome::from_code("hung_up"), None);
    }

    #[test]
    fn only_conversations_count_as_reached() {
        let reached: Vec<_> = AttemptOutcome::ALL
            .into_iter()
            .filter(|o| o.is_reached())
            .collect();
        assert_eq!(
            reached,
            vec![
                AttemptOutcome::RefusedInterview,
                AttemptOutcome::InterviewHeld,
                AttemptOutcome::CallbackRequested
            ]
        );
    }
}
