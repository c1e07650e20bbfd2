//! `cnmasctl calendar`: the calling calendar of a department under the legal default policy,
//! one JSON object per day.

use anyhow::{bail, Context};
use chrono::{NaiveDate, SecondsFormat};
use cnmas_domain::calendar::{day_plan, CallingPolicy, DayPlan, HolidayCalendar, Place};
use cnmas_domain::geo::Department;
use serde::Serialize;
use std::io::Write;

/// Longest range accepted: `to` at most this many days after `from`.
pub const MAX_RANGE_DAYS: i64 = 3660;

/// Print, for each day from `--from` to `--to` (inclusive), whether a person of `--department`
/// may be called under the legal default policy, and when (in the person's local time).
#[derive(clap::Args, Debug)]
pub struct CalendarArgs {
    /// Department code: 01–95, 2A, 2B, 971–974, 976–978.
    #[arg(long)]
    pub department: String,
    /// First day (YYYY-MM-DD).
    #[arg(long)]
    pub from: chrono::NaiveDate,
    /// Last day, inclusive (YYYY-MM-DD).
    #[arg(long)]
    pub to: chrono::NaiveDate,
}

#[derive(Serialize)]
struct DayLine<'a> {
    date: String,
    department: &'a str,
    territory: &'a str,
    time_zone: &'a str,
    callable: bool,
    holiday: Option<&'a str>,
    windows: Vec<WindowLine>,
}

#[derive(Serialize)]
struct WindowLine {
    start: String,
    end: String,
}

/// One output line (without the newline): keys in a fixed order, instants in RFC 3339 with the
/// local offset and whole seconds.
pub fn format_day(department: &Department, plan: &DayPlan) -> anyhow::Result<String> {
    let territory = department.territory();
    let line = DayLine {
        date: plan.date.format("%Y-%m-%d").to_string(),
        department: department.code(),
        territory: territory.code(),
        time_zone: territory.time_zone().name(),
        callable: plan.callable,
        holiday: plan.holiday.as_deref(),
        windows: plan
            .windows
            .iter()
            .map(|w| WindowLine {
                start: w.start.to_rfc3339_opts(SecondsFormat::Secs, false),
                end: w.end.to_rfc3339_opts(SecondsFormat::Secs, false),
            })
            .collect(),
    };
    serde_json::to_string(&line).context("formatting a calendar day as JSON")
}

/// Checks the arguments: a known department and a range of at most [`MAX_RANGE_DAYS`] days.
fn parse_args(args: &CalendarArgs) -> anyhow::Result<Department> {
    let department = Department::parse(&args.department)
        .map_err(|e| anyhow::anyhow!("invalid --department {:?}: {e}", args.department))?;
    if args.from > args.to {
        bail!(
            "--from {} is after --to {}: the range is empty",
            args.from,
            args.to
        );
    }
    let days = (args.to - args.from).num_days();
    if days > MAX_RANGE_DAYS {
        bail!(
            "range {}..{} spans {days} days; at most {MAX_RANGE_DAYS} days are allowed",
            args.from,
            args.to
        );
    }
    Ok(department)
}

