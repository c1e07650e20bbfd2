use super::plan::{local_instant, Edge};
use super::*;
use crate::geo::{Department, Territory};
use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveTime, Offset as _, TimeZone,
    Timelike, Utc, Weekday,
};
use proptest::prelude::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

fn dept(code: &str) -> Place {
    Place::Department(Department::parse(code).expect("test department"))
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn t(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("test time")
}

fn win(sh: u32, sm: u32, eh: u32, em: u32) -> LocalWindow {
    LocalWindow::new(t(sh, sm), t(eh, em)).expect("test window")
}

fn rfc(w: &Window) -> (String, String) {
    (w.start.to_rfc3339(), w.end.to_rfc3339())
}

fn cal() -> &'static HolidayCalendar {
    HolidayCalendar::built_in()
}

const ALL_DEPARTMENTS_SAMPLE: [&str; 16] = [
    "01", "13", "2A", "2B", "54", "57", "67", "68", "75", "95", "971", "972", "973", "974", "976",
    "977",
];

fn all_places() -> Vec<Place> {
    let mut places: Vec<Place> = ALL_DEPARTMENTS_SAMPLE.iter().map(|c| dept(c)).collect();
    places.push(dept("978"));
    places.extend(Territory::ALL.into_iter().map(Place::Territory));
    places
}

// ---------------------------------------------------------------- Easter

#[test]
fn easter_known_dates() {
    for (year, date) in [
        (1818, "1818-03-22"),
        (1943, "1943-04-25"),
        (1954, "1954-04-18"),
        (1981, "1981-04-19"),
        (2000, "2000-04-23"),
        (2008, "2008-03-23"),
        (2011, "2011-04-24"),
        (2019, "2019-04-21"),
        (2024, "2024-03-31"),
        (2025, "2025-04-20"),
        (2026, "2026-04-05"),
        (2027, "2027-03-28"),
        (2028, "2028-04-16"),
        (2029, "2029-04-01"),
        (2030, "2030-04-21"),
        (2038, "2038-04-25"),
        (2049, "2049-04-18"),
        (2076, "2076-04-19"),
        (2285, "2285-03-22"),
    ] {
        assert_eq!(easter_sunday(year), Some(d(date)), "Easter {year}");
    }
    assert_eq!(easter_sunday(1582), None);
    assert_eq!(easter_sunday(10_000), None);
}

#[test]
fn easter_is_always_a_sunday_between_22_march_and_25_april() {
    for year in 1583..=4099 {
        let e = easter_sunday(year).expect("in range");
        assert_eq!(e.weekday(), Weekday::Sun, "{year}");
        assert!(
            e >= NaiveDate::from_ymd_opt(year, 3, 22).expect("date"),
            "{year}"
        );
        assert!(
            e <= NaiveDate::from_ymd_opt(year, 4, 25).expect("date"),
            "{year}"
        );
    }
}

// ---------------------------------------------------------------- holidays

#[test]
fn built_in_data_loads_and_round_trips() {
    let cal = HolidayCalendar::default();
    assert_eq!(cal.definitions().len(), 21);
    let again = HolidayCalendar::from_json(&cal.to_json()).expect("round trip");
    assert_eq!(again, cal);
    let from_text = HolidayCalendar::from_json(HolidayCalendar::built_in_json()).expect("text");
    assert_eq!(from_text, cal);
}

/// Easter-relative dates 2024–2030, from published calendars:
/// (year, Good Friday, Easter Monday, Ascension, Whit Monday).
const EASTER_TABLE: [(i32, &str, &str, &str, &str); 7] = [
    (2024, "2024-03-29", "2024-04-01", "2024-05-09", "2024-05-20"),
    (2025, "2025-04-18", "2025-04-21", "2025-05-29", "2025-06-09"),
    (2026, "2026-04-03", "2026-04-06", "2026-05-14", "2026-05-25"),
    (2027, "2027-03-26", "2027-03-29", "2027-05-06", "2027-05-17"),
    (2028, "2028-04-14", "2028-04-17", "2028-05-25", "2028-06-05"),
    (2029, "2029-03-30", "2029-04-02", "2029-05-10", "2029-05-21"),
    (2030, "2030-04-19", "2030-04-22", "2030-05-30", "2030-06-10"),
];

fn national(year: i32) -> Vec<(NaiveDate, &'static str)> {
    let (_, _, easter_monday, ascension, whit_monday) = EASTER_TABLE
        .iter()
        .copied()
        .find(|row| row.0 == year)
        .expect("year in table");
    let fixed = |m: u32, day: u32| NaiveDate::from_ymd_opt(year, m, day).expect("date");
    let mut list = vec![
        (fixed(1, 1), "Jour de l'an"),
        (d(easter_monday), "Lundi de Pâques"),
        (fixed(5, 1), "Fête du Travail"),
        (fixed(5, 8), "Victoire 1945"),
        (d(ascension), "Ascension"),
        (d(whit_monday), "Lundi de Pentecôte"),
        (fixed(7, 14), "Fête nationale"),
        (fixed(8, 15), "Assomption"),
        (fixed(11, 1), "Toussaint"),
        (fixed(11, 11), "Armistice"),
        (fixed(12, 25), "Noël"),
    ];
    list.sort();
    list
}

