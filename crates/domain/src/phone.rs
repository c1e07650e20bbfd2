//! French phone numbers (metropolitan France and the served overseas territories), normalised to
//! E.164, with line type and territory.
//!
//! # The shared national plan
//!
//! Metropolitan France (+33), Guadeloupe / Saint-Barthélemy / Saint-Martin (+590), Guyane (+594),
//! Martinique (+596) and La Réunion / Mayotte (+262) share one ten-digit national plan: `0690…`
//! dialled anywhere in France is a Guadeloupe mobile (+590 690…). libphonenumber splits that plan
//! per region, so the region to parse a national number with must be found, not assumed.
//!
//! # Resolution
//!
//! Validity and line type come from libphonenumber's metadata (the `phonenumber` crate's
//! database, read region by region), never from a hand-written table, except the documented
//! [`SUPPLEMENT`] described below.
//!
//! * **National form** (`0X XX XX XX XX`, or the 9 digits without the trunk `0`, as spreadsheets
//!   often store them): the number is checked against every French region (FR, GP, MQ, GF, RE,
//!   YT, BL, MF). When an overseas region knows it, the metropolitan match is dropped
//!   (libphonenumber's FR patterns are coarse and also cover overseas blocks such as `0263`,
//!   `0269` and parts of `09`). Among the remaining regions the person's own territory wins
//!   (e.g. a `0590 27…` line in Saint-Barthélemy vs Saint-Martin, a `0690…` mobile for a person
//!   of Saint-Martin), otherwise the first in the fixed order FR, GP, MQ, GF, RE, YT, BL, MF.
//! * **International form** (`+33…`, `0033…`, `+590…`, `+262…`, also `33…` with 11 digits): the
//!   country code decides; the region is the person's territory when it shares that code and
//!   knows the number, otherwise libphonenumber's first region for the code that knows it (GP for
//!   +590, RE for +262). A redundant trunk zero (`+33 (0)6…`) is tolerated.
//! * Any other country code (e.g. +269 Comoros, +508 Saint-Pierre-et-Miquelon, +377 Monaco,
//!   +44) is refused with `phone.not_french`.
//!
//! # Supplement to the metadata
//!
//! libphonenumber 9.0.33 lists only the blocks already assigned to operators, while the ARCEP
//! plan reserves whole blocks per territory (DOMAIN.md, "Phone numbers" table). Missing in the
//! metadata: `07090[5-9]` (GP), `07091[4-9]` (MQ), `07092[4-9]` (RE), parts of `0639` (YT), `0691`
//! (GP), `0693` (RE), `0694` (GF), `0263` (RE) and `0269` (YT), and most `0590`/`0594`/`0596`
//! sub-blocks. The [`SUPPLEMENT`] table applies the DOMAIN.md table for national numbers that no
//! overseas region of the metadata recognises (and overrides a metropolitan match for those
//! blocks, which the metadata wrongly leaves to FR). It is used only for the country code of
//! its territory, so `+33 690…` stays invalid.
//!
//! # Line types
//!
//! `mobile`, `fixed`, or `voip` as libphonenumber reports them (`09` numbers are VoIP / box lines
//! in its metadata and are reported `voip`). libphonenumber's FIXED_LINE_OR_MOBILE (not used by
//! the French regions today) is decided by the national prefix: `06`/`07` mobile, else fixed.
//! Toll-free, premium-rate, shared-cost, UAN, personal-number, pager and voicemail numbers — and
//! every `08` number, which is the special-services block in all French territories — are
//! refused with `phone.not_personal_line`: the centre calls people, not services.

use crate::geo::Territory;
use chrono_tz::Tz;
use phonenumber::metadata::DATABASE;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Mobile, fixed or VoIP line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineType {
    Mobile,
    Fixed,
    Voip,
}

impl LineType {
    pub fn as_str(self) -> &'static str {
        match self {
            LineType::Mobile => "mobile",
            LineType::Fixed => "fixed",
            LineType::Voip => "voip",
        }
    }
}