/// Writes one line per day from `from` to `to` (inclusive).
pub fn write_calendar(
    out: &mut impl Write,
    calendar: &HolidayCalendar,
    policy: &CallingPolicy,
    department: &Department,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<()> {
    let place = Place::Department(department.clone());
    for date in from.iter_days().take_while(|date| *date <= to) {
        let line = format_day(department, &day_plan(calendar, policy, &place, date))?;
        writeln!(out, "{line}").context("writing to standard output")?;
    }
    Ok(())
}

pub fn run(args: CalendarArgs) -> anyhow::Result<()> {
    let department = parse_args(&args)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_calendar(
        &mut out,
        HolidayCalendar::built_in(),
        &CallingPolicy::legal_default(),
        &department,
        args.from,
        args.to,
    )?;
    out.flush().context("writing to standard output")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    fn lines(code: &str, from: &str, to: &str) -> Vec<String> {
        let dept = Department::parse(code).expect("department");
        let mut out = Vec::new();
        write_calendar(
            &mut out,
            HolidayCalendar::built_in(),
            &CallingPolicy::legal_default(),
            &dept,
            date(from),
            date(to),
        )
        .expect("lines");
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn args(department: &str, from: &str, to: &str) -> CalendarArgs {
        CalendarArgs {
            department: department.into(),
            from: date(from),
            to: date(to),
        }
    }

    #[test]
    fn guadeloupe_reference_lines() {
        assert_eq!(
            lines("971", "2027-05-27", "2027-05-29"),
            vec![
                r#"{"date":"2027-05-27","department":"971","territory":"GP","time_zone":"America/Guadeloupe","callable":false,"holiday":"Abolition de l'esclavage","windows":[]}"#,
                r#"{"date":"2027-05-28","department":"971","territory":"GP","time_zone":"America/Guadeloupe","callable":true,"holiday":null,"windows":[{"start":"2027-05-28T10:00:00-04:00","end":"2027-05-28T13:00:00-04:00"},{"start":"2027-05-28T14:00:00-04:00","end":"2027-05-28T20:00:00-04:00"}]}"#,
                r#"{"date":"2027-05-29","department":"971","territory":"GP","time_zone":"America/Guadeloupe","callable":false,"holiday":null,"windows":[]}"#,
            ]
        );
    }

    #[test]
    fn paris_dst_and_weekend_holiday() {
        let got = lines("75", "2027-03-26", "2027-03-30");
        assert_eq!(got.len(), 5);
        assert!(
            got[0].contains(r#""start":"2027-03-26T10:00:00+01:00""#),
            "{}",
            got[0]
        );
        assert!(
            got[2].contains(r#""callable":false,"holiday":null"#),
            "{}",
            got[2]
        );
        assert!(
            got[3].contains(r#""holiday":"Lundi de Pâques","windows":[]"#),
            "{}",
            got[3]
        );
        assert!(
            got[4].contains(r#""end":"2027-03-30T20:00:00+02:00""#),
            "{}",
            got[4]
        );
        let sunday = lines("75", "2027-08-15", "2027-08-15");
        assert!(
            sunday[0].contains(r#""callable":false,"holiday":"Assomption","windows":[]"#),
            "{}",
            sunday[0]
        );
        assert!(sunday[0].contains(r#""time_zone":"Europe/Paris""#));
        let moselle = lines("57", "2027-12-26", "2027-12-26");
        assert!(
            moselle[0].contains(r#""holiday":"Saint-Étienne""#),
            "{}",
            moselle[0]
        );
    }

    #[test]
    fn overseas_zone_names_and_offsets() {
        for (code, territory, zone, offset) in [
            ("972", "MQ", "America/Martinique", "-04:00"),
            ("973", "GF", "America/Cayenne", "-03:00"),
            ("974", "RE", "Indian/Reunion", "+04:00"),
            ("976", "YT", "Indian/Mayotte", "+03:00"),
            ("977", "BL", "America/St_Barthelemy", "-04:00"),
            ("978", "MF", "America/Marigot", "-04:00"),
            ("2a", "FR", "Europe/Paris", "+02:00"),
        ] {
            let line = &lines(code, "2027-06-15", "2027-06-15")[0];
            let value: serde_json::Value = serde_json::from_str(line).expect("json");
            assert_eq!(value["department"], code.to_uppercase());
            assert_eq!(value["territory"], territory);
            assert_eq!(value["time_zone"], zone);
            assert_eq!(
                value["windows"][0]["start"],
                format!("2027-06-15T10:00:00{offset}")
            );
        }
    }

    #[test]
    fn arguments_are_checked() {
        assert!(parse_args(&args("75", "2027-01-01", "2027-01-01")).is_ok());
        let err = parse_args(&args("20", "2027-01-01", "2027-01-02")).expect_err("bad dept");
        assert!(err.to_string().contains("--department"), "{err}");
        assert!(parse_args(&args("975", "2027-01-01", "2027-01-02")).is_err());
        let err = parse_args(&args("75", "2027-01-02", "2027-01-01")).expect_err("reversed");
        assert!(err.to_string().contains("after"), "{err}");
        assert!(parse_args(&args("75", "2020-01-01", "2030-01-08")).is_ok()); // 3660 days
        let err = parse_args(&args("75", "2020-01-01", "2030-01-09")).expect_err("too long");
        assert!(err.to_string().contains("3660"), "{err}");
    }
}
