//! What the token-minting subcommands (`approve`, `grant`, `release`) share: durations, the issue
//! time, and fresh nonces.

use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore as _};

/// Parse `90s`, `15m`, `1h`, `2d` or plain seconds.
pub(crate) fn parse_duration_s(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// The issue time: `issued_at` when given (reproducible tests), else now in unix seconds.
pub(crate) fn issue_time(issued_at: Option<u64>) -> u64 {
    issued_at.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// 16 bytes from the operating system's random source (a token id), or the exit code after
/// saying why there are none.
pub(crate) fn fresh_nonce() -> Result<[u8; 16], i32> {
    let mut nonce = [0u8; 16];
    OsRng.try_fill_bytes(&mut nonce).map_err(|e| {
        eprintln!("error: no randomness from the operating system: {e}");
        super::EXIT_USAGE
    })?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("15m"), Some(900));
        assert_eq!(parse_duration_s("90"), Some(90));
        assert_eq!(parse_duration_s("2h"), Some(7200));
        assert_eq!(parse_duration_s("1d"), Some(86_400));
        assert_eq!(parse_duration_s("m"), None);
        assert_eq!(parse_duration_s("5w"), None);
        assert_eq!(parse_duration_s("-5s"), None);
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(fresh_nonce(), fresh_nonce());
        assert_eq!(issue_time(Some(7)), 7);
        assert!(issue_time(None) > 1_700_000_000);
    }
}