impl fmt::Display for LineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the classification came from libphonenumber's metadata or from [`SUPPLEMENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhoneSource {
    Metadata,
    Supplement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the phone number is empty")]
    Empty,
    #[error("the phone number contains characters other than digits, spaces, dots, dashes, parentheses or a leading +")]
    BadCharacter,
    #[error("the phone number has the wrong number of digits")]
    BadLength,
    #[error("the number is not a French metropolitan or served overseas number")]
    NotFrench,
    #[error(
        "the number is a service number (toll-free, shared-cost, premium, 08), not a personal line"
    )]
    NotPersonalLine,
    #[error("the number is not in an assigned French numbering range")]
    UnknownRange,
}

impl PhoneError {
    pub fn code(&self) -> &'static str {
        match self {
            PhoneError::Empty => "phone.empty",
            PhoneError::BadCharacter => "phone.bad_character",
            PhoneError::BadLength => "phone.bad_length",
            PhoneError::NotFrench => "phone.not_french",
            PhoneError::NotPersonalLine => "phone.not_personal_line",
            PhoneError::UnknownRange => "phone.unknown_range",
        }
    }
}

/// A callable French phone number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrenchPhone {
    e164: String,
    territory: Territory,
    line_type: LineType,
    source: PhoneSource,
}

/// One row of the supplement: national significant number prefix (without the trunk 0),
/// territory, line type. Source: DOMAIN.md "Phone numbers" table (ARCEP national plan).
pub const SUPPLEMENT: &[(&str, Territory, LineType)] = &[
    ("590", Territory::GP, LineType::Fixed),
    ("690", Territory::GP, LineType::Mobile),
    ("691", Territory::GP, LineType::Mobile),
    ("7090", Territory::GP, LineType::Mobile),
    ("596", Territory::MQ, LineType::Fixed),
    ("696", Territory::MQ, LineType::Mobile),
    ("697", Territory::MQ, LineType::Mobile),
    ("7091", Territory::MQ, LineType::Mobile),
    ("594", Territory::GF, LineType::Fixed),
    ("694", Territory::GF, LineType::Mobile),
    ("70930", Territory::GF, LineType::Mobile),
    ("70931", Territory::GF, LineType::Mobile),
    ("70932", Territory::GF, LineType::Mobile),
    ("70933", Territory::GF, LineType::Mobile),
    ("262", Territory::RE, LineType::Fixed),
    ("263", Territory::RE, LineType::Fixed),
    ("692", Territory::RE, LineType::Mobile),
    ("693", Territory::RE, LineType::Mobile),
    ("7092", Territory::RE, LineType::Mobile),
    ("269", Territory::YT, LineType::Fixed),
    ("639", Territory::YT, LineType::Mobile),
    ("70935", Territory::YT, LineType::Mobile),
    ("70936", Territory::YT, LineType::Mobile),
    ("70937", Territory::YT, LineType::Mobile),
];

/// E.164 country calling code of a territory.
pub fn country_code(t: Territory) -> u16 {
    match t {
        Territory::FR => 33,
        Territory::GP | Territory::BL | Territory::MF => 590,
        Territory::MQ => 596,
        Territory::GF => 594,
        Territory::RE | Territory::YT => 262,
    }
}

const FRENCH_CODES: [(&str, u16); 5] = [
    ("33", 33),
    ("262", 262),
    ("590", 590),
    ("594", 594),
    ("596", 596),
];

/// Result of classifying a national significant number in one region's metadata.
enum Class {
    Line(LineType),
    Service,
    Unknown,
}

/// One number range of a region's metadata, its regex compiled once. The crate's
/// `Descriptor::is_match` finds its regex in a cache shared behind a lock, hashing the pattern
/// at every call: with up to a dozen ranges tried in each of eight regions, that lookup was
/// most of the cost of a phone number in intake.
struct Range {
    lengths: Vec<u16>,
    pattern: regex::Regex,
}

impl Range {
    fn of(d: Option<&phonenumber::metadata::Descriptor>) -> Option<Range> {
        let d = d?;
        Some(Range {
            lengths: d.possible_length().to_vec(),
            // The metadata's patterns are laid out over several lines; the crate compiles
            // them ignoring whitespace.
            pattern: regex::RegexBuilder::new(d.national_number().as_str())
                .ignore_whitespace(true)
                .build()
                .ok()?,
        })
    }

