//! Failed sign-ins, counted per account and per client address: past a limit within a window, further attempts
//! are refused (429 with `Retry-After`) without checking the password, for a backoff that doubles with each block.
//! Kept in memory per node: a guess costs the attacker a round trip to a node that remembers it, and a refusal
//! costs the node no password hashing (a flood cannot starve the others of CPU).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use orchestrator::domain::Millis;

/// Failures counted within this window.
const WINDOW_MS: Millis = 5 * 60_000;
/// Failures of one account before it is blocked (a person mistyping stays well below).
const ACCOUNT_LIMIT: u32 = 5;
/// Failures from one address before it is blocked: higher, since a proxy or an office shares one.
const ADDRESS_LIMIT: u32 = 30;
const FIRST_BLOCK_MS: Millis = 30_000;
const MAX_BLOCK_MS: Millis = 15 * 60_000;
/// Entries kept at most; the oldest go first (random account names must not grow memory without bound).
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(u64),
    Address(IpAddr),
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    window_start: Millis,
    failures: u32,
    blocks: u32,
    blocked_until: Millis,
    last_seen: Millis,
}

/// A refusal: how long to wait, and whether this attempt started the block (audited once, not every attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub retry_after_s: u64,
}

#[derive(Debug, Default)]
pub struct SignInThrottle {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Keyed with a per-process random key: the table never holds what was typed (sometimes a password).
    hasher: std::hash::RandomState,
}

impl SignInThrottle {
    fn account_key(&self, name: &str) -> Key {
        use std::hash::BuildHasher;
        Key::Account(self.hasher.hash_one(name.trim().to_lowercase()))
    }

    /// Whether an attempt for `name` from `addr` may check its password now.
    pub fn check(&self, name: &str, addr: Option<IpAddr>, now: Millis) -> Result<(), Blocked> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let keys = [Some(self.account_key(name)), addr.map(Key::Address)];
        let until = keys.iter().flatten().filter_map(|k| entries.get(k)).map(|e| e.blocked_until).max().unwrap_or(0);
        if until > now {
            return Err(Blocked { retry_after_s: (until - now).div_ceil(1000) });
        }
        Ok(())
    }

    /// Counts a failed attempt; `Some` when it starts a block (the caller audits that once).
    pub fn failed(&self, name: &str, addr: Option<IpAddr>, now: Millis) -> Option<Blocked> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_sub(e.last_seen) < WINDOW_MS || e.blocked_until > now);
            if entries.len() >= MAX_ENTRIES {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        let mut started = None;
        let keys = [(Some(self.account_key(name)), ACCOUNT_LIMIT), (addr.map(Key::Address), ADDRESS_LIMIT)];
        for (key, limit) in keys {
            let Some(key) = key else { continue };
            let e = entries.entry(key).or_default();
            if now.saturating_sub(e.window_start) >= WINDOW_MS {
                e.window_start = now;
                e.failures = 0;
            }
            e.failures += 1;
            e.last_seen = now;
            if e.failures >= limit && e.blocked_until <= now {
                let block = (FIRST_BLOCK_MS << e.blocks.min(10)).min(MAX_BLOCK_MS);
                e.blocks += 1;
                e.blocked_until = now + block;
                e.failures = 0;
                e.window_start = now;
                started = Some(Blocked { retry_after_s: block / 1000 });
            }
        }
        started
    }

    /// A successful sign-in clears its account's count (not its address's: one good password from a shared
    /// address must not reset the guesses of others).
    pub fn succeeded(&self, name: &str) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.account_key(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn an_account_is_blocked_after_five_failures_and_the_block_doubles() {
        let t = SignInThrottle::default();
        for n in 0..4 {
            assert_eq!(t.failed("Admin", IP, 1000 + n), None);
            assert!(t.check("admin", IP, 1000 + n).is_ok());
        }
        assert_eq!(t.failed(" admin ", IP, 2000), Some(Blocked { retry_after_s: 30 }), "names match as typed");
        assert_eq!(t.check("admin", None, 2000), Err(Blocked { retry_after_s: 30 }));
        assert!(t.check("olga", None, 2000).is_ok(), "another account from elsewhere is not affected");
        assert!(t.check("admin", IP, 32_000).is_ok(), "the block ends");
        for n in 0..4 {
            assert_eq!(t.failed("admin", IP, 33_000 + n), None);
        }
        assert_eq!(t.failed("admin", IP, 34_000), Some(Blocked { retry_after_s: 60 }), "the second block is longer");
    }

    #[test]
    fn an_address_is_blocked_after_thirty_failures_over_any_names_and_success_clears_only_the_account() {
        let t = SignInThrottle::default();
        for n in 0..29 {
            assert_eq!(t.failed(&format!("user{n}"), IP, 1000), None);
        }
        assert!(t.failed("user29", IP, 1000).is_some());
        assert!(t.check("anyone", IP, 1001).is_err());
        assert!(t.check("anyone", None, 1001).is_ok());
        t.succeeded("anyone");
        assert!(t.check("anyone", IP, 1001).is_err(), "the address stays blocked");
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up_and_memory_is_bounded() {
        let t = SignInThrottle::default();
        for n in 0..10 {
            assert_eq!(t.failed("admin", None, n * WINDOW_MS / 2), None, "at most two failures per window");
        }
        for n in 0..(MAX_ENTRIES as u64 + 50) {
            t.failed(&format!("random-{n}"), None, 10 * WINDOW_MS);
        }
        assert!(t.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