fn expected(place: &Place, year: i32) -> Vec<(NaiveDate, &'static str)> {
    let good_friday = EASTER_TABLE
        .iter()
        .find(|row| row.0 == year)
        .map(|row| d(row.1))
        .expect("year in table");
    let fixed = |m: u32, day: u32| NaiveDate::from_ymd_opt(year, m, day).expect("date");
    let mut list = national(year);
    let abolition = "Abolition de l'esclavage";
    let schoelcher = "Fête Victor Schœlcher";
    let extra: Vec<(NaiveDate, &'static str)> = match place.department_code() {
        Some("57" | "67" | "68") => vec![
            (good_friday, "Vendredi saint"),
            (fixed(12, 26), "Saint-Étienne"),
        ],
        Some("971") => vec![(fixed(5, 27), abolition), (fixed(7, 21), schoelcher)],
        Some("972") => vec![(fixed(5, 22), abolition), (fixed(7, 21), schoelcher)],
        Some("973") => vec![(fixed(6, 10), abolition)],
        Some("974") => vec![(fixed(12, 20), abolition)],
        Some("976") => vec![(fixed(4, 27), abolition)],
        Some("977") => vec![(fixed(10, 9), abolition)],
        Some("978") => vec![(fixed(5, 28), abolition), (fixed(7, 21), schoelcher)],
        _ => vec![],
    };
    for (date, name) in extra {
        // A national holiday on the same day keeps its name.
        if !list.iter().any(|(d2, _)| *d2 == date) {
            list.push((date, name));
        }
    }
    list.sort();
    list
}

#[test]
fn holidays_2024_to_2030_for_every_kind_of_place() {
    for place in all_places() {
        for year in 2024..=2030 {
            let got = cal().holidays_in_year(&place, year);
            assert_eq!(got, expected(&place, year), "{place} {year}");
            // And day by day, over the whole year.
            let exp = expected(&place, year);
            let mut date = NaiveDate::from_ymd_opt(year, 1, 1).expect("date");
            while date.year() == year {
                let want = exp.iter().find(|(d2, _)| *d2 == date).map(|(_, n)| *n);
                assert_eq!(cal().holiday(&place, date), want, "{place} {date}");
                date = date.succ_opt().expect("date");
            }
        }
    }
}

#[test]
fn territory_only_places_use_their_department() {
    let fr = Place::Territory(Territory::FR);
    assert_eq!(cal().holiday(&fr, d("2027-03-26")), None, "no Good Friday");
    assert_eq!(
        cal().holiday(&fr, d("2027-12-26")),
        None,
        "no Saint-Étienne"
    );
    assert_eq!(cal().holiday(&fr, d("2027-07-14")), Some("Fête nationale"));
    let cases = [
        (Territory::GP, "2027-05-27"),
        (Territory::MQ, "2027-05-22"),
        (Territory::GF, "2027-06-10"),
        (Territory::RE, "2027-12-20"),
        (Territory::YT, "2027-04-27"),
        (Territory::BL, "2027-10-09"),
        (Territory::MF, "2027-05-28"),
    ];
    for (territory, date) in cases {
        let place = Place::Territory(territory);
        assert_eq!(
            cal().holiday(&place, d(date)),
            Some("Abolition de l'esclavage"),
            "{territory}"
        );
        for (other, other_date) in cases {
            if other != territory && other_date != date {
                assert_eq!(
                    cal().holiday(&place, d(other_date)),
                    None,
                    "{territory} {other}"
                );
            }
        }
    }
    for territory in [Territory::GP, Territory::MQ, Territory::MF] {
        assert_eq!(
            cal().holiday(&Place::Territory(territory), d("2027-07-21")),
            Some("Fête Victor Schœlcher")
        );
    }
    for territory in [Territory::GF, Territory::RE, Territory::YT, Territory::BL] {
        assert_eq!(
            cal().holiday(&Place::Territory(territory), d("2027-07-21")),
            None
        );
    }
}

#[test]
fn alsace_moselle_only_in_57_67_68() {
    for code in ["57", "67", "68"] {
        let p = dept(code);
        assert_eq!(cal().holiday(&p, d("2025-04-18")), Some("Vendredi saint"));
        assert_eq!(cal().holiday(&p, d("2025-12-26")), Some("Saint-Étienne"));
    }
    for code in ["54", "55", "88", "90", "75", "2A", "971"] {
        let p = dept(code);
        assert_eq!(cal().holiday(&p, d("2025-04-18")), None, "{code}");
        assert_eq!(cal().holiday(&p, d("2025-12-26")), None, "{code}");
    }
}

#[test]
fn coinciding_holidays_keep_the_first_listed_name() {
    // 2030: Whit Monday is 10 June, Guyane's abolition day.
    let gf = dept("973");
    assert_eq!(
        cal().holiday(&gf, d("2030-06-10")),
        Some("Lundi de Pentecôte")
    );
    assert_eq!(
        cal().holidays_on(&gf, d("2030-06-10")),
        vec!["Lundi de Pentecôte", "Abolition de l'esclavage"]
    );
    // 2031: Ascension is 22 May, Martinique's abolition day.
    assert_eq!(
        cal().holidays_on(&dept("972"), d("2031-05-22")),
        vec!["Ascension", "Abolition de l'esclavage"]
    );
}