    /// As `Descriptor::is_match`.
    fn is_match(&self, nsn: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(nsn.len() as u16)))
            && self.pattern.find(nsn).is_some_and(|m| m.start() == 0)
    }
}

/// The ranges of one region that decide whether a number is a line, and which.
struct Ranges {
    general: Range,
    services: Vec<Range>,
    voip: Option<Range>,
    other_services: Vec<Range>,
    fixed_line: Option<Range>,
    mobile: Option<Range>,
}

impl Ranges {
    fn of(region: Territory) -> Option<Ranges> {
        let d = DATABASE.by_id(region.code())?.descriptors();
        Some(Ranges {
            general: Range::of(Some(d.general()))?,
            services: [d.premium_rate(), d.toll_free(), d.shared_cost()]
                .into_iter()
                .filter_map(Range::of)
                .collect(),
            voip: Range::of(d.voip()),
            other_services: [d.personal_number(), d.pager(), d.uan(), d.voicemail()]
                .into_iter()
                .filter_map(Range::of)
                .collect(),
            fixed_line: Range::of(d.fixed_line()),
            mobile: Range::of(d.mobile()),
        })
    }
}

/// Each territory's ranges, compiled on first use.
static RANGES: std::sync::LazyLock<Vec<(Territory, Option<Ranges>)>> =
    std::sync::LazyLock::new(|| Territory::ALL.map(|t| (t, Ranges::of(t))).into());

fn classify(region: Territory, nsn: &str) -> Class {
    let Some(Some(r)) = RANGES.iter().find(|(t, _)| *t == region).map(|(_, r)| r) else {
        return Class::Unknown;
    };
    if !r.general.is_match(nsn) {
        return Class::Unknown;
    }
    let hit = |range: &Option<Range>| range.as_ref().is_some_and(|x| x.is_match(nsn));
    if r.services.iter().any(|x| x.is_match(nsn)) {
        return Class::Service;
    }
    if hit(&r.voip) {
        return Class::Line(LineType::Voip);
    }
    if r.other_services.iter().any(|x| x.is_match(nsn)) {
        return Class::Service;
    }
    let fixed = hit(&r.fixed_line);
    let mobile = hit(&r.mobile);
    match (fixed, mobile) {
        (true, false) => Class::Line(LineType::Fixed),
        (false, true) => Class::Line(LineType::Mobile),
        // FIXED_LINE_OR_MOBILE: decide by the national prefix (06/07 are mobile blocks).
        (true, true) if nsn.starts_with('6') || nsn.starts_with('7') => {
            Class::Line(LineType::Mobile)
        }
        (true, true) => Class::Line(LineType::Fixed),
        (false, false) => Class::Unknown,
    }
}

fn ordered(regions: &[Territory], home: Option<Territory>) -> Option<Territory> {
    if let Some(h) = home {
        if regions.contains(&h) {
            return Some(h);
        }
    }
    Territory::ALL.into_iter().find(|t| regions.contains(t))
}

