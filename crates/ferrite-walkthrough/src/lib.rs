//! The walkthrough's apps: `ferrite-ping` and `ferrite-weather`.
//!
//! Kept tiny on purpose: they stand for "an image that knows nothing of
//! the cluster". The weather app finds redis the way a linked container
//! does, through Docker's link variables (`REDIS_PORT=tcp://ip:port`), and
//! speaks just enough of the redis protocol ([`resp`]) to cache a reading.

pub mod resp;

/// Where a linked `redis` is, from Docker's link variables:
/// `REDIS_PORT=tcp://ip:port`, or `REDIS_PORT_6379_TCP_ADDR` and
/// `REDIS_PORT_6379_TCP_PORT`.
pub fn redis_from_link(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(url) = env("REDIS_PORT") {
        if let Some(addr) = url.strip_prefix("tcp://") {
            return Some(addr.to_owned());
        }
    }
    Some(format!("{}:{}", env("REDIS_PORT_6379_TCP_ADDR")?, env("REDIS_PORT_6379_TCP_PORT")?))
}

/// A made-up current-weather reading for a moment (seconds since the
/// epoch): no internet, but a value that changes over time like a real one.
pub fn generated_reading(at_secs: u64) -> String {
    let minute = at_secs / 60;
    let tenths = 50 + (minute * 37 % 250) as i64; // 5.0 to 29.9 degrees
    let wind = 3 + minute * 11 % 40;
    format!("Ferrite City: {}.{} C, wind {wind} km/h", tenths / 10, tenths % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_variables_give_the_address() {
        let env = |k: &str| match k {
            "REDIS_PORT" => Some("tcp://172.17.0.5:6379".to_owned()),
            _ => None,
        };
        assert_eq!(redis_from_link(env).as_deref(), Some("172.17.0.5:6379"));
        let env = |k: &str| match k {
            "REDIS_PORT_6379_TCP_ADDR" => Some("10.1.1.1".to_owned()),
            "REDIS_PORT_6379_TCP_PORT" => Some("10000".to_owned()),
            _ => None,
        };
        assert_eq!(redis_from_link(env).as_deref(), Some("10.1.1.1:10000"));
        assert_eq!(redis_from_link(|_| None), None);
    }

    #[test]
    fn readings_change_by_the_minute() {
        assert_eq!(generated_reading(0), generated_reading(59));
        assert_ne!(generated_reading(0), generated_reading(60));
        assert!(generated_reading(0).starts_with("Ferrite City: "));
    }
}
