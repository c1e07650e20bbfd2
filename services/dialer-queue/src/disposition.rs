//! Checks an agent's disposition and turns it into what is recorded and announced. Every
//! refusal names the field and the rule.

use chrono::{DateTime, Utc};
use cnmas_domain::calendar::{validate_callback, CallingPolicy, HolidayCalendar, Place};
use cnmas_domain::email::Email;
use cnmas_domain::geo::{Postcode, Territory};
use cnmas_domain::outcome::AttemptOutcome;
use cnmas_domain::phone::FrenchPhone;
use cnmas_proto::common::{
    contact_detail_change::Change, ConsentChange, ContactDetailChange, FollowUpKind,
    FollowUpRequest, OfferDecision,
};
use cnmas_proto::dialer::{disposition::Kind, Disposition};
use cnmas_proto::support::{channel_from_proto, from_timestamp, outcome_from_proto};

/// A disposition that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub outcome: AttemptOutcome,
    pub callback_at: Option<DateTime<Utc>>,
    pub callback_with_same_agent: bool,
    pub interview: Option<Interview>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Interview {
    pub offer_decision: OfferDecision,
    pub follow_ups: Vec<FollowUpRequest>,
    pub contact_detail_changes: Vec<ContactDetailChange>,
    pub consent_changes: Vec<ConsentChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub rule: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, rule: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        rule,
        message: message.into(),
    }
}

const MAX_NOTE: usize = 500;
const MAX_ITEMS: usize = 20;

/// Where and under which policy the callee may be called back.
pub struct CallbackRules<'a> {
    pub calendar: &'a HolidayCalendar,
    pub policy: &'a CallingPolicy,
    pub place: &'a Place,
    pub territory: Territory,
}

