//! The call script of each theme, in French, kept as data next to the console
//! (`services/console/scripts/<theme>.txt`: paragraphs separated by blank lines).

use cnmas_domain::theme::Theme;

pub fn script(theme: Theme) -> Vec<&'static str> {
    let text = match theme {
        Theme::FluVaccination => include_str!("../scripts/flu_vaccination.txt"),
        Theme::ChildDentalExam => include_str!("../scripts/child_dental_exam.txt"),
        Theme::AmeliActivation => include_str!("../scripts/ameli_activation.txt"),
        Theme::TeleservicesProfessional => include_str!("../scripts/teleservices_professional.txt"),
        Theme::EmployerOffer => include_str!("../scripts/employer_offer.txt"),
    };
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_theme_has_a_script() {
        for t in Theme::ALL {
            assert!(script(t).len() >= 3, "{t:?}");
        }
    }
}