#[test]
fn amended_calendar_from_json() {
    let json = r#"{
        "holidays": [
            {"name": "Jour de l'an", "rule": {"fixed": {"month": 1, "day": 1}}, "scope": "national"},
            {"name": "Mi-Carême", "rule": {"easter": {"offset": -25}}, "scope": {"territories": ["GP", "MQ"]}},
            {"name": "Journée test", "rule": {"fixed": {"month": 3, "day": 3}}, "scope": {"departments": ["2A"]},
             "from_year": 2026, "until_year": 2027},
            {"name": "Bissextile", "rule": {"fixed": {"month": 2, "day": 29}}, "scope": "national"}
        ]
    }"#;
    let cal = HolidayCalendar::from_json(json).expect("valid");
    // Mi-Carême 2027: Easter 28 March − 25 days = 3 March (a Thursday).
    assert_eq!(
        cal.holiday(&dept("971"), d("2027-03-03")),
        Some("Mi-Carême")
    );
    assert_eq!(
        cal.holiday(&Place::Territory(Territory::MQ), d("2027-03-03")),
        Some("Mi-Carême")
    );
    assert_eq!(cal.holiday(&dept("973"), d("2027-03-03")), None);
    assert_eq!(
        cal.holiday(&dept("2A"), d("2027-03-03")),
        Some("Journée test")
    );
    assert_eq!(cal.holiday(&dept("2A"), d("2025-03-03")), None);
    assert_eq!(cal.holiday(&dept("2A"), d("2028-03-03")), None);
    assert_eq!(cal.holiday(&dept("2B"), d("2027-03-03")), None);
    assert_eq!(
        cal.holiday(&dept("75"), d("2028-02-29")),
        Some("Bissextile")
    );
    assert_eq!(cal.holiday(&dept("75"), d("2027-07-14")), None);
    // The amended calendar drives day plans.
    let plan = day_plan(
        &cal,
        &CallingPolicy::legal_default(),
        &dept("971"),
        d("2027-03-03"),
    );
    assert!(!plan.callable);
    assert_eq!(plan.holiday.as_deref(), Some("Mi-Carême"));
}