pub fn check(
    d: Option<&Disposition>,
    rules: &CallbackRules<'_>,
    now: DateTime<Utc>,
) -> Result<Checked, Invalid> {
    let kind = d.and_then(|d| d.kind.as_ref()).ok_or_else(|| {
        invalid(
            "disposition",
            "required",
            "choose what happened on the call",
        )
    })?;
    let simple = |outcome| Checked {
        outcome,
        callback_at: None,
        callback_with_same_agent: false,
        interview: None,
    };
    match kind {
        Kind::NotReached(n) => match outcome_from_proto(n.reason) {
            Some(
                o @ (AttemptOutcome::NoAnswer
                | AttemptOutcome::Busy
                | AttemptOutcome::Voicemail
                | AttemptOutcome::WrongNumber
                | AttemptOutcome::NotInService),
            ) => Ok(simple(o)),
            _ => Err(invalid(
                "disposition.not_reached.reason",
                "not_reached.reason",
                "no answer, busy, voicemail, wrong number or number not in service",
            )),
        },
        Kind::RefusedInterview(_) => Ok(simple(AttemptOutcome::RefusedInterview)),
        Kind::Callback(c) => {
            let at = c.at.as_ref().and_then(from_timestamp).ok_or_else(|| {
                invalid(
                    "disposition.callback.at",
                    "required",
                    "the time to call back",
                )
            })?;
            validate_callback(rules.calendar, rules.policy, rules.place, at, now).map_err(|e| {
                invalid(
                    "disposition.callback.at",
                    "callback.calendar",
                    e.to_string(),
                )
            })?;
            Ok(Checked {
                outcome: AttemptOutcome::CallbackRequested,
                callback_at: Some(at),
                callback_with_same_agent: c.with_same_agent,
                interview: None,
            })
        }
        Kind::Interview(i) => {
            let offer_decision = match OfferDecision::try_from(i.offer_decision) {
                Ok(OfferDecision::Unspecified) | Err(_) => {
                    return Err(invalid(
                        "disposition.interview.offer_decision",
                        "required",
                        "accepted, refused or to think about",
                    ))
                }
                Ok(d) => d,
            };
            if i.follow_ups.len() > MAX_ITEMS
                || i.contact_detail_changes.len() > MAX_ITEMS
                || i.consent_changes.len() > MAX_ITEMS
            {
                return Err(invalid(
                    "disposition.interview",
                    "too_many_items",
                    format!("at most {MAX_ITEMS} of each kind"),
                ));
            }
            let mut follow_ups = Vec::new();
            for f in &i.follow_ups {
                if matches!(
                    FollowUpKind::try_from(f.kind),
                    Ok(FollowUpKind::Unspecified) | Err(_)
                ) {
                    return Err(invalid(
                        "disposition.interview.follow_ups.kind",
                        "required",
                        "the kind of request",
                    ));
                }
                let note = f.note.trim();
                if note.chars().count() > MAX_NOTE || note.chars().any(char::is_control) {
                    return Err(invalid(
                        "disposition.interview.follow_ups.note",
                        "note.format",
                        format!("at most {MAX_NOTE} characters, no control characters"),
                    ));
                }
                follow_ups.push(FollowUpRequest {
                    kind: f.kind,
                    note: note.to_string(),
                });
            }
            let mut contact_detail_changes = Vec::new();
            for c in &i.contact_detail_changes {
                let change = match &c.change {
                    Some(Change::Phone(p)) => {
                        let phone = FrenchPhone::parse(p, Some(rules.territory)).map_err(|e| {
                            invalid(
                                "disposition.interview.contact_detail_changes.phone",
                                e.code(),
                                e.to_string(),
                            )
                        })?;
                        Change::Phone(phone.e164().to_string())
                    }
                    Some(Change::Email(e)) => {
                        let email = Email::parse(e).map_err(|err| {
                            invalid(
                                "disposition.interview.contact_detail_changes.email",
                                err.code(),
                                err.to_string(),
                            )
                        })?;
                        Change::Email(email.as_str().to_string())
                    }
                    Some(Change::PostalAddress(a)) => {
                        let postcode = Postcode::parse(&a.postcode).map_err(|e| {
                            invalid(
                                "disposition.interview.contact_detail_changes.postal_address.postcode",
                                e.code(),
                                e.to_string(),
                            )
                        })?;
                        if a.lines.is_empty()
                            || a.lines.len() > 6
                            || a.lines.iter().any(|l| l.chars().count() > 300)
                        {
                            return Err(invalid(
                                "disposition.interview.contact_detail_changes.postal_address.lines",
                                "address.lines",
                                "1 to 6 lines of at most 300 characters",
                            ));
                        }
                        let mut a = a.clone();
                        a.postcode = postcode.as_str().to_string();
                        Change::PostalAddress(a)
                    }
                    None => {
                        return Err(invalid(
                            "disposition.interview.contact_detail_changes",
                            "required",
                            "a phone, an e-mail or a postal address",
                        ))
                    }
                };
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(change),
                });
            }
            for c in &i.consent_changes {
                if channel_from_proto(c.channel).is_none() {
                    return Err(invalid(
                        "disposition.interview.consent_changes.channel",
                        "required",
                        "phone, SMS, e-mail or post",
                    ));
                }
            }
            Ok(Checked {
                outcome: AttemptOutcome::InterviewHeld,
                callback_at: None,
                callback_with_same_agent: false,
                interview: Some(Interview {
                    offer_decision,
                    follow_ups,
                    contact_detail_changes,
                    consent_changes: i.consent_changes.clone(),
                }),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cnmas_domain::geo::Department;
    use cnmas_proto::common::{AttemptOutcome as PbOutcome, Channel};
    use cnmas_proto::dialer::{self as pb};
    use cnmas_proto::support::timestamp;

    fn with_rules<T>(f: impl FnOnce(&CallbackRules<'_>) -> T) -> T {
        let place = Place::Department(Department::parse("75").unwrap());
        let policy = CallingPolicy::legal_default();
        f(&CallbackRules {
            calendar: HolidayCalendar::built_in(),
            policy: &policy,
            place: &place,
            territory: Territory::FR,
        })
    }

    fn now() -> DateTime<Utc> {
        // Monday 30 November 2026, 11:00 in Paris.
        Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap()
    }

    fn disp(kind: Kind) -> Disposition {
        Disposition { kind: Some(kind) }
    }

    #[test]
    fn not_reached_reasons() {
        with_rules(|r| {
            let ok = check(
                Some(&disp(Kind::NotReached(pb::NotReached {
                    reason: PbOutcome::Busy as i32,
                }))),
                r,
                now(),
            )
            .unwrap();
            assert_eq!(ok.outcome, AttemptOutcome::Busy);
            let bad = check(
                Some(&disp(Kind::NotReached(pb::NotReached {
                    reason: PbOutcome::InterviewHeld as i32,
                }))),
                r,
                now(),
            )
            .unwrap_err();
            assert_eq!(bad.field, "disposition.not_reached.reason");
            assert_eq!(check(None, r, now()).unwrap_err().field, "disposition");
        });
    }

    #[test]
    fn callbacks_must_fall_in_calling_hours() {
        with_rules(|r| {
            let at = |h| {
                disp(Kind::Callback(pb::Callback {
                    at: Some(timestamp(
                        Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap(),
                    )),
                    with_same_agent: true,
                }))
            };
            // 15:00 Paris on a Tuesday: fine; 21:00 Paris: refused.
            let ok = check(Some(&at(14)), r, now()).unwrap();
            assert_eq!(ok.outcome, AttemptOutcome::CallbackRequested);
            assert!(ok.callback_with_same_agent);
            let err = check(Some(&at(20)), r, now()).unwrap_err();
            assert_eq!(err.rule, "callback.calendar");
        });
    }

    #[test]
    fn interviews_normalise_changes_and_refuse_bad_ones() {
        with_rules(|r| {
            let interview = |changes: Vec<ContactDetailChange>| {
                disp(Kind::Interview(pb::Interview {
                    offer_decision: OfferDecision::Accepted as i32,
                    follow_ups: vec![FollowUpRequest {
                        kind: FollowUpKind::SendDocumentation as i32,
                        note: " brochure ".into(),
                    }],
                    contact_detail_changes: changes,
                    consent_changes: vec![ConsentChange {
                        channel: Channel::Sms as i32,
                        opted_out: true,
                        all_themes: true,
                    }],
                }))
            };
            let ok = check(
                Some(&interview(vec![ContactDetailChange {
                    change: Some(Change::Phone("06 12 34 56 78".into())),
                }])),
                r,
                now(),
            )
            .unwrap();
            let i = ok.interview.unwrap();
            assert_eq!(i.follow_ups[0].note, "brochure");
            assert_eq!(
                i.contact_detail_changes[0].change,
                Some(Change::Phone("+33612345678".into()))
            );
            let err = check(
                Some(&interview(vec![ContactDetailChange {
                    change: Some(Change::Email("not-an-email".into())),
                }])),
                r,
                now(),
            )
            .unwrap_err();
            assert_eq!(
                err.field,
                "disposition.interview.contact_detail_changes.email"
            );
        });
    }
}