/// Resolves a 9-digit national significant number. `code` is `None` for national-form input.
fn resolve(
    nsn: &str,
    code: Option<u16>,
    home: Option<Territory>,
) -> Result<FrenchPhone, PhoneError> {
    if nsn.len() != 9 || !nsn.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PhoneError::BadLength);
    }
    if nsn.starts_with('8') {
        return Err(PhoneError::NotPersonalLine);
    }
    let allowed: Vec<Territory> = Territory::ALL
        .into_iter()
        .filter(|t| code.is_none_or(|c| country_code(*t) == c))
        .collect();
    let mut candidates: Vec<(Territory, LineType)> = Vec::new();
    let mut service = false;
    for t in &allowed {
        match classify(*t, nsn) {
            Class::Line(l) => candidates.push((*t, l)),
            Class::Service => service = true,
            Class::Unknown => {}
        }
    }
    if code.is_none() && candidates.iter().any(|(t, _)| *t != Territory::FR) {
        candidates.retain(|(t, _)| *t != Territory::FR);
    }
    let overseas_found = candidates.iter().any(|(t, _)| *t != Territory::FR);
    if !overseas_found {
        let supplement = SUPPLEMENT
            .iter()
            .find(|(prefix, t, _)| nsn.starts_with(prefix) && allowed.contains(t));
        if let Some((_, t, line)) = supplement {
            // +590 is shared by GP, BL and MF: the person's territory decides.
            let t = match (t, home) {
                (Territory::GP, Some(h @ (Territory::BL | Territory::MF))) => h,
                _ => *t,
            };
            return Ok(FrenchPhone::new(t, nsn, *line, PhoneSource::Supplement));
        }
    }
    let regions: Vec<Territory> = candidates.iter().map(|(t, _)| *t).collect();
    match ordered(&regions, home) {
        Some(t) => {
            let line = candidates
                .iter()
                .find(|(c, _)| *c == t)
                .map(|(_, l)| *l)
                .unwrap_or(LineType::Fixed);
            Ok(FrenchPhone::new(t, nsn, line, PhoneSource::Metadata))
        }
        None if service => Err(PhoneError::NotPersonalLine),
        None => Err(PhoneError::UnknownRange),
    }
}

fn is_noise(c: char) -> bool {
    matches!(
        c,
        ' ' | '.' | '-' | '(' | ')' | '/' | '\t' | '\u{a0}' | '\u{202f}'
    )
}

impl FrenchPhone {
    fn new(territory: Territory, nsn: &str, line_type: LineType, source: PhoneSource) -> Self {
        FrenchPhone {
            e164: format!("+{}{}", country_code(territory), nsn),
            territory,
            line_type,
            source,
        }
    }

    /// Parses a phone number typed by a person or found in a file. `home` is the person's
    /// territory (from the postal code or the department), used where the plan is ambiguous.
    pub fn parse(input: &str, home: Option<Territory>) -> Result<FrenchPhone, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let (plus, rest) = match trimmed.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(rest.len());
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if !is_noise(c) {
                return Err(PhoneError::BadCharacter);
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::BadLength);
        }
        let international = if plus {
            Some(digits.as_str())
        } else {
            digits.strip_prefix("00")
        };
        match international {
            Some(intl) => Self::parse_international(intl, home),
            None => {
                if digits.len() == 10 && digits.starts_with('0') {
                    resolve(&digits[1..], None, home)
                } else if digits.len() == 9 && !digits.starts_with('0') {
                    resolve(&digits, None, home)
                } else if digits.len() > 10
                    && FRENCH_CODES.iter().any(|(p, _)| digits.starts_with(p))
                {
                    // country code without + or 00, e.g. 33612345678
                    Self::parse_international(&digits, home)
                } else {
                    Err(PhoneError::BadLength)
                }
            }
        }
    }

    fn parse_international(
        digits: &str,
        home: Option<Territory>,
    ) -> Result<FrenchPhone, PhoneError> {
        let Some((prefix, code)) = FRENCH_CODES.iter().find(|(p, _)| digits.starts_with(p)) else {
            return Err(PhoneError::NotFrench);
        };
        let rest = &digits[prefix.len()..];
        let nsn = if rest.len() == 10 && rest.starts_with('0') {
            &rest[1..]
        } else {
            rest
        };
        if nsn.len() != 9 {
            return Err(PhoneError::BadLength);
        }
        resolve(nsn, Some(*code), home)
    }

    /// E.164 form, e.g. `+590690123456`.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// National form with trunk prefix, e.g. `0690123456`.
    pub fn national(&self) -> String {
        let cc = country_code(self.territory).to_string();
        format!("0{}", &self.e164[1 + cc.len()..])
    }

    pub fn territory(&self) -> Territory {
        self.territory
    }

    pub fn line_type(&self) -> LineType {
        self.line_type
    }

    pub fn source(&self) -> PhoneSource {
        self.source
    }

    pub fn country_code(&self) -> u16 {
        country_code(self.territory)
    }

    /// The zone whose local time decides calling hours for this line's territory.
    pub fn time_zone(&self) -> Tz {
        self.territory.time_zone()
    }
}

impl fmt::Display for FrenchPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