#[test]
fn invalid_calendar_data_is_rejected_with_a_reason() {
    let wrap = |h: &str| format!(r#"{{"holidays": [{h}]}}"#);
    let bad = [
        r#"{"name": "X", "rule": {"fixed": {"month": 13, "day": 1}}, "scope": "national"}"#,
        r#"{"name": "X", "rule": {"fixed": {"month": 2, "day": 30}}, "scope": "national"}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 300}}, "scope": "national"}"#,
        r#"{"name": " ", "rule": {"easter": {"offset": 1}}, "scope": "national"}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": {"departments": ["20"]}}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": {"departments": ["975"]}}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": {"departments": ["2a"]}}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": {"departments": []}}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": {"territories": ["XX"]}}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": "everywhere"}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": "national", "from_year": 2030, "until_year": 2029}"#,
        r#"{"name": "X", "rule": {"easter": {"offset": 1}}, "scope": "national", "typo": 1}"#,
        r#"{"name": "X", "rule": {"weekly": 1}, "scope": "national"}"#,
    ];
    for h in bad {
        let err = HolidayCalendar::from_json(&wrap(h)).expect_err(h);
        assert!(!err.to_string().is_empty());
    }
    assert!(HolidayCalendar::from_json("not json").is_err());
    assert!(HolidayCalendar::from_json("{}").is_err());
    let err = HolidayCalendar::from_json(&wrap(bad[4])).expect_err("bad department");
    assert!(err.to_string().contains("\"20\""), "{err}");
}

// ---------------------------------------------------------------- policy

#[test]
fn legal_default_is_within_itself_and_narrower_policies_too() {
    let legal = CallingPolicy::legal_default();
    assert_eq!(legal.check_within(&legal), Ok(()));
    assert!(!legal.widens_legal_default());
    let narrow = CallingPolicy::legal_default()
        .with_day(Weekday::Mon, vec![win(10, 30, 12, 0), win(17, 0, 20, 0)])
        .expect("valid")
        .with_day(Weekday::Fri, vec![])
        .expect("valid")
        .with_closed_date(d("2027-12-24"));
    assert_eq!(narrow.check_within(&legal), Ok(()));
    assert_eq!(narrow.authorize(None), Ok(()));
}

#[test]
fn wider_policies_are_reported_naming_day_and_window() {
    let legal = CallingPolicy::legal_default();
    let early = legal
        .clone()
        .with_day(Weekday::Tue, vec![win(9, 0, 13, 0), win(14, 0, 20, 0)])
        .expect("valid");
    let err = early.check_within(&legal).expect_err("wider");
    assert_eq!(
        err,
        PolicyError::OutsideLegalHours {
            weekday: Weekday::Tue,
            window: win(9, 0, 13, 0),
            allowed: "10:00–13:00, 14:00–20:00".into()
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("Tuesday") && msg.contains("09:00–13:00"),
        "{msg}"
    );
    assert!(early.widens_legal_default());

    let lunch = legal
        .clone()
        .with_day(Weekday::Wed, vec![win(12, 0, 14, 30)])
        .expect("valid");
    assert!(lunch.check_within(&legal).is_err());

    let saturday = legal
        .clone()
        .with_day(Weekday::Sat, vec![win(10, 0, 12, 0)])
        .expect("valid");
    let msg = saturday
        .check_within(&legal)
        .expect_err("wider")
        .to_string();
    assert!(
        msg.contains("Saturday") && msg.contains("closed that day"),
        "{msg}"
    );

    let late = legal
        .clone()
        .with_day(Weekday::Fri, vec![LocalWindow::until_end_of_day(t(19, 0))])
        .expect("valid");
    assert!(late.check_within(&legal).is_err());

    let holidays = legal.clone().with_holidays_closed(false);
    assert_eq!(
        holidays.check_within(&legal),
        Err(PolicyError::HolidaysOpened)
    );

    assert!(CallingPolicy::all_hours().widens_legal_default());
}

#[test]
fn coverage_uses_the_union_of_touching_reference_windows() {
    let reference = CallingPolicy::legal_default()
        .with_day(Weekday::Mon, vec![win(10, 0, 13, 0), win(13, 0, 20, 0)])
        .expect("valid");
    let policy = CallingPolicy::legal_default()
        .with_day(Weekday::Mon, vec![win(12, 0, 14, 0)])
        .expect("valid");
    assert_eq!(policy.check_within(&reference), Ok(()));
    let closed_ref = reference.clone().with_closed_date(d("2027-06-07"));
    assert_eq!(
        policy.check_within(&closed_ref),
        Err(PolicyError::ClosedDateOpened(d("2027-06-07")))
    );
    assert_eq!(
        policy
            .clone()
            .with_closed_date(d("2027-06-07"))
            .check_within(&closed_ref),
        Ok(())
    );
    // A Sunday closed date is already closed by a policy with no Sunday window.
    let sunday_ref = reference.with_closed_date(d("2027-06-06"));
    assert_eq!(policy.check_within(&sunday_ref), Ok(()));
}

#[test]
fn overrides_need_a_reason() {
    let all = CallingPolicy::all_hours();
    assert!(all.authorize(None).is_err());
    assert_eq!(
        all.authorize(Some(&Override {
            reason: "  ".into()
        })),
        Err(PolicyError::OverrideWithoutReason)
    );
    assert_eq!(
        all.authorize(Some(&Override {
            reason: "load test on synthetic contacts".into()
        })),
        Ok(())
    );
}

#[test]
fn invalid_windows_are_rejected() {
    assert!(LocalWindow::new(t(13, 0), t(10, 0)).is_err());
    assert!(LocalWindow::new(t(10, 0), t(10, 0)).is_err());
    assert!(LocalWindow::from_seconds(0, 86_401).is_err());
    let whole = LocalWindow::until_end_of_day(NaiveTime::MIN);
    assert_eq!(whole.end(), None);
    assert_eq!(whole.start(), NaiveTime::MIN);
    assert_eq!(win(10, 0, 13, 0).end(), Some(t(13, 0)));
    let overlap = CallingPolicy::legal_default()
        .with_day(Weekday::Mon, vec![win(14, 0, 20, 0), win(10, 0, 14, 30)]);
    let err = overlap.expect_err("overlap");
    assert!(err.to_string().contains("Monday"), "{err}");
    // Unsorted but disjoint windows are sorted.
    let sorted = CallingPolicy::legal_default()
        .with_day(Weekday::Mon, vec![win(14, 0, 20, 0), win(10, 0, 13, 0)])
        .expect("valid");
    assert_eq!(sorted, CallingPolicy::legal_default());
}

#[test]
fn policy_json_round_trip_and_validation() {
    for policy in [CallingPolicy::legal_default(), CallingPolicy::all_hours()] {
        let json = serde_json::to_string(&policy).expect("serialise");
        let back: CallingPolicy = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, policy);
    }
    let json = serde_json::to_value(CallingPolicy::all_hours()).expect("serialise");
    assert_eq!(json["weekly"]["sunday"][0]["end"], "24:00");
    assert_eq!(json["holidays_closed"], false);
    let legal = serde_json::to_value(CallingPolicy::legal_default()).expect("serialise");
    assert_eq!(
        legal["weekly"]["monday"],
        serde_json::json!([{"start": "10:00", "end": "13:00"}, {"start": "14:00", "end": "20:00"}])
    );

    let narrowed: CallingPolicy = serde_json::from_str(
        r#"{"weekly": {"tuesday": [{"start": "10:00:30", "end": "12:00"}]},
            "closed_dates": ["2027-12-24"]}"#,
    )
    .expect("parse");
    assert!(narrowed.holidays_closed(), "holidays closed by default");
    assert!(narrowed.windows(Weekday::Mon).is_empty());
    assert_eq!(
        narrowed.windows(Weekday::Tue)[0].start_seconds(),
        10 * 3600 + 30
    );
    assert!(narrowed.closed_dates().contains(&d("2027-12-24")));
    assert!(!narrowed.widens_legal_default());

    for bad in [
        r#"{"weekly": {"monday": [{"start": "25:00", "end": "26:00"}]}}"#,
        r#"{"weekly": {"monday": [{"start": "24:00", "end": "24:00"}]}}"#,
        r#"{"weekly": {"monday": [{"start": "10:00", "end": "24:01"}]}}"#,
        r#"{"weekly": {"monday": [{"start": "10:00", "end": "09:00"}]}}"#,
        r#"{"weekly": {"monday": [{"start": "10h", "end": "11:00"}]}}"#,
        r#"{"weekly": {"monday": [{"start": "10:00", "end": "13:00"}, {"start": "12:00", "end": "14:00"}]}}"#,
        r#"{"weekly": {"funday": []}}"#,
        r#"{"weekly": {}, "holidays": true}"#,
        r#"{}"#,
    ] {
        assert!(serde_json::from_str::<CallingPolicy>(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------- day plans

#[test]
fn guadeloupe_example_days() {
    let legal = CallingPolicy::legal_default();
    let gp = dept("971");
    let holiday = day_plan(cal(), &legal, &gp, d("2027-05-27"));
    assert_eq!(
        holiday,
        DayPlan {
            date: d("2027-05-27"),
            callable: false,
            holiday: Some("Abolition de l'esclavage".into()),
            windows: vec![]
        }
    );
    let next = day_plan(cal(), &legal, &gp, d("2027-05-28"));
    assert!(next.callable);
    assert_eq!(next.holiday, None);
    let got: Vec<_> = next.windows.iter().map(rfc).collect();
    assert_eq!(
        got,
        vec![
            (
                "2027-05-28T10:00:00-04:00".into(),
                "2027-05-28T13:00:00-04:00".into()
            ),
            (
                "2027-05-28T14:00:00-04:00".into(),
                "2027-05-28T20:00:00-04:00".into()
            ),
        ]
    );
    let weekend = day_plan(cal(), &legal, &gp, d("2027-05-29"));
    assert_eq!(
        (weekend.callable, weekend.holiday, weekend.windows.len()),
        (false, None, 0)
    );
    // Holiday on a weekend: named, not callable.
    let sunday_holiday = day_plan(cal(), &legal, &dept("75"), d("2027-08-15"));
    assert_eq!(sunday_holiday.date.weekday(), Weekday::Sun);
    assert_eq!(sunday_holiday.holiday.as_deref(), Some("Assomption"));
    assert!(!sunday_holiday.callable);
    // Holidays open: named and callable.
    let open = day_plan(
        cal(),
        &legal.clone().with_holidays_closed(false),
        &gp,
        d("2027-05-27"),
    );
    assert!(open.callable);
    assert_eq!(open.holiday.as_deref(), Some("Abolition de l'esclavage"));
    // An extra closed date closes a working day.
    let closed = day_plan(
        cal(),
        &legal.with_closed_date(d("2027-05-28")),
        &gp,
        d("2027-05-28"),
    );
    assert!(!closed.callable && closed.windows.is_empty() && closed.holiday.is_none());
}

fn offsets(plan: &DayPlan) -> Vec<(String, String)> {
    plan.windows.iter().map(rfc).collect()
}

#[test]
fn paris_dst_change_days_2027() {
    let legal = CallingPolicy::legal_default();
    let paris = dept("75");
    let winter = |date: &str| {
        vec![
            (
                format!("{date}T10:00:00+01:00"),
                format!("{date}T13:00:00+01:00"),
            ),
            (
                format!("{date}T14:00:00+01:00"),
                format!("{date}T20:00:00+01:00"),
            ),
        ]
    };
    let summer = |date: &str| {
        vec![
            (
                format!("{date}T10:00:00+02:00"),
                format!("{date}T13:00:00+02:00"),
            ),
            (
                format!("{date}T14:00:00+02:00"),
                format!("{date}T20:00:00+02:00"),
            ),
        ]
    };
    // Spring forward on Sunday 28 March 2027; Monday 29 is Easter Monday.
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2027-03-26"))),
        winter("2027-03-26")
    );
    let sunday = day_plan(cal(), &legal, &paris, d("2027-03-28"));
    assert!(!sunday.callable && sunday.holiday.is_none());
    let easter_monday = day_plan(cal(), &legal, &paris, d("2027-03-29"));
    assert_eq!(easter_monday.holiday.as_deref(), Some("Lundi de Pâques"));
    assert!(!easter_monday.callable);
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2027-03-30"))),
        summer("2027-03-30")
    );
    // Good Friday closes Moselle, not Paris.
    assert!(!day_plan(cal(), &legal, &dept("57"), d("2027-03-26")).callable);
    // Fall back on Sunday 31 October 2027; Monday 1 November is Toussaint.
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2027-10-29"))),
        summer("2027-10-29")
    );
    assert!(!day_plan(cal(), &legal, &paris, d("2027-10-31")).callable);
    assert!(!day_plan(cal(), &legal, &paris, d("2027-11-01")).callable);
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2027-11-02"))),
        winter("2027-11-02")
    );
    // 2025: Mondays right after the change are working days.
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2025-03-31"))),
        summer("2025-03-31")
    );
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2025-10-27"))),
        winter("2025-10-27")
    );
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2025-03-28"))),
        winter("2025-03-28")
    );
    assert_eq!(
        offsets(&day_plan(cal(), &legal, &paris, d("2025-10-24"))),
        summer("2025-10-24")
    );
}

