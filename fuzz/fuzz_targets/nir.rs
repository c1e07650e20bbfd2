//! NIR/NIA parsing: never panics, and what it accepts is a fixed point (its normalised form
//! parses to itself, with or without the key).
#![no_main]

use cnmas_domain::nir::{nir_key, Nir};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = nir_key(text);
    if let Ok(nir) = Nir::parse(text) {
        let again = Nir::parse(nir.as_str()).expect("a normalised NIR parses");
        assert_eq!(again, nir);
        // The body alone (13 characters) is the same person; its form with the key parses too.
        let body = Nir::parse(nir.body()).expect("the body of a NIR parses");
        assert_eq!(body.body(), nir.body());
        assert_eq!(
            Nir::parse(&body.with_key()).map(|n| n.body().to_string()),
            Ok(nir.body().to_string())
        );
        assert!(matches!(nir.as_str().len(), 13 | 15));
    }
});