/// Shortcut for [`FrenchPhone::parse`].
pub fn parse_phone(input: &str, home: Option<Territory>) -> Result<FrenchPhone, PhoneError> {
    FrenchPhone::parse(input, home)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Territory::*;

    fn p(
        input: &str,
        home: Option<Territory>,
    ) -> Result<(String, Territory, LineType), &'static str> {
        FrenchPhone::parse(input, home)
            .map(|x| (x.e164().to_string(), x.territory(), x.line_type()))
            .map_err(|e| e.code())
    }

    fn ok(
        e164: &str,
        t: Territory,
        l: LineType,
    ) -> Result<(String, Territory, LineType), &'static str> {
        Ok((e164.to_string(), t, l))
    }

    fn src(input: &str) -> Option<PhoneSource> {
        FrenchPhone::parse(input, None).ok().map(|x| x.source())
    }

    #[test]
    fn metropolitan() {
        assert_eq!(
            p("06 12 34 56 78", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        assert_eq!(
            p("07 81 23 45 67", None),
            ok("+33781234567", FR, LineType::Mobile)
        );
        assert_eq!(
            p("01 42 68 53 00", None),
            ok("+33142685300", FR, LineType::Fixed)
        );
        assert_eq!(
            p("05.56.12.34.56", Some(FR)),
            ok("+33556123456", FR, LineType::Fixed)
        );
        assert_eq!(
            p("09 51 23 45 67", None),
            ok("+33951234567", FR, LineType::Voip)
        );
        assert_eq!(
            p("+33 6 12 34 56 78", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        assert_eq!(
            p("0033 6 12 34 56 78", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        assert_eq!(
            p("+33 (0)6 12 34 56 78", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        assert_eq!(
            p("(01) 42-68-53-00", None),
            ok("+33142685300", FR, LineType::Fixed)
        );
        assert_eq!(
            p("612345678", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        assert_eq!(
            p("33612345678", None),
            ok("+33612345678", FR, LineType::Mobile)
        );
        // a metropolitan number stays metropolitan whoever dials it
        assert_eq!(
            p("06 12 34 56 78", Some(GP)),
            ok("+33612345678", FR, LineType::Mobile)
        );
    }

    #[test]
    fn guadeloupe_and_islands() {
        assert_eq!(
            p("0690 12 34 56", None),
            ok("+590690123456", GP, LineType::Mobile)
        );
        assert_eq!(
            p("0690 12 34 56", Some(FR)),
            ok("+590690123456", GP, LineType::Mobile)
        );
        assert_eq!(
            p("0690 12 34 56", Some(MF)),
            ok("+590690123456", MF, LineType::Mobile)
        );
        assert_eq!(
            p("0690 12 34 56", Some(BL)),
            ok("+590690123456", BL, LineType::Mobile)
        );
        assert_eq!(
            p("0590 81 23 45", None),
            ok("+590590812345", GP, LineType::Fixed)
        );
        assert_eq!(
            p("+590 690 12 34 56", None),
            ok("+590690123456", GP, LineType::Mobile)
        );
        assert_eq!(
            p("+590 690 12 34 56", Some(MF)),
            ok("+590690123456", MF, LineType::Mobile)
        );
        // 0590 27: BL and MF fixed lines, not GP in the metadata
        assert_eq!(
            p("0590 27 12 34", None),
            ok("+590590271234", BL, LineType::Fixed)
        );
        assert_eq!(
            p("0590 27 12 34", Some(MF)),
            ok("+590590271234", MF, LineType::Fixed)
        );
        // 0590 87 belongs to BL/MF in the metadata, even for a person of GP
        assert_eq!(
            p("0590 87 12 34", Some(GP)),
            ok("+590590871234", BL, LineType::Fixed)
        );
        assert_eq!(
            p("0590 81 12 34", Some(MF)),
            ok("+590590811234", GP, LineType::Fixed)
        );
        assert_eq!(
            p("0691 22 12 34", None),
            ok("+590691221234", GP, LineType::Mobile)
        );
        // 09475: Guadeloupe VoIP block (prospecting caller ID)
        assert_eq!(
            p("09 47 50 12 34", None),
            ok("+590947501234", GP, LineType::Voip)
        );
        // a naive +33 parse is invalid
        assert_eq!(p("+33 690 12 34 56", None), Err("phone.unknown_range"));
    }

    #[test]
    fn martinique_guyane() {
        assert_eq!(
            p("0696 12 34 56", None),
            ok("+596696123456", MQ, LineType::Mobile)
        );
        assert_eq!(
            p("0697 12 34 56", None),
            ok("+596697123456", MQ, LineType::Mobile)
        );
        assert_eq!(
            p("0596 61 23 45", None),
            ok("+596596612345", MQ, LineType::Fixed)
        );
        assert_eq!(
            p("0694 20 12 34", None),
            ok("+594694201234", GF, LineType::Mobile)
        );
        assert_eq!(
            p("0594 29 12 34", None),
            ok("+594594291234", GF, LineType::Fixed)
        );
        assert_eq!(
            p("+594 694 20 12 34", Some(FR)),
            ok("+594694201234", GF, LineType::Mobile)
        );
    }

    #[test]
    fn reunion_mayotte() {
        assert_eq!(
            p("0692 12 34 56", None),
            ok("+262692123456", RE, LineType::Mobile)
        );
        assert_eq!(
            p("0692 12 34 56", Some(YT)),
            ok("+262692123456", RE, LineType::Mobile)
        );
        assert_eq!(
            p("0262 12 34 56", None),
            ok("+262262123456", RE, LineType::Fixed)
        );
        assert_eq!(
            p("0262 12 34 56", Some(YT)),
            ok("+262262123456", RE, LineType::Fixed)
        );
        assert_eq!(
            p("0263 01 23 45", None),
            ok("+262263012345", RE, LineType::Fixed)
        );
        assert_eq!(
            p("0269 61 23 45", None),
            ok("+262269612345", YT, LineType::Fixed)
        );
        assert_eq!(
            p("0269 61 23 45", Some(FR)),
            ok("+262269612345", YT, LineType::Fixed)
        );
        assert_eq!(
            p("0269 61 23 45", Some(RE)),
            ok("+262269612345", YT, LineType::Fixed)
        );
        assert_eq!(
            p("0639 01 23 45", None),
            ok("+262639012345", YT, LineType::Mobile)
        );
        assert_eq!(
            p("+262 639 01 23 45", None),
            ok("+262639012345", YT, LineType::Mobile)
        );
        assert_eq!(
            p("+262 692 12 34 56", None),
            ok("+262692123456", RE, LineType::Mobile)
        );
        // +33 written explicitly keeps libphonenumber's FR reading
        assert_eq!(
            p("+33 2 69 61 23 45", None),
            ok("+33269612345", FR, LineType::Fixed)
        );
    }

    #[test]
    fn overseas_mobile_blocks_07_09() {
        // known to the metadata
        assert_eq!(
            p("07 09 00 12 34", None),
            ok("+590709001234", GP, LineType::Mobile)
        );
        assert_eq!(src("07 09 00 12 34"), Some(PhoneSource::Metadata));
        assert_eq!(
            p("07 09 10 12 34", None),
            ok("+596709101234", MQ, LineType::Mobile)
        );
        assert_eq!(src("07 09 10 12 34"), Some(PhoneSource::Metadata));
        assert_eq!(
            p("07 09 20 12 34", None),
            ok("+262709201234", RE, LineType::Mobile)
        );
        assert_eq!(src("07 09 20 12 34"), Some(PhoneSource::Metadata));
        for d in 0..=3 {
            let n = format!("07 09 3{d} 12 34");
            assert_eq!(
                p(&n, None),
                ok(&format!("+5947093{d}1234"), GF, LineType::Mobile),
                "{n}"
            );
            assert_eq!(src(&n), Some(PhoneSource::Metadata));
        }
        for d in 5..=7 {
            let n = format!("07093{d}1234");
            assert_eq!(
                p(&n, None),
                ok(&format!("+2627093{d}1234"), YT, LineType::Mobile),
                "{n}"
            );
            assert_eq!(src(&n), Some(PhoneSource::Metadata));
        }
        // 070934, 070938, 070939: not in any territory's block
        assert_eq!(p("07 09 34 12 34", None), Err("phone.unknown_range"));
        assert_eq!(p("07 09 38 12 34", None), Err("phone.unknown_range"));
        // whole blocks from the supplement (DOMAIN.md), missing from the metadata
        assert_eq!(
            p("07 09 05 12 34", None),
            ok("+590709051234", GP, LineType::Mobile)
        );
        assert_eq!(src("07 09 05 12 34"), Some(PhoneSource::Supplement));
        assert_eq!(
            p("07 09 09 12 34", Some(MF)),
            ok("+590709091234", MF, LineType::Mobile)
        );
        assert_eq!(
            p("07 09 19 12 34", None),
            ok("+596709191234", MQ, LineType::Mobile)
        );
        assert_eq!(src("07 09 19 12 34"), Some(PhoneSource::Supplement));
        assert_eq!(
            p("07 09 29 12 34", None),
            ok("+262709291234", RE, LineType::Mobile)
        );
        assert_eq!(src("07 09 29 12 34"), Some(PhoneSource::Supplement));
        // 0639: partly in the metadata, the rest from the supplement
        assert_eq!(src("0639 01 23 45"), Some(PhoneSource::Metadata));
        assert_eq!(
            p("0639 12 34 56", None),
            ok("+262639123456", YT, LineType::Mobile)
        );
        assert_eq!(src("0639 12 34 56"), Some(PhoneSource::Supplement));
        // 07 0x outside 0709 is not a mobile block
        assert_eq!(p("07 01 23 45 67", None), Err("phone.unknown_range"));
    }

    #[test]
    fn supplement_keeps_country_code() {
        assert_eq!(p("+33 7 09 05 12 34", None), Err("phone.unknown_range"));
        assert_eq!(p("+596 7 09 05 12 34", None), Err("phone.unknown_range"));
        assert_eq!(
            p("+590 7 09 05 12 34", None),
            ok("+590709051234", GP, LineType::Mobile)
        );
        assert_eq!(
            p("+262 6 39 12 34 56", None),
            ok("+262639123456", YT, LineType::Mobile)
        );
    }

    #[test]
    fn refused() {
        assert_eq!(p("", None), Err("phone.empty"));
        assert_eq!(p("   ", None), Err("phone.empty"));
        assert_eq!(p("06 12 34 56", None), Err("phone.bad_length"));
        assert_eq!(p("06 12 34 56 78 9", None), Err("phone.bad_length"));
        assert_eq!(p("+33 6 12 34 56", None), Err("phone.bad_length"));
        assert_eq!(p("+", None), Err("phone.bad_length"));
        assert_eq!(p("06 12 34 56 7a", None), Err("phone.bad_character"));
        assert_eq!(p("tel: 0612345678", None), Err("phone.bad_character"));
        assert_eq!(p("06+12345678", None), Err("phone.bad_character"));
        assert_eq!(p("+269 321 23 45", None), Err("phone.not_french"));
        assert_eq!(p("+44 7911 123456", None), Err("phone.not_french"));
        assert_eq!(p("+508 41 23 45", None), Err("phone.not_french"));
        assert_eq!(p("+377 93 15 20 00", None), Err("phone.not_french"));
        assert_eq!(p("0044 7911 123456", None), Err("phone.not_french"));
        assert_eq!(p("08 00 12 34 56", None), Err("phone.not_personal_line"));
        assert_eq!(p("08 99 12 34 56", None), Err("phone.not_personal_line"));
        assert_eq!(p("08 10 12 34 56", None), Err("phone.not_personal_line"));
        assert_eq!(p("08 06 12 34 56", None), Err("phone.not_personal_line"));
        assert_eq!(p("+590 806 12 34 56", None), Err("phone.not_personal_line"));
        assert_eq!(p("0012345678", None), Err("phone.not_french"));
        assert_eq!(PhoneError::NotFrench.code(), "phone.not_french");
    }

    #[test]
    fn accessors() {
        let x = FrenchPhone::parse("0690 12 34 56", None).expect("valid");
        assert_eq!(x.national(), "0690123456");
        assert_eq!(x.country_code(), 590);
        assert_eq!(x.time_zone(), chrono_tz::America::Guadeloupe);
        assert_eq!(x.to_string(), "+590690123456");
        assert_eq!(LineType::Voip.as_str(), "voip");
    }

    type Descriptor = phonenumber::metadata::Descriptor;

    /// Every range of every territory compiled as `classify` compiles it, once, beside the
    /// crate's own.
    #[allow(clippy::type_complexity)]
    static COMPILED: std::sync::LazyLock<
        Vec<(
            Territory,
            Vec<Option<Range>>,
            Vec<Option<&'static Descriptor>>,
        )>,
    > = std::sync::LazyLock::new(|| {
        Territory::ALL
            .into_iter()
            .map(|t| {
                let d = DATABASE.by_id(t.code()).expect("metadata").descriptors();
                let theirs = vec![
                    Some(d.general()),
                    d.premium_rate(),
                    d.toll_free(),
                    d.shared_cost(),
                    d.voip(),
                    d.personal_number(),
                    d.pager(),
                    d.uan(),
                    d.voicemail(),
                    d.fixed_line(),
                    d.mobile(),
                ];
                (t, theirs.iter().map(|d| Range::of(*d)).collect(), theirs)
            })
            .collect()
    });

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*", h in 0usize..9) {
            let home = Territory::ALL.get(h).copied();
            let _ = FrenchPhone::parse(&s, home);
        }

        #[test]
        fn never_panics_on_phone_like(s in "[+0-9 ().-]{0,20}") {
            let _ = FrenchPhone::parse(&s, None);
        }

        #[test]
        fn formatting_noise_is_ignored(nsn in "[1-79][0-9]{8}", seps in proptest::collection::vec(prop_oneof![Just(" "), Just("."), Just("-"), Just("")], 9), h in 0usize..9) {
            let home = Territory::ALL.get(h).copied();
            let plain = format!("0{nsn}");
            let noisy: String = nsn.chars().zip(seps.iter()).map(|(c, s)| format!("{c}{s}")).collect();
            let noisy = format!("0{noisy}");
            prop_assert_eq!(FrenchPhone::parse(&noisy, home), FrenchPhone::parse(&plain, home));
        }

        #[test]
        fn e164_round_trips(nsn in "[1-79][0-9]{8}", h in 0usize..9) {
            let home = Territory::ALL.get(h).copied();
            if let Ok(x) = FrenchPhone::parse(&format!("0{nsn}"), home) {
                let again = FrenchPhone::parse(x.e164(), home).expect("own E.164 parses");
                prop_assert_eq!(again.e164(), x.e164());
                prop_assert_eq!(again.line_type(), x.line_type());
                prop_assert_eq!(country_code(again.territory()), country_code(x.territory()));
                prop_assert!(x.e164().ends_with(&nsn));
            }
        }

        /// The ranges compiled once answer as the crate's own descriptors do, for every range
        /// of every territory (numbers of 8 to 10 digits: lengths outside a range's count too).
        #[test]
        fn compiled_ranges_match_as_the_crate_does(nsn in "[0-9]{8,10}") {
            for (t, ours, theirs) in COMPILED.iter() {
                for (i, (ours, theirs)) in ours.iter().zip(theirs).enumerate() {
                    prop_assert_eq!(
                        ours.as_ref().map(|x| x.is_match(&nsn)),
                        theirs.map(|x| x.is_match(&nsn)),
                        "range {} of {:?}", i, t
                    );
                }
            }
        }

        #[test]
        fn metropolitan_mobiles(second in "[0124-8][0-9]|3[0-8]", rest in "[0-9]{6}", h in 0usize..9) {
            let home = Territory::ALL.get(h).copied();
            let n = format!("06{second}{rest}");
            let x = FrenchPhone::parse(&n, home).expect("metropolitan mobile");
            prop_assert_eq!(x.territory(), Territory::FR);
            prop_assert_eq!(x.line_type(), LineType::Mobile);
            prop_assert_eq!(x.e164(), format!("+33{}", &n[1..]));
        }
    }
}