#[test]
fn whole_days_on_dst_change_days_last_23_and_25_hours() {
    let all = CallingPolicy::all_hours();
    let paris = dept("75");
    let spring = day_plan(cal(), &all, &paris, d("2027-03-28"));
    assert_eq!(
        offsets(&spring),
        vec![(
            "2027-03-28T00:00:00+01:00".into(),
            "2027-03-29T00:00:00+02:00".into()
        )]
    );
    assert_eq!(
        spring.windows[0].end - spring.windows[0].start,
        Duration::hours(23)
    );
    let autumn = day_plan(cal(), &all, &paris, d("2027-10-31"));
    assert_eq!(
        autumn.windows[0].end - autumn.windows[0].start,
        Duration::hours(25)
    );
    // Holidays are named but open under all_hours.
    let easter_monday = day_plan(cal(), &all, &paris, d("2027-03-29"));
    assert!(easter_monday.callable);
    assert_eq!(easter_monday.holiday.as_deref(), Some("Lundi de Pâques"));
}

#[test]
fn nonexistent_and_ambiguous_local_times_are_clamped() {
    let paris = dept("75");
    let sunday_policy = |windows: Vec<LocalWindow>| {
        CallingPolicy::legal_default()
            .with_day(Weekday::Sun, windows)
            .expect("valid")
    };
    // Spring forward 2027-03-28: 02:00–03:00 does not exist.
    let p = sunday_policy(vec![win(1, 0, 2, 30), win(2, 30, 4, 0)]);
    let plan = day_plan(cal(), &p, &paris, d("2027-03-28"));
    assert_eq!(
        offsets(&plan),
        vec![
            (
                "2027-03-28T01:00:00+01:00".into(),
                "2027-03-28T03:00:00+02:00".into()
            ),
            (
                "2027-03-28T03:00:00+02:00".into(),
                "2027-03-28T04:00:00+02:00".into()
            ),
        ]
    );
    // A window entirely inside the gap disappears.
    let p = sunday_policy(vec![win(2, 0, 3, 0), win(10, 0, 11, 0)]);
    let plan = day_plan(cal(), &p, &paris, d("2027-03-28"));
    assert_eq!(
        offsets(&plan),
        vec![(
            "2027-03-28T10:00:00+02:00".into(),
            "2027-03-28T11:00:00+02:00".into()
        )]
    );
    let p = sunday_policy(vec![win(2, 15, 2, 45)]);
    assert!(!day_plan(cal(), &p, &paris, d("2027-03-28")).callable);
    // Fall back 2027-10-31: 02:00–03:00 happens twice. Conservative: the start takes the
    // later reading, the end the earlier one.
    let p = sunday_policy(vec![win(1, 0, 2, 30), win(2, 30, 4, 0)]);
    let plan = day_plan(cal(), &p, &paris, d("2027-10-31"));
    assert_eq!(
        offsets(&plan),
        vec![
            (
                "2027-10-31T01:00:00+02:00".into(),
                "2027-10-31T02:30:00+02:00".into()
            ),
            (
                "2027-10-31T02:30:00+01:00".into(),
                "2027-10-31T04:00:00+01:00".into()
            ),
        ]
    );
}

