//! UTC instants as a policy writes them: RFC 3339 with a `Z`, to milliseconds since the epoch.
//!
//! The policy schedules surge windows around broadcasts, so a person writes the times and must
//! be able to read them back; the pure core compares milliseconds (time is an input, never read
//! from a clock). Only the UTC form is taken (`2026-03-14T20:15:00Z`, optionally with 1-3
//! fractional digits): an offset such as `+01:00` is refused rather than converted, so a window
//! in the policy is exactly what it says.

/// Milliseconds since 1970-01-01T00:00:00Z of `text`, or why it is not such a time.
pub fn parse_ms(text: &str) -> Result<u64, String> {
    let bytes = text.as_bytes();
    let Some(rest) = text.strip_suffix('Z') else {
        return Err("must end in Z (UTC); offsets are not taken".into());
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return Err("must look like 2026-03-14T20:15:00Z".into());
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return Err("must look like 2026-03-14T20:15:00Z".into());
    }
    let number = |from: usize, to: usize| -> Result<u64, String> {
        let digits = rest.get(from..to).unwrap_or_default();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must look like 2026-03-14T20:15:00Z".into());
        }
        digits.parse().map_err(|_| "number out of range".to_owned())
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let millis = match rest.get(19..) {
        Some("") => 0,
        Some(fraction) if fraction.len() >= 2 && fraction.len() <= 4 => {
            let digits = fraction.strip_prefix('.').unwrap_or_default();
            let value = number(20, 19 + fraction.len())?;
            // .5 is 500 ms, .05 is 50 ms.
            value * 10u64.pow(3 - digits.len() as u32)
        }
        _ => return Err("at most 3 fractional digits (milliseconds)".into()),
    };
    if year < 1970 {
        return Err("years before 1970 are not taken".into());
    }
    if !(1..=12).contains(&month) {
        return Err("no such month (01 to 12)".into());
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("no such day in that month".into());
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range (00:00:00 to 23:59:59)".into());
    }
    let days = days_from_civil(year, month, day);
    Ok((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis)
}

/// `ms` as `2026-03-14T20:15:00.000Z`, for messages and tests.
pub fn format_ms(ms: u64) -> String {
    let (days, of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (of_day / 3_600_000, of_day / 60_000 % 60);
    let (second, millis) = (of_day / 1000 % 60, of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

fn is_leap(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date from 1970 on (H. Hinnant's algorithm, with March as the first
/// month of the computational year so the leap day comes last).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (year / 400, year % 400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_ms("2000-03-01T00:00:00Z"), Ok(951_868_800_000));
        // `date -u -d 2026-03-14T20:15:00Z +%s` = 1773519300
        assert_eq!(parse_ms("2026-03-14T20:15:00Z"), Ok(1_773_519_300_000));
        assert_eq!(parse_ms("2026-03-14T20:15:00.5Z"), Ok(1_773_519_300_500));
        assert_eq!(parse_ms("2026-03-14T20:15:00.05Z"), Ok(1_773_519_300_050));
        assert_eq!(parse_ms("2026-03-14T20:15:00.123Z"), Ok(1_773_519_300_123));
        assert_eq!(parse_ms("2024-02-29T23:59:59Z"), Ok(1_709_251_199_000));
        assert_eq!(format_ms(1_773_519_300_123), "2026-03-14T20:15:00.123Z");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (text, why) in [
            ("2026-03-14T20:15:00+01:00", "must end in Z"),
            ("2026-03-14 20:15:00Z", "must look like"),
            ("2026-3-14T20:15:00Z", "must look like"),
            ("2026-03-14T20:15Z", "must look like"),
            ("2026-13-01T00:00:00Z", "no such month"),
            ("2025-02-29T00:00:00Z", "no such day in that month"),
            ("2026-04-31T00:00:00Z", "no such day in that month"),
            ("1900-02-29T00:00:00Z", "before 1970"),
            ("2026-03-14T24:00:00Z", "time of day"),
            ("2026-03-14T23:59:60Z", "time of day"),
            ("2026-03-14T20:15:00.1234Z", "at most 3"),
            ("2026-03-14T20:15:00.Z", "at most 3"),
            ("2026-03-14T20:15:00.x1Z", "must look like"),
            ("+026-03-14T20:15:00Z", "must look like"),
            ("", "must end in Z"),
            ("Z", "must look like"),
        ] {
            let error = parse_ms(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every millisecond from 1970 to 9999 reads back as itself.
        #[test]
        fn formatting_and_parsing_round_trip(ms in 0u64..253_402_300_800_000) {
            prop_assert_eq!(parse_ms(&format_ms(ms)), Ok(ms));
        }
    }
}
