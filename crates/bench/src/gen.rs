//! Contacts for the benchmark, generated on the fly (never a whole campaign in memory).
//!
//! `people::flu(i)` builds the NIR body `1 yy mm 75 ccc ooo` from `i % 40`, `i % 12`,
//! `(i / 1000) % 900` and `i % 1000`: it repeats with period 900,000 (900,000 is a multiple of
//! 40, 12 and 1,000), so `flu(i)` and `flu(i + 900_000)` are the same person and intake would
//! reject the second as a duplicate. Below 900,000 we use `flu(i)` as is; from 900,000 on we
//! change the sex digit (1 → 2, then 7/8 are temporary numbers and are avoided), which gives
//! unique, valid NIRs for i < 1,800,000.

use cnmas_proto::intake::contact_submission::Person;
use cnmas_proto::intake::ContactSubmission;
use cnmas_system_tests::people;

pub const PERIOD: usize = 900_000;
pub const MAX_CONTACTS: usize = 2 * PERIOD;

pub fn contact(i: usize) -> ContactSubmission {
    let mut c = people::flu(i % PERIOD);
    c.submission_ref = format!("ref-{i}");
    if i >= PERIOD {
        if let Some(Person::Insured(p)) = c.person.as_mut() {
            let body = format!("{}{}", 1 + i / PERIOD, &p.nir[1..13]);
            p.nir = people::nir_with_key(&body);
            p.last_name = format!("Nom{i}");
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn nir(i: usize) -> String {
        match contact(i).person {
            Some(Person::Insured(p)) => p.nir,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flu_repeats_with_period_900000_and_ours_does_not() {
        let a = match people::flu(5).person {
            Some(Person::Insured(p)) => p.nir,
            _ => unreachable!(),
        };
        let b = match people::flu(5 + PERIOD).person {
            Some(Person::Insured(p)) => p.nir,
            _ => unreachable!(),
        };
        assert_eq!(a, b);
        assert_ne!(nir(5), nir(5 + PERIOD));
    }

    #[test]
    fn unique_and_valid_for_the_whole_range() {
        let mut seen = HashSet::with_capacity(MAX_CONTACTS);
        for i in 0..MAX_CONTACTS {
            let n = nir(i);
            assert!(
                seen.insert(n[..13].to_string()),
                "duplicate NIR body at {i}"
            );
            let body: u64 = n[..13].parse().unwrap();
            let key: u64 = n[13..].parse().unwrap();
            assert_eq!(key, 97 - body % 97);
        }
    }
}