#[test]
fn gaps_at_midnight_and_odd_transitions_do_not_panic() {
    // Havana springs forward at midnight: 2024-03-10 00:00 does not exist.
    let havana = chrono_tz::America::Havana;
    let start = local_instant(havana, d("2024-03-10"), 0, Edge::Start).expect("instant");
    assert_eq!(
        start.fixed_offset().to_rfc3339(),
        "2024-03-10T01:00:00-04:00"
    );
    // Sub-hour gap (Lord Howe, 30 minutes).
    let lh = chrono_tz::Australia::Lord_Howe;
    let i = local_instant(lh, d("2024-10-06"), 2 * 3600 + 10 * 60, Edge::Start).expect("instant");
    assert_eq!(i.fixed_offset().to_rfc3339(), "2024-10-06T02:30:00+11:00");
    // A skipped day (Samoa, 2011-12-30).
    let apia = chrono_tz::Pacific::Apia;
    let i = local_instant(apia, d("2011-12-30"), 12 * 3600, Edge::Start).expect("instant");
    assert_eq!(i.fixed_offset().to_rfc3339(), "2011-12-31T00:00:00+14:00");
    // Extreme dates give no instant rather than a panic.
    assert!(local_instant(havana, NaiveDate::MAX, 86_400, Edge::End).is_none());
    let plan = day_plan(
        cal(),
        &CallingPolicy::all_hours(),
        &dept("75"),
        NaiveDate::MAX,
    );
    assert!(plan.windows.len() <= 1);
    let _ = next_open_window(
        cal(),
        &CallingPolicy::legal_default(),
        &dept("75"),
        DateTime::<Utc>::MAX_UTC,
    );
    let _ = next_open_window(
        cal(),
        &CallingPolicy::legal_default(),
        &dept("75"),
        DateTime::<Utc>::MIN_UTC,
    );
    let _ = is_open(
        cal(),
        &CallingPolicy::all_hours(),
        &dept("75"),
        DateTime::<Utc>::MAX_UTC,
    );
}

#[test]
fn overseas_offsets_and_the_changing_gap_with_paris() {
    let legal = CallingPolicy::legal_default();
    let opening = |code: &str, date: &str| {
        day_plan(cal(), &legal, &dept(code), d(date)).windows[0].start_utc()
    };
    // Tuesday 2027-01-12 (winter) and Tuesday 2027-06-15 (summer).
    for (code, offset) in [
        ("971", "-04:00"),
        ("972", "-04:00"),
        ("973", "-03:00"),
        ("974", "+04:00"),
        ("976", "+03:00"),
        ("977", "-04:00"),
        ("978", "-04:00"),
        ("2B", "+01:00"),
    ] {
        let plan = day_plan(cal(), &legal, &dept(code), d("2027-01-12"));
        assert_eq!(
            plan.windows[0].start.to_rfc3339(),
            format!("2027-01-12T10:00:00{offset}")
        );
    }
    let paris_winter = opening("75", "2027-01-12");
    let paris_summer = opening("75", "2027-06-15");
    assert_eq!(
        paris_winter - opening("974", "2027-01-12"),
        Duration::hours(3)
    );
    assert_eq!(
        paris_summer - opening("974", "2027-06-15"),
        Duration::hours(2)
    );
    assert_eq!(
        opening("971", "2027-01-12") - paris_winter,
        Duration::hours(5)
    );
    assert_eq!(
        opening("971", "2027-06-15") - paris_summer,
        Duration::hours(6)
    );
    // Paris opens at 09:00 UTC in winter, 08:00 UTC in summer; Réunion at 06:00 UTC all year.
    assert_eq!(paris_winter, utc("2027-01-12T09:00:00Z"));
    assert_eq!(paris_summer, utc("2027-06-15T08:00:00Z"));
    assert_eq!(opening("974", "2027-06-15"), utc("2027-06-15T06:00:00Z"));
}

