//! Properties of the public parsers as intake uses them: whatever they accept, their normalised
//! form is a fixed point (parsing it again gives the same value), what people type around it
//! (spaces, dots, dashes, case) changes nothing, and no input makes them panic.

use cnmas_domain::company::{luhn_check_digit, Siren, Siret};
use cnmas_domain::email::Email;
use cnmas_domain::geo::{Postcode, Territory};
use cnmas_domain::nir::{nir_key, Nir};
use cnmas_domain::phone::FrenchPhone;
use cnmas_domain::professional::PsNumber;
use proptest::prelude::*;

fn separators(n: usize) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("."), Just("-")], n)
}

fn interleave(s: &str, seps: &[&str]) -> String {
    s.chars()
        .zip(seps.iter().chain(std::iter::repeat(&"")))
        .map(|(c, sep)| format!("{c}{sep}"))
        .collect()
}

proptest! {
    #[test]
    fn nir_normalised_form_is_a_fixed_point(s in "[0-9ABab ]{13,19}") {
        if let Ok(n) = Nir::parse(&s) {
            prop_assert_eq!(Nir::parse(n.as_str()), Ok(n.clone()));
            // 15 characters with the key, 13 when given without.
            prop_assert!(matches!(n.as_str().len(), 13 | 15));
            prop_assert!(n.as_str().starts_with(n.body()));
        }
    }

    #[test]
    fn a_nir_body_with_its_key_parses_to_the_same_person(sex in 1u8..3, yy in 0u8..100, mm in 1u8..13, dep in 1u8..96, commune in 1u16..990, order in 1u16..999, seps in separators(15)) {
        prop_assume!(dep != 20);
        let body = format!("{sex}{yy:02}{mm:02}{dep:02}{commune:03}{order:03}");
        let key = nir_key(&body).expect("13 digits");
        let full = format!("{body}{key:02}");
        let n = Nir::parse(&interleave(&full, &seps)).expect("a NIR with its key");
        prop_assert_eq!(n.body(), body.as_str());
        prop_assert_eq!(n.as_str(), full.as_str());
        prop_assert_eq!(Nir::parse(&body).map(|b| b.with_key()), Ok(full));
    }

    #[test]
    fn siret_normalised_form_is_a_fixed_point(head in "[0-9]{8}", nic in "[0-9]{4}", seps in separators(14)) {
        // The SIREN is Luhn-valid on its own, and so is the whole SIRET.
        let siren = format!("{head}{}", luhn_check_digit(&head).expect("digits"));
        prop_assume!(!siren.starts_with("356000000")); // La Poste: its own rule
        let payload = format!("{siren}{nic}");
        let siret = format!("{payload}{}", luhn_check_digit(&payload).expect("digits"));
        let parsed = Siret::parse(&interleave(&siret, &seps)).expect("a Luhn-valid SIRET");
        prop_assert_eq!(parsed.as_str(), siret.as_str());
        prop_assert_eq!(Siret::parse(parsed.as_str()).map(|s| s.as_str().to_string()), Ok(siret.clone()));
        let siren = parsed.siren();
        prop_assert_eq!(siren.as_str(), &siret[..9]);
        prop_assert!(Siren::parse(siren.as_str()).is_ok());
    }

    #[test]
    fn ps_numbers_ignore_what_people_type_around_them(digits in prop_oneof!["[0-9]{9}", "[0-9]{11}"], seps in separators(11)) {
        let plain = PsNumber::parse(&digits).map(|p| p.as_str().to_string());
        let noisy = PsNumber::parse(&interleave(&digits, &seps)).map(|p| p.as_str().to_string());
        prop_assert_eq!(&noisy, &plain);
        if let Ok(p) = plain {
            prop_assert_eq!(PsNumber::parse(&p).map(|x| x.as_str().to_string()), Ok(p));
        }
    }

    #[test]
    fn postcodes_keep_their_department(n in 1000u32..99000) {
        let code = format!("{n:05}");
        if let Ok(p) = Postcode::parse(&code) {
            let again = Postcode::parse(p.as_str()).expect("its own form parses");
            prop_assert_eq!(again.as_str(), p.as_str());
            prop_assert_eq!(again.department().map(|d| d.code().to_string()).ok(), p.department().map(|d| d.code().to_string()).ok());
        }
    }

    #[test]
    fn emails_normalise_once(local in "[a-zA-Z0-9._%+-]{1,20}", domain in "[a-zA-Z0-9-]{1,15}", tld in "[a-zA-Z]{2,6}") {
        let input = format!(" {local}@{domain}.{tld} ");
        if let Ok(e) = Email::parse(&input) {
            prop_assert_eq!(Email::parse(e.as_str()).map(|x| x.as_str().to_string()), Ok(e.as_str().to_string()));
            prop_assert!(!e.as_str().contains(' '));
        }
    }

    #[test]
    fn a_phone_national_form_reads_back_as_the_same_number(nsn in "[1-79][0-9]{8}", h in 0usize..8, seps in separators(10)) {
        let home = Some(Territory::ALL[h]);
        if let Ok(p) = FrenchPhone::parse(&interleave(&format!("0{nsn}"), &seps), home) {
            let national = FrenchPhone::parse(&p.national(), home).expect("its national form parses");
            prop_assert_eq!(national.e164(), p.e164());
            prop_assert_eq!(national.territory(), p.territory());
            let international = p.e164().replacen('+', "00", 1);
            prop_assert_eq!(FrenchPhone::parse(&international, home).map(|x| x.e164().to_string()), Ok(p.e164().to_string()));
        }
    }

    #[test]
    fn no_parser_panics(s in "\\PC{0,40}", h in 0usize..9) {
        let _ = Nir::parse(&s);
        let _ = Siret::parse(&s);
        let _ = Siren::parse(&s);
        let _ = PsNumber::parse(&s);
        let _ = Postcode::parse(&s).map(|p| p.department());
        let _ = Email::parse(&s);
        let _ = FrenchPhone::parse(&s, Territory::ALL.get(h).copied());
    }
}
