//! The outcome form: what the agent ticked, turned into a structured disposition, and the
//! dialer's refusals ("field: rule: message") put back next to the right input, in French.

use chrono::{NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Paris;
use cnmas_proto::common::{
    contact_detail_change::Change, AttemptOutcome, Channel, ConsentChange, ContactDetailChange,
    FollowUpKind, FollowUpRequest, OfferDecision, PostalAddress,
};
use cnmas_proto::dialer::{self as dialer, disposition::Kind, Disposition};
use cnmas_proto::support::timestamp;
use std::collections::HashMap;

/// A refusal tied to one input of the form (its `name`), in French.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FormError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> FormError {
    FormError {
        field,
        message: message.into(),
    }
}

/// The follow-up rows of the form.
pub const FOLLOW_UP_ROWS: usize = 2;

pub const CHANNELS: [(&str, Channel); 4] = [
    ("phone", Channel::Phone),
    ("sms", Channel::Sms),
    ("email", Channel::Email),
    ("post", Channel::Post),
];

fn get<'a>(form: &'a HashMap<String, String>, key: &str) -> &'a str {
    form.get(key).map(|v| v.trim()).unwrap_or("")
}

/// Reads the outcome form. The dialer validates again (and decides): this only turns the
/// inputs into the API's shape and refuses what cannot be shaped.
pub fn form_to_disposition(form: &HashMap<String, String>) -> Result<Disposition, FormError> {
    let not_reached = |o: AttemptOutcome| Kind::NotReached(dialer::NotReached { reason: o as i32 });
    let kind = match get(form, "outcome") {
        "no_answer" => not_reached(AttemptOutcome::NoAnswer),
        "busy" => not_reached(AttemptOutcome::Busy),
        "voicemail" => not_reached(AttemptOutcome::Voicemail),
        "wrong_number" => not_reached(AttemptOutcome::WrongNumber),
        "not_in_service" => not_reached(AttemptOutcome::NotInService),
        "refused_interview" => Kind::RefusedInterview(dialer::RefusedInterview {}),
        "callback" => {
            let raw = get(form, "callback_at");
            if raw.is_empty() {
                return Err(err("callback_at", "Indiquez la date et l'heure du rappel."));
            }
            let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
                .map_err(|_| {
                    err(
                        "callback_at",
                        "Date et heure attendues au format JJ/MM/AAAA HH:MM.",
                    )
                })?;
            // The console shows and reads times in Paris time (stated next to the input).
            let at = Paris
                .from_local_datetime(&naive)
                .earliest()
                .ok_or_else(|| {
                    err(
                        "callback_at",
                        "Cette heure n'existe pas (changement d'heure) : choisissez-en une autre.",
                    )
                })?
                .with_timezone(&Utc);
            Kind::Callback(dialer::Callback {
                at: Some(timestamp(at)),
                with_same_agent: !get(form, "callback_same_agent").is_empty(),
            })
        }
        "interview" => {
            let offer_decision = match get(form, "offer") {
                "accepted" => OfferDecision::Accepted,
                "refused" => OfferDecision::Refused,
                "to_think_about" => OfferDecision::ToThinkAbout,
                _ => {
                    return Err(err(
                        "offer",
                        "Indiquez la réponse à l'offre : acceptée, refusée ou à réfléchir.",
                    ))
                }
            };
            let mut follow_ups = Vec::new();
            for i in 1..=FOLLOW_UP_ROWS {
                let kind = match get(form, &format!("follow_up_kind_{i}")) {
                    "" => continue,
                    "send_documentation" => FollowUpKind::SendDocumentation,
                    "appointment_request" => FollowUpKind::AppointmentRequest,
                    "entitlement_question" => FollowUpKind::EntitlementQuestion,
                    "complaint" => FollowUpKind::Complaint,
                    "other" => FollowUpKind::Other,
                    _ => return Err(err("follow_ups", "Type de demande inconnu.")),
                };
                follow_ups.push(FollowUpRequest {
                    kind: kind as i32,
                    note: get(form, &format!("follow_up_note_{i}")).to_string(),
                });
            }
            let mut contact_detail_changes = Vec::new();
            let phone = get(form, "new_phone");
            if !phone.is_empty() {
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(Change::Phone(phone.to_string())),
                });
            }
            let email = get(form, "new_email");
            if !email.is_empty() {
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(Change::Email(email.to_string())),
                });
            }
            let lines: Vec<String> = get(form, "new_address")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            let postcode = get(form, "new_postcode");
            if !lines.is_empty() || !postcode.is_empty() {
                contact_detail_changes.push(ContactDetailChange {
                    change: Some(Change::PostalAddress(PostalAddress {
                        lines,
                        postcode: postcode.to_string(),
                        city: get(form, "new_city").to_string(),
                    })),
                });
            }
            let all_themes = get(form, "consent_scope") != "theme";
            let mut consent_changes = Vec::new();
            for (code, channel) in CHANNELS {
                let opted_out = match get(form, &format!("consent_{code}")) {
                    "" => continue,
                    "opt_out" => true,
                    "opt_in" => false,
                    _ => return Err(err("consent", "Choix de consentement inconnu.")),
                };
                consent_changes.push(ConsentChange {
                    channel: channel as i32,
                    opted_out,
                    all_themes,
                });
            }
            Kind::Interview(dialer::Interview {
                offer_decision: offer_decision as i32,
                follow_ups,
                contact_detail_changes,
                consent_changes,
            })
        }
        _ => {
            return Err(err(
                "outcome",
                "Choisissez l'issue de l'appel avant d'enregistrer.",
            ))
        }
    };
    Ok(Disposition { kind: Some(kind) })
}