// ---------------------------------------------------------------- next window, is_open

#[test]
fn next_open_window_examples() {
    let legal = CallingPolicy::legal_default();
    let paris = dept("75");
    // Inside a window: starts at `after`.
    let at = utc("2027-06-15T09:30:00Z"); // 11:30 Paris
    assert_eq!(
        next_open_window(cal(), &legal, &paris, at),
        Some((at, utc("2027-06-15T11:00:00Z")))
    );
    // Lunch break.
    assert_eq!(
        next_open_window(cal(), &legal, &paris, utc("2027-06-15T11:00:00Z")),
        Some((utc("2027-06-15T12:00:00Z"), utc("2027-06-15T18:00:00Z")))
    );
    // Friday evening to Tuesday after Whit Monday (2027-05-17).
    assert_eq!(
        next_open_window(cal(), &legal, &paris, utc("2027-05-14T18:00:00Z")),
        Some((utc("2027-05-18T08:00:00Z"), utc("2027-05-18T11:00:00Z")))
    );
    // Over the spring change: Friday 26 March 2027 evening (UTC+1) to Tuesday 30 (UTC+2).
    assert_eq!(
        next_open_window(cal(), &legal, &paris, utc("2027-03-26T19:00:00Z")),
        Some((utc("2027-03-30T08:00:00Z"), utc("2027-03-30T11:00:00Z")))
    );
    // Réunion: 19:30 local Friday 2027-12-17 → Tuesday 21 (Monday 20 is a holiday).
    assert_eq!(
        next_open_window(cal(), &legal, &dept("974"), utc("2027-12-17T15:30:00Z")),
        Some((utc("2027-12-17T15:30:00Z"), utc("2027-12-17T16:00:00Z")))
    );
    assert_eq!(
        next_open_window(cal(), &legal, &dept("974"), utc("2027-12-17T16:00:00Z")),
        Some((utc("2027-12-21T06:00:00Z"), utc("2027-12-21T09:00:00Z")))
    );
    // A closed policy never opens.
    let closed =
        CallingPolicy::new(WeeklySchedule::default(), true, Default::default()).expect("valid");
    assert_eq!(next_open_window(cal(), &closed, &paris, at), None);
    assert!(!is_open(cal(), &closed, &paris, at));
}

#[test]
fn touching_windows_merge_and_all_hours_is_capped() {
    let paris = dept("75");
    let touching = CallingPolicy::legal_default()
        .with_day(Weekday::Tue, vec![win(10, 0, 13, 0), win(13, 0, 20, 0)])
        .expect("valid");
    assert_eq!(
        next_open_window(cal(), &touching, &paris, utc("2027-06-15T07:00:00Z")),
        Some((utc("2027-06-15T08:00:00Z"), utc("2027-06-15T18:00:00Z")))
    );
    let all = CallingPolicy::all_hours();
    let at = utc("2027-06-15T07:00:00Z");
    let (start, end) = next_open_window(cal(), &all, &paris, at).expect("open");
    assert_eq!(start, at);
    assert!(
        end - at >= Duration::days(7) && end - at <= Duration::days(10),
        "{end}"
    );
    assert!(is_open(cal(), &all, &paris, end - Duration::seconds(1)));
}

#[test]
fn callback_validation() {
    let legal = CallingPolicy::legal_default();
    let gp = dept("971");
    let now = utc("2027-05-25T12:00:00Z");
    // Friday 28 May 2027 15:00 in Guadeloupe = 19:00 UTC.
    assert_eq!(
        validate_callback(cal(), &legal, &gp, utc("2027-05-28T19:00:00Z"), now),
        Ok(())
    );
    assert!(matches!(
        validate_callback(cal(), &legal, &gp, utc("2027-05-25T11:59:59Z"), now),
        Err(CallbackError::InPast { .. })
    ));
    // The holiday (27 May) at 15:00 local.
    let err = validate_callback(cal(), &legal, &gp, utc("2027-05-27T19:00:00Z"), now)
        .expect_err("closed");
    assert_eq!(
        err,
        CallbackError::OutsideCallingHours {
            at: utc("2027-05-27T19:00:00Z"),
            local: DateTime::parse_from_rfc3339("2027-05-27T15:00:00-04:00").expect("t"),
            next_open: Some(utc("2027-05-28T14:00:00Z")),
        }
    );
    assert!(
        err.to_string().contains("2027-05-27 15:00:00 -04:00"),
        "{err}"
    );
    // 20:00 local is the end, outside.
    assert!(validate_callback(cal(), &legal, &gp, utc("2027-05-29T00:00:00Z"), now).is_err());
    assert!(matches!(
        validate_callback(cal(), &legal, &gp, utc("2029-05-28T19:00:00Z"), now),
        Err(CallbackError::TooFarAhead { .. })
    ));
}

