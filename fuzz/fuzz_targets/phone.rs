//! Phone parsing for every territory: never panics, and an accepted number's E.164 form parses
//! to the same number, line type and territory.
#![no_main]

use cnmas_domain::geo::Territory;
use cnmas_domain::phone::FrenchPhone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let home = Territory::ALL
        .get(selector as usize % (Territory::ALL.len() + 1))
        .copied();
    if let Ok(phone) = FrenchPhone::parse(text, home) {
        let again = FrenchPhone::parse(phone.e164(), home).expect("its own E.164 parses");
        assert_eq!(again.e164(), phone.e164());
        assert_eq!(again.line_type(), phone.line_type());
        assert!(phone.e164().starts_with('+'));
        assert!(phone.e164()[1..].bytes().all(|b| b.is_ascii_digit()));
    }
});
