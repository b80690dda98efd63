//! Wall-clock timestamps for logs, in UTC, without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds and milliseconds since the Unix epoch, now.
pub fn now_epoch() -> (u64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for `secs` since the epoch.
pub fn format_utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, now.
pub fn now_utc() -> String {
    format_utc(now_epoch().0)
}

/// `YYYYMMDDTHHMMSSZ` (the `X-Amz-Date` form) for `secs` since the epoch.
pub fn amz_date(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    // Digits only: `str::parse` would also take a sign (`2015+830T...`).
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), m, d);
    u64::try_from(days).ok().map(|days| days * 86_400 + u64::from(hh * 3600 + mm * 60 + ss))
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_305_600 + 3_723), "2026-11-22 01:02:03");
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        for secs in [0, 951_782_400, 1_440_938_160, 1_795_305_600 + 3_723] {
            assert_eq!(parse_amz_date(&amz_date(secs)), Some(secs));
        }
        for bad in ["", "20150830T123600", "2015083XT123600Z", "20151330T123600Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    /// Found by the sigv4 fuzz target: `u32::from_str` takes a leading `+`,
    /// so a sign inside a field was read as part of a number.
    #[test]
    fn amz_date_with_a_sign_in_a_field_is_refused() {
        for bad in ["2015+830T123600Z", "+0150830T123600Z", "20150830T+23600Z", "20150830T1236+0Z"] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