#[test]
fn place_basics() {
    assert_eq!(dept("977").time_zone(), chrono_tz::America::St_Barthelemy);
    assert_eq!(
        Place::Territory(Territory::YT).time_zone(),
        chrono_tz::Indian::Mayotte
    );
    assert_eq!(Place::Territory(Territory::FR).department_code(), None);
    assert_eq!(
        Place::Territory(Territory::BL).department_code(),
        Some("977")
    );
    assert_eq!(Place::from(Territory::MF).department_code(), Some("978"));
    let json = serde_json::to_string(&dept("2A")).expect("serialise");
    assert_eq!(json, r#"{"department":"2A"}"#);
    let back: Place = serde_json::from_str(r#"{"territory":"GP"}"#).expect("parse");
    assert_eq!(back, Place::Territory(Territory::GP));
}

// ---------------------------------------------------------------- properties

fn place_strategy() -> impl Strategy<Value = Place> {
    let places = all_places();
    (0..places.len()).prop_map(move |i| places[i].clone())
}

fn date_strategy() -> impl Strategy<Value = NaiveDate> {
    (0i64..(365 * 7 + 2)).prop_map(|n| d("2024-01-01") + Duration::days(n))
}

fn instant_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..(7 * 365 * 24 * 3600)).prop_map(|s| utc("2024-01-01T00:00:00Z") + Duration::seconds(s))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn legal_windows_are_10_to_20_local_on_working_days(place in place_strategy(), date in date_strategy()) {
        let plan = day_plan(cal(), &CallingPolicy::legal_default(), &place, date);
        let tz = place.time_zone();
        let working = !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
            && cal().holiday(&place, date).is_none();
        prop_assert_eq!(plan.callable, working);
        prop_assert_eq!(plan.callable, !plan.windows.is_empty());
        prop_assert_eq!(plan.holiday.as_deref(), cal().holiday(&place, date));
        if working {
            prop_assert_eq!(plan.windows.len(), 2);
        }
        for w in &plan.windows {
            for (edge, bounds) in [(w.start, [10, 14]), (w.end, [13, 20])] {
                let local = edge.with_timezone(&tz);
                prop_assert_eq!(local.date_naive(), date);
                prop_assert!(bounds.contains(&local.hour()) && local.minute() == 0 && local.second() == 0);
                prop_assert_eq!(*edge.offset(), local.offset().fix());
            }
            prop_assert!(w.start < w.end);
        }
    }

    #[test]
    fn is_open_matches_local_clock(place in place_strategy(), at in instant_strategy()) {
        let local = at.with_timezone(&place.time_zone());
        let date = local.date_naive();
        let minutes = local.hour() * 60 + local.minute();
        let expected = !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
            && cal().holiday(&place, date).is_none()
            && ((600..780).contains(&minutes) || (840..1200).contains(&minutes));
        prop_assert_eq!(is_open(cal(), &CallingPolicy::legal_default(), &place, at), expected);
    }

    #[test]
    fn next_open_window_is_open_and_nothing_earlier_is(place in place_strategy(), after in instant_strategy()) {
        let legal = CallingPolicy::legal_default();
        let (start, end) = next_open_window(cal(), &legal, &place, after).expect("opens within days");
        prop_assert!(start >= after && start < end);
        prop_assert!(is_open(cal(), &legal, &place, start));
        prop_assert!(is_open(cal(), &legal, &place, end - Duration::seconds(1)));
        prop_assert!(!is_open(cal(), &legal, &place, end));
        prop_assert!(end - start <= Duration::hours(6));
        if start > after {
            prop_assert!(!is_open(cal(), &legal, &place, after));
            prop_assert!(!is_open(cal(), &legal, &place, start - Duration::seconds(1)));
            // Sampled: every 20 minutes between `after` and `start` is closed.
            let mut probe = after;
            while probe < start {
                prop_assert!(!is_open(cal(), &legal, &place, probe), "open at {}", probe);
                probe += Duration::minutes(20);
            }
        }
        // Any window ending after `after` is the next one, the same in local time.
        prop_assert!(start - after < Duration::days(6));
    }

    #[test]
    fn callbacks_inside_windows_are_accepted(place in place_strategy(), after in instant_strategy(), frac in 0.0f64..1.0) {
        let legal = CallingPolicy::legal_default();
        let (start, end) = next_open_window(cal(), &legal, &place, after).expect("opens");
        let span = (end - start).num_seconds();
        // Truncation keeps the offset strictly below the span.
        let offset = ((span as f64) * frac) as i64;
        let at = start + Duration::seconds(offset.min(span - 1));
        prop_assert_eq!(validate_callback(cal(), &legal, &place, at, after), Ok(()));
        prop_assert!(validate_callback(cal(), &legal, &place, end, after).is_err());
    }
}

#[test]
fn local_offset_of_windows_is_the_zone_offset() {
    // Explicit check that the FixedOffset carried by a window is the zone's offset at that instant.
    let plan = day_plan(
        cal(),
        &CallingPolicy::legal_default(),
        &dept("976"),
        d("2027-04-26"),
    );
    let east3 = FixedOffset::east_opt(3 * 3600).expect("offset");
    assert!(plan
        .windows
        .iter()
        .all(|w| *w.start.offset() == east3 && *w.end.offset() == east3));
    assert_eq!(
        day_plan(
            cal(),
            &CallingPolicy::legal_default(),
            &dept("976"),
            d("2027-04-27")
        )
        .holiday
        .as_deref(),
        Some("Abolition de l'esclavage")
    );
    assert_eq!(
        Utc.with_ymd_and_hms(2027, 4, 26, 7, 0, 0).single(),
        Some(plan.windows[0].start_utc())
    );
}