/// Places a refusal of RecordOutcome ("field: rule: message") next to its input, in French.
pub fn from_dialer(message: &str) -> FormError {
    let mut parts = message.splitn(3, ": ");
    let field = parts.next().unwrap_or("");
    let rule = parts.next().unwrap_or("");
    let detail = parts.next().unwrap_or(message);
    let input = match field {
        "disposition.callback.at" => "callback_at",
        "disposition.interview.offer_decision" => "offer",
        f if f.starts_with("disposition.interview.follow_ups") => "follow_ups",
        "disposition.interview.contact_detail_changes.phone" => "new_phone",
        "disposition.interview.contact_detail_changes.email" => "new_email",
        "disposition.interview.contact_detail_changes.postal_address.postcode" => "new_postcode",
        "disposition.interview.contact_detail_changes.postal_address.lines" => "new_address",
        f if f.starts_with("disposition.interview.consent_changes") => "consent",
        _ => "outcome",
    };
    let text = match rule {
        "callback.calendar" => format!(
            "Ce créneau est hors des heures d'appel autorisées pour cette personne ({detail})."
        ),
        "required" => "Ce champ est obligatoire.".to_string(),
        "note.format" => "500 caractères au plus, sans caractère de contrôle.".to_string(),
        "address.lines" => "L'adresse compte 1 à 6 lignes de 300 caractères au plus.".to_string(),
        "too_many_items" => "20 éléments au plus de chaque sorte.".to_string(),
        r if r.starts_with("phone.") => {
            format!(
                "Numéro de téléphone refusé ({r}) : un numéro français ou d'outre-mer est attendu."
            )
        }
        r if r.starts_with("email.") => format!("Adresse électronique refusée ({r})."),
        r if r.starts_with("postcode.") => format!("Code postal refusé ({r})."),
        r => format!("Valeur refusée ({r}) : {detail}"),
    };
    err(input, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn not_reached_and_missing_choice() {
        let d = form_to_disposition(&form(&[("outcome", "busy")])).unwrap();
        assert_eq!(
            d.kind,
            Some(Kind::NotReached(dialer::NotReached {
                reason: AttemptOutcome::Busy as i32
            }))
        );
        assert_eq!(
            form_to_disposition(&form(&[])).unwrap_err().field,
            "outcome"
        );
    }

    #[test]
    fn interview_with_requests_changes_and_consents() {
        let d = form_to_disposition(&form(&[
            ("outcome", "interview"),
            ("offer", "accepted"),
            ("follow_up_kind_1", "send_documentation"),
            ("follow_up_note_1", " brochure "),
            ("follow_up_kind_2", ""),
            ("new_email", "jeanne@example.fr"),
            ("new_address", "3 rue de la Paix\n\nBâtiment B"),
            ("new_postcode", "75002"),
            ("consent_sms", "opt_out"),
            ("consent_phone", ""),
            ("consent_scope", "theme"),
        ]))
        .unwrap();
        let Some(Kind::Interview(i)) = d.kind else {
            panic!("an interview")
        };
        assert_eq!(i.offer_decision, OfferDecision::Accepted as i32);
        assert_eq!(i.follow_ups.len(), 1);
        assert_eq!(i.follow_ups[0].note, "brochure");
        assert_eq!(i.contact_detail_changes.len(), 2);
        assert_eq!(
            i.consent_changes,
            vec![ConsentChange {
                channel: Channel::Sms as i32,
                opted_out: true,
                all_themes: false
            }]
        );
        let no_offer = form_to_disposition(&form(&[("outcome", "interview")])).unwrap_err();
        assert_eq!(no_offer.field, "offer");
    }

    #[test]
    fn callbacks_read_paris_time() {
        let d = form_to_disposition(&form(&[
            ("outcome", "callback"),
            ("callback_at", "2026-12-01T15:30"),
            ("callback_same_agent", "on"),
        ]))
        .unwrap();
        let Some(Kind::Callback(c)) = d.kind else {
            panic!("a callback")
        };
        assert!(c.with_same_agent);
        assert_eq!(
            c.at,
            Some(timestamp(
                Utc.with_ymd_and_hms(2026, 12, 1, 14, 30, 0).unwrap()
            ))
        );
        let bad = form_to_disposition(&form(&[("outcome", "callback"), ("callback_at", "demain")]))
            .unwrap_err();
        assert_eq!(bad.field, "callback_at");
    }

    #[test]
    fn dialer_refusals_go_next_to_their_input() {
        let e = from_dialer(
            "disposition.interview.contact_detail_changes.phone: phone.bad_length: too short",
        );
        assert_eq!(e.field, "new_phone");
        assert!(e.message.contains("phone.bad_length"));
        let c = from_dialer("disposition.callback.at: callback.calendar: outside calling hours");
        assert_eq!(c.field, "callback_at");
        assert_eq!(from_dialer("garbage").field, "outcome");
    }
}
