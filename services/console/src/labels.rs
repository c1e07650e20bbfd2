//! French words for the services' codes.

use cnmas_proto::common::{AttemptOutcome, FinalStatus, OfferDecision, Theme};
use cnmas_proto::dialer::AgentState;
use cnmas_proto::scheduler::CampaignState;

pub fn agent_state(s: AgentState) -> &'static str {
    match s {
        AgentState::Unspecified | AgentState::SignedOut => "Déconnecté",
        AgentState::Available => "Disponible",
        AgentState::OnCall => "En appel",
        AgentState::WrapUp => "Post-appel",
        AgentState::Paused => "En pause",
    }
}

pub fn outcome(o: AttemptOutcome) -> &'static str {
    match o {
        AttemptOutcome::Unspecified => "Inconnu",
        AttemptOutcome::NoAnswer => "Pas de réponse",
        AttemptOutcome::Busy => "Occupé",
        AttemptOutcome::Voicemail => "Messagerie",
        AttemptOutcome::WrongNumber => "Faux numéro",
        AttemptOutcome::NotInService => "Numéro non attribué",
        AttemptOutcome::RefusedInterview => "Refus d'entretien",
        AttemptOutcome::InterviewHeld => "Entretien réalisé",
        AttemptOutcome::CallbackRequested => "Rappel demandé",
    }
}

pub fn final_status(s: FinalStatus) -> &'static str {
    match s {
        FinalStatus::Unspecified => "Inconnu",
        FinalStatus::InterviewHeld => "Entretien réalisé",
        FinalStatus::InterviewRefused => "Entretien refusé",
        FinalStatus::NotReached => "Non joint",
        FinalStatus::WrongNumber => "Faux numéro",
        FinalStatus::SuppressedByConsent => "Opposition",
        FinalStatus::RejectedAtIntake => "Rejeté à la réception",
        FinalStatus::CampaignEnded => "Campagne terminée",
        FinalStatus::CampaignCancelled => "Campagne annulée",
    }
}

pub fn offer_decision(d: OfferDecision) -> &'static str {
    match d {
        OfferDecision::Unspecified => "Sans décision",
        OfferDecision::Accepted => "Offre acceptée",
        OfferDecision::Refused => "Offre refusée",
        OfferDecision::ToThinkAbout => "À réfléchir",
    }
}

pub fn campaign_state(s: CampaignState) -> &'static str {
    match s {
        CampaignState::Unspecified => "Inconnue",
        CampaignState::Draft => "Brouillon",
        CampaignState::Active => "Active",
        CampaignState::Paused => "En pause",
        CampaignState::Completed => "Terminée",
        CampaignState::Cancelled => "Annulée",
    }
}

pub fn theme(t: Theme) -> &'static str {
    match t {
        Theme::Unspecified => "Thème inconnu",
        Theme::FluVaccination => "Vaccination antigrippale",
        Theme::ChildDentalExam => "Examen bucco-dentaire de l'enfant (M'T dents)",
        Theme::AmeliActivation => "Activation du compte ameli",
        Theme::TeleservicesProfessional => "Téléservices des professionnels de santé",
        Theme::EmployerOffer => "Offre aux employeurs",
    }
}

/// Whole percentages, French style ("42 %").
pub fn percent(rate: f64) -> String {
    format!("{} %", (rate * 100.0).round() as i64)
}
