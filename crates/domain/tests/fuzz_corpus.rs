//! Replays the fuzz seed corpora of the domain parsers (fuzz/corpus/{nir,phone}) with the same
//! checks as the fuzz targets, so they run in the normal suite without nightly or libFuzzer.

use cnmas_domain::geo::Territory;
use cnmas_domain::nir::Nir;
use cnmas_domain::phone::FrenchPhone;
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("readable"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

#[test]
fn nir_corpus() {
    let mut accepted = 0;
    for data in corpus("nir") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        if let Ok(nir) = Nir::parse(text) {
            accepted += 1;
            assert_eq!(Nir::parse(nir.as_str()), Ok(nir));
        }
    }
    assert!(accepted > 0, "the seeds include valid NIRs");
}

#[test]
fn phone_corpus() {
    let mut accepted = 0;
    for data in corpus("phone") {
        let Some((&selector, rest)) = data.split_first() else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(rest) else {
            continue;
        };
        let home = Territory::ALL
            .get(selector as usize % (Territory::ALL.len() + 1))
            .copied();
        if let Ok(p) = FrenchPhone::parse(text, home) {
            accepted += 1;
            let again = FrenchPhone::parse(p.e164(), home).expect("its own E.164 parses");
            assert_eq!(again.e164(), p.e164());
        }
    }
    assert!(accepted > 0, "the seeds include valid numbers");
}
